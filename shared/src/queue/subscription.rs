//! Reading a durable queue whose messages are acknowledged: one subscription per broker session,
//! typed by the message it carries, and deliveries that are acked, requeued or dead-lettered —
//! each failure of those logged once, naming what the message is about.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use tokio_util::sync::CancellationToken;

use super::outgoing::traceparent_of;
use super::{Broker, Session, Versioned};
use crate::domain::{JobId, TraceParent};

/// A message handed over by a queue whose deliveries are acknowledged: it says what it is about,
/// so a failed acknowledgement can be traced to its job or delivery.
pub trait Acknowledged: Versioned {
    fn subject(&self) -> Subject;
}

/// What a delivered message is about, as its log lines name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Job(JobId),
    WebhookDelivery(uuid::Uuid),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Job(id) => write!(f, "job {id}"),
            Self::WebhookDelivery(id) => write!(f, "webhook delivery {id}"),
        }
    }
}

/// A consumer of one queue on one broker session, handing out deliveries of `M`.
pub struct Subscription<M> {
    // The consumer lives as long as its channel.
    _channel: Channel,
    consumer: Consumer,
    queue: Arc<str>,
    message: PhantomData<fn() -> M>,
}

impl<M: Acknowledged> Subscription<M> {
    /// Waits for a broker session and subscribes to `queue` on a fresh channel with at most
    /// `prefetch` deliveries unacknowledged; `None` once `shutdown` begins.
    pub async fn open(
        broker: &Broker,
        queue: &str,
        prefetch: u16,
        shutdown: &CancellationToken,
    ) -> Option<Self> {
        let mut sessions = broker.watch();
        loop {
            if let Some(session) = broker.session() {
                match Self::on(&session, queue, prefetch).await {
                    Ok(subscription) => return Some(subscription),
                    Err(error) => {
                        tracing::warn!(%error, queue, "cannot subscribe; waiting for the broker");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                changed = sessions.changed() => if changed.is_err() { return None },
                // A session that died without the supervisor noticing yet is retried shortly.
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn on(session: &Session, queue: &str, prefetch: u16) -> lapin::Result<Self> {
        let channel = session.channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            _channel: channel,
            consumer,
            queue: queue.into(),
            message: PhantomData,
        })
    }

    /// The next delivery; `None` once the subscription has ended (its session was lost or its
    /// consumer failed): open a new one.
    pub async fn next(&mut self) -> Option<Delivery<M>> {
        match self.consumer.next().await? {
            Ok(inner) => Some(Delivery {
                message: M::decode(&inner.data),
                inner,
                queue: self.queue.clone(),
            }),
            Err(error) => {
                tracing::warn!(%error, queue = &*self.queue, "consumer failed; resubscribing");
                None
            }
        }
    }
}

/// One delivered message, to be acked, requeued or dead-lettered once its outcome is settled.
/// Left unsettled, it is delivered again when its channel closes.
pub struct Delivery<M> {
    inner: lapin::message::Delivery,
    /// `None` for a message this build cannot read (a poison message, or another version's).
    message: Option<M>,
    queue: Arc<str>,
}

impl<M: Acknowledged> Delivery<M> {
    /// The message, if this build can read it.
    pub fn message(&self) -> Option<&M> {
        self.message.as_ref()
    }

    /// Whether the broker delivered it before (to this or another consumer).
    pub fn redelivered(&self) -> bool {
        self.inner.redelivered
    }

    /// The trace the message carries, if it carries a valid one.
    pub fn traceparent(&self) -> Option<TraceParent> {
        traceparent_of(&self.inner.properties)
    }

    /// Done with: the broker forgets it.
    pub async fn ack(&self) {
        let acked = self.inner.acker.ack(BasicAckOptions::default()).await;
        self.settled("ack", acked);
    }

    /// Put back at the queue's head, counting towards the queue's delivery limit (a message that
    /// is requeued every time ends in the dead-letter queue).
    pub async fn requeue(&self) {
        let requeue = BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        let requeued = self.inner.acker.nack(requeue).await;
        self.settled("requeue", requeued);
    }

    /// Sent to the queue's dead-letter exchange at once.
    pub async fn dead_letter(&self) {
        let rejected = self
            .inner
            .acker
            .reject(BasicRejectOptions { requeue: false })
            .await;
        self.settled("dead-letter", rejected);
    }

    fn settled(&self, what: &str, outcome: lapin::Result<bool>) {
        if let Err(error) = outcome {
            let subject = self.message.as_ref().map(Acknowledged::subject);
            let about =
                subject.map_or_else(|| "an unreadable message".to_owned(), |s| s.to_string());
            tracing::warn!(
                %error,
                queue = &*self.queue,
                %about,
                "{what} failed; the message is delivered again when its channel closes"
            );
        }
    }
}
