//! A supervised RabbitMQ connection shared by a process.
//!
//! [`Broker::supervise`] keeps one connection alive: it connects with exponential backoff, declares
//! the topology, opens a publisher-confirm channel and publishes the live [`Session`] on a watch
//! channel; when the connection drops it withdraws the session and starts over. Publishers read the
//! current session; consumers watch for a new one and re-subscribe. `None` means "broker down",
//! which is what `/readyz` reports.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use futures::future::try_join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::outgoing::{Outgoing, Work};
use super::topology::{
    BULK_ROUTING_KEY, JOB_ROUTING_KEY, WEBHOOK_ROUTING_KEY, bulk_wait_key, wait_bucket, wait_key,
    webhook_wait_bucket,
};
use super::{CancelMessage, JobEvent, StreamMessage, Topology, Versioned as _, WebhookMessage};
use crate::domain::{JobId, TraceParent};
use uuid::Uuid;

/// How often the supervisor checks that the connection is still up.
const HEALTH_CHECK_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the message broker is not connected")]
    Disconnected,
    #[error("the message broker refused the message")]
    Nacked,
    #[error("the message could not be routed to a queue")]
    Unroutable,
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
}

/// One live connection, its publisher-confirm channel, and a channel for job events (which are
/// hints, published without confirms: a lost one costs a watcher a re-read, never an outcome).
#[derive(Clone)]
pub struct Session {
    connection: Arc<Connection>,
    publisher: Channel,
    events: Channel,
}

impl Session {
    /// A new channel on this connection, e.g. for a consumer.
    pub async fn channel(&self) -> lapin::Result<Channel> {
        self.connection.create_channel().await
    }

    fn is_alive(&self) -> bool {
        self.connection.status().connected()
            && self.publisher.status().connected()
            && self.events.status().connected()
    }
}

#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    name: String,
    topology: Topology,
    session: watch::Sender<Option<Session>>,
}

impl Broker {
    /// A broker handle; nothing connects until [`Broker::supervise`] runs. `name` labels the
    /// connection in RabbitMQ's management UI.
    pub fn new(url: impl Into<String>, topology: Topology, name: impl Into<String>) -> Self {
        let (session, _) = watch::channel(None);
        Self {
            inner: Arc::new(Inner {
                url: url.into(),
                name: name.into(),
                topology,
                session,
            }),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// The live session, if connected.
    pub fn session(&self) -> Option<Session> {
        self.inner
            .session
            .borrow()
            .clone()
            .filter(Session::is_alive)
    }

    pub fn is_connected(&self) -> bool {
        self.session().is_some()
    }

    /// Notified whenever a session comes or goes.
    pub fn watch(&self) -> watch::Receiver<Option<Session>> {
        self.inner.session.subscribe()
    }

    /// Waits until connected, or gives up after `timeout`.
    pub async fn connected(&self, timeout: Duration) -> Option<Session> {
        let mut watch = self.watch();
        let wait = watch.wait_for(|s| s.as_ref().is_some_and(Session::is_alive));
        tokio::time::timeout(timeout, wait)
            .await
            .ok()?
            .ok()?
            .clone()
    }

    /// Keeps the connection alive until `shutdown`, then closes it.
    pub async fn supervise(self, shutdown: CancellationToken) {
        let mut backoff = reconnect_backoff();
        loop {
            let attempt = tokio::select! {
                () = shutdown.cancelled() => break,
                attempt = self.open_session() => attempt,
            };
            let session = match attempt {
                Ok(session) => session,
                Err(error) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(1));
                    tracing::warn!(%error, retry_in = ?delay, "cannot reach the message broker");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            backoff = reconnect_backoff();
            tracing::info!(connection = %self.inner.name, "connected to the message broker");
            self.inner.session.send_replace(Some(session.clone()));

            let mut tick = tokio::time::interval(HEALTH_CHECK_EVERY);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => {
                        self.inner.session.send_replace(None);
                        let _ = session.connection.close(200, "shutting down".into()).await;
                        return;
                    }
                    _ = tick.tick() => if !session.is_alive() { break },
                }
            }
            tracing::warn!(connection = %self.inner.name, "lost the message broker; reconnecting");
            self.inner.session.send_replace(None);
            let _ = session.connection.close(320, "reconnecting".into()).await;
        }
        self.inner.session.send_replace(None);
    }

    async fn open_session(&self) -> lapin::Result<Session> {
        let properties =
            ConnectionProperties::default().with_connection_name(self.inner.name.clone().into());
        let connection = Connection::connect(&self.inner.url, properties).await?;
        let publisher = connection.create_channel().await?;
        self.inner.topology.declare(&publisher).await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let events = connection.create_channel().await?;
        Ok(Session {
            connection: Arc::new(connection),
            publisher,
            events,
        })
    }

    /// Publishes one job message and waits for the broker's confirm.
    ///
    /// Concurrent callers share the channel, so their confirms are pipelined: each request waits for
    /// its own confirm, but the channel is never stalled on one round trip.
    /// With `trace`, the message carries it as its `traceparent` header, so the worker continues
    /// the trace the job was accepted in.
    pub async fn publish_job(
        &self,
        id: JobId,
        trace: Option<&TraceParent>,
    ) -> Result<(), PublishError> {
        self.publish_jobs(&[Work::new(id, trace.copied())]).await
    }

    /// Publishes many job messages, then awaits all their confirms as one window.
    pub async fn publish_jobs(&self, jobs: &[Work]) -> Result<(), PublishError> {
        self.publish_work(JOB_ROUTING_KEY, jobs).await
    }

    /// Publishes batch items to the bulk queue, awaiting their confirms as one window.
    pub async fn publish_bulk(&self, items: &[Work]) -> Result<(), PublishError> {
        self.publish_work(BULK_ROUTING_KEY, items).await
    }

    async fn publish_work(&self, key: &str, work: &[Work]) -> Result<(), PublishError> {
        let exchange = self.inner.topology.jobs_exchange();
        let messages = work.iter().map(Work::message).collect();
        self.publish(&exchange, key, messages, None).await
    }

    /// Publishes a job message to the wait queue of `delay` (rounded up to a bucket, see
    /// [`wait_bucket`]); when it expires there it reaches the work queue it came from: the bulk
    /// queue for a batch's item. The message keeps its trace on the way.
    pub async fn publish_delayed(
        &self,
        job: Work,
        delay: Duration,
        bulk: bool,
    ) -> Result<(), PublishError> {
        let exchange = self.inner.topology.wait_exchange();
        let bucket = wait_bucket(delay);
        let key = if bulk {
            bulk_wait_key(bucket)
        } else {
            wait_key(bucket)
        };
        self.publish(&exchange, &key, vec![job.message()], None)
            .await
    }

    /// Publishes webhook delivery messages for the deliverer, awaiting their confirms.
    pub async fn publish_webhooks(&self, ids: &[Uuid]) -> Result<(), PublishError> {
        let exchange = self.inner.topology.webhooks_exchange();
        let messages = ids
            .iter()
            .map(|id| Outgoing::untraced(id.to_string(), WebhookMessage::new(*id).encode()))
            .collect();
        self.publish(&exchange, WEBHOOK_ROUTING_KEY, messages, None)
            .await
    }

    /// Publishes a webhook delivery message that reaches the deliverer after `delay` (it waits in
    /// the wait queue of its magnitude, see [`webhook_wait_bucket`]).
    pub async fn publish_webhook_delayed(
        &self,
        id: Uuid,
        delay: Duration,
    ) -> Result<(), PublishError> {
        let exchange = self.inner.topology.webhook_wait_exchange();
        let key = wait_key(webhook_wait_bucket(delay));
        let message = Outgoing::untraced(id.to_string(), WebhookMessage::new(id).encode());
        self.publish(&exchange, &key, vec![message], Some(delay))
            .await
    }

    /// Tells every api instance watching the job that it changed. Best effort: no confirm is
    /// awaited and a failure is only logged (watchers re-read the job on their own schedule too).
    pub async fn publish_event(&self, event: JobEvent) {
        let exchange = self.inner.topology.events_exchange();
        let key = JobEvent::routing_key(event.job_id);
        self.publish_hint(&exchange, &key, &event.encode()).await;
    }

    /// Sends a piece of a streaming job's text (or its end) to the api instances following it
    /// (`stream_to`: the instance holding its client), on the events channel (in order, no
    /// confirm: a follower notices a lost piece by its `seq`).
    pub async fn publish_stream(&self, stream_to: Option<&str>, message: &StreamMessage) {
        let exchange = self.inner.topology.streams_exchange();
        let key = StreamMessage::routing_key(stream_to, message.job_id);
        self.publish_hint(&exchange, &key, &message.encode()).await;
    }

    /// Tells every worker that job `id` was cancelled while running. Best effort: a worker also
    /// sees the request when it next renews the job's lease.
    pub async fn publish_cancel(&self, id: JobId) {
        let exchange = self.inner.topology.control_exchange();
        self.publish_hint(&exchange, "", &CancelMessage::new(id).encode())
            .await;
    }

    /// How many messages wait in each queue, ready for a consumer (unacked ones are not counted),
    /// by the queue's name without the prefix. Asked by passive declares on a channel of its own.
    pub async fn queue_depths(&self) -> Result<Vec<(String, u32)>, PublishError> {
        let session = self.session().ok_or(PublishError::Disconnected)?;
        let channel = session.channel().await?;
        let mut depths = Vec::new();
        for (label, name) in self.inner.topology.queues() {
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            let queue = channel
                .queue_declare(name.into(), options, FieldTable::default())
                .await?;
            depths.push((label, queue.message_count()));
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(depths)
    }

    /// Publishes a hint on the events channel: no confirm awaited, a failure only logged.
    async fn publish_hint(&self, exchange: &str, routing_key: &str, body: &[u8]) {
        let Some(session) = self.session() else {
            return;
        };
        let published = session
            .events
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await;
        if let Err(error) = published {
            tracing::debug!(%error, exchange, "hint not published");
        }
    }

    /// Publishes messages, then awaits all their confirms as one window. With `expiration`, each
    /// message expires (is dead-lettered onwards) after that long in a queue. A message with a
    /// trace carries it in its `traceparent` header.
    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        messages: Vec<Outgoing>,
        expiration: Option<Duration>,
    ) -> Result<(), PublishError> {
        let session = self.session().ok_or(PublishError::Disconnected)?;
        let exchange = ShortString::from(exchange);
        let routing_key = ShortString::from(routing_key);
        let mut confirms = Vec::with_capacity(messages.len());
        for Outgoing { id, body, trace } in messages {
            let mut properties = BasicProperties::default()
                .with_delivery_mode(2) // persistent
                .with_content_type("application/json".into())
                .with_message_id(id.into());
            if let Some(trace) = trace {
                let mut headers = FieldTable::default();
                headers.insert(
                    TraceParent::HEADER.into(),
                    AMQPValue::LongString(trace.to_string().into()),
                );
                properties = properties.with_headers(headers);
            }
            if let Some(expiration) = expiration {
                properties = properties.with_expiration(expiration.as_millis().to_string().into());
            }
            let confirm = session
                .publisher
                .basic_publish(
                    exchange.clone(),
                    routing_key.clone(),
                    // mandatory: an unroutable message (queue missing) comes back instead of vanishing
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    properties,
                )
                .await?;
            confirms.push(confirm);
        }
        for confirmation in try_join_all(confirms).await? {
            match confirmation {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_)) => return Err(PublishError::Unroutable),
                Confirmation::Nack(_) => return Err(PublishError::Nacked),
                // The channel is put in confirm mode before the session is published.
                Confirmation::NotRequested => return Err(PublishError::Nacked),
            }
        }
        Ok(())
    }
}

/// 100 ms doubling to 500 ms, each with up to as much again of jitter so a fleet does not
/// reconnect in lockstep: never more than a second between tries, so work resumes within about a
/// second of the broker's return however long it was gone (a try against a broker that is down is
/// a refused connection: cheap for both).
fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_millis(500))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnecting_never_waits_more_than_a_second_however_long_the_outage() {
        let waits: Vec<Duration> = reconnect_backoff().take(200).collect();
        assert_eq!(waits.len(), 200, "it never gives up");
        assert!(
            waits.iter().all(|w| *w <= Duration::from_secs(1)),
            "{waits:?}"
        );
        assert!(waits[0] >= Duration::from_millis(100));
    }
}
