//! Hint queues: what an api instance or a worker hears only while it is connected (job events,
//! streamed text, cancels). Each is a server-named queue, exclusive to the connection and deleted
//! with it, consumed without acks: a hint lost with a connection is made up for by re-reading
//! Postgres, never by the broker keeping it.

use std::future::Future;
use std::time::Duration;

use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Consumer};
use tokio_util::sync::CancellationToken;

use super::{Broker, Session};

/// A hint queue of one session: its channel (to bind more keys), its name, and its consumer.
pub struct HintQueue {
    pub channel: Channel,
    pub name: ShortString,
    pub consumer: Consumer,
}

impl HintQueue {
    /// Declares the queue on a new channel of `session` with `arguments` (bounds), binds it to
    /// `exchange` under each of `keys`, and consumes it.
    pub async fn declare(
        session: &Session,
        exchange: &str,
        keys: &[&str],
        arguments: FieldTable,
    ) -> lapin::Result<Self> {
        let channel = session.channel().await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                arguments,
            )
            .await?;
        let name = queue.name().clone();
        for key in keys {
            channel
                .queue_bind(
                    name.clone(),
                    exchange.into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let consumer = channel
            .basic_consume(
                name.clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            channel,
            name,
            consumer,
        })
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
