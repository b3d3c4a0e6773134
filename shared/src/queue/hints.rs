//! Hint queues: what an api instance or a worker hears only while it is connected (job events,
//! streamed text, cancels). Each is a server-named queue, exclusive to the connection and deleted
//! with it, consumed without acks: a hint lost with a connection is made up for by re-reading
//! Postgres, never by the broker keeping it.

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Consumer};
use tokio_util::sync::CancellationToken;

use super::{Broker, Session, Versioned};

/// A hint queue could not be declared, bound or unbound (the broker is away, or refused).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct HintError(#[from] lapin::Error);

/// How much a hint queue holds before it drops its oldest hints (`None`: no bound of that kind).
#[derive(Debug, Clone, Copy, Default)]
pub struct HintBounds {
    pub max_length: Option<i64>,
    pub message_ttl: Option<Duration>,
}

impl HintBounds {
    fn arguments(self) -> FieldTable {
        let mut arguments = FieldTable::default();
        if let Some(length) = self.max_length {
            arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(length));
        }
        if let Some(ttl) = self.message_ttl {
            let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
            arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(millis));
        }
        arguments
    }
}

/// A hint queue of one session, handing out the messages of `M` it hears.
pub struct HintQueue<M> {
    binding: HintBinding,
    consumer: Consumer,
    message: PhantomData<fn() -> M>,
}

/// Binds more routing keys to a hint queue (or unbinds them) while its hints are being read.
#[derive(Clone)]
pub struct HintBinding {
    channel: Channel,
    queue: ShortString,
    exchange: String,
}

impl<M: Versioned> HintQueue<M> {
    /// Declares the queue on a new channel of `session` within `bounds`, binds it to `exchange`
    /// under each of `keys`, and consumes it.
    pub async fn declare(
        session: &Session,
        exchange: &str,
        keys: &[&str],
        bounds: HintBounds,
    ) -> Result<Self, HintError> {
        let channel = session.channel().await?;
        let declare = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let queue = channel
            .queue_declare("".into(), declare, bounds.arguments())
            .await?;
        let binding = HintBinding {
            channel,
            queue: queue.name().clone(),
            exchange: exchange.to_owned(),
        };
        for key in keys {
            binding.bind(key).await?;
        }
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let consumer = binding
            .channel
            .basic_consume(
                binding.queue.clone(),
                "".into(),
                no_ack,
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            binding,
            consumer,
            message: PhantomData,
        })
    }

    /// What binds more keys to this queue.
    pub fn binding(&self) -> HintBinding {
        self.binding.clone()
    }

    /// The next hint this build can read; `None` once the session has ended. Hints it cannot
    /// read (another version's) are passed over.
    pub async fn next(&mut self) -> Option<M> {
        while let Some(Ok(delivery)) = self.consumer.next().await {
            if let Some(message) = M::decode(&delivery.data) {
                return Some(message);
            }
        }
        None
    }
}

impl HintBinding {
    /// Hears, from now on, what the exchange routes under `key`.
    pub async fn bind(&self, key: &str) -> Result<(), HintError> {
        self.channel
            .queue_bind(
                self.queue.clone(),
                self.exchange.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Stops hearing what the exchange routes under `key`.
    pub async fn unbind(&self, key: &str) -> Result<(), HintError> {
        self.channel
            .queue_unbind(
                self.queue.clone(),
                self.exchange.as_str().into(),
                key.into(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }
}

impl Broker {
    /// Runs `follow` once per broker session until `shutdown`: it starts when a session is up
    /// and is dropped when shutdown begins; when it returns (its session ended, or it failed), the
    /// next session gets a new run, at most once a second.
    pub async fn each_session<F, Fut>(&self, shutdown: &CancellationToken, mut follow: F)
    where
        F: FnMut(Session) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut sessions = self.watch();
        loop {
            if let Some(session) = self.session() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = follow(session) => {}
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = sessions.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
