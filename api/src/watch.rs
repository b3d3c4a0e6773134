//! Watching jobs from this api instance: SSE streams and submit-and-wait learn that a job changed
//! from job events that workers (and other api instances) publish to RabbitMQ.
//!
//! The instance has one exclusive queue per broker session, bound to the events exchange only for
//! the jobs someone here is watching (`job.<id>`), so it receives no traffic for the rest. A watch
//! is bound before the caller reads the job from Postgres: whatever happens after that read
//! arrives as an event, so nothing falls between the read and the subscription. Events are hints
//! (`Signal`): watchers always read the job itself; after a reconnect, when events may have been
//! missed, every watcher is told to read again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use shared::domain::JobId;
use shared::queue::{Broker, JobEvent, Session};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Longest a bind or unbind may take before the watch goes on without it (the watcher still
/// re-reads the job on its own schedule).
const BIND_TIMEOUT: Duration = Duration::from_secs(2);
/// Events buffered per job for a slow watcher; one that falls further behind re-reads the job.
const BUFFER: usize = 16;

/// What a watcher hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Changed(JobEvent),
    /// Events may have been missed (the broker connection was re-made): read the job again.
    Reread,
}

#[derive(Clone)]
pub struct Watchers {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Broker,
    jobs: Mutex<HashMap<JobId, Watched>>,
    /// The current session's queue; held while binding so binds, unbinds and re-subscribing after
    /// a reconnect happen one at a time.
    bound: tokio::sync::Mutex<Option<Bound>>,
}

struct Watched {
    signals: broadcast::Sender<Signal>,
    watchers: usize,
}

struct Bound {
    channel: Channel,
    queue: String,
}

/// One watcher of one job; dropping it stops the watch (and unbinds when it was the last).
pub struct Watch {
    id: JobId,
    signals: broadcast::Receiver<Signal>,
    inner: Arc<Inner>,
}

impl Watch {
    /// The next signal; a watcher that fell behind, or a closed channel, gets `Reread`.
    pub async fn next(&mut self) -> Signal {
        match self.signals.recv().await {
            Ok(signal) => signal,
            Err(broadcast::error::RecvError::Lagged(_)) => Signal::Reread,
            Err(broadcast::error::RecvError::Closed) => {
                // Cannot happen while this watch holds its entry; wait rather than spin.
                std::future::pending().await
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let (inner, id) = (self.inner.clone(), self.id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { inner.unwatch(id).await });
        }
    }
}

impl Watchers {
    /// Starts following the broker: one subscription per session, until `shutdown`.
    pub fn start(
        broker: Broker,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let inner = Arc::new(Inner {
            broker,
            jobs: Mutex::new(HashMap::new()),
            bound: tokio::sync::Mutex::new(None),
        });
        let task = tokio::spawn(inner.clone().follow(shutdown));
        (Self { inner }, task)
    }

    /// Watches job `id`; once this returns, every later change of the job is signalled.
    pub async fn watch(&self, id: JobId) -> Watch {
        let bound = self.inner.bound.lock().await;
        let (signals, first) = {
            let mut jobs = self.inner.jobs.lock().expect("watch table lock");
            let watched = jobs.entry(id).or_insert_with(|| Watched {
                signals: broadcast::channel(BUFFER).0,
                watchers: 0,
            });
            watched.watchers += 1;
            (watched.signals.subscribe(), watched.watchers == 1)
        };
        if first && let Some(bound) = bound.as_ref() {
            bind(bound, id, &self.inner.broker).await;
        }
        Watch {
            id,
            signals,
            inner: self.inner.clone(),
        }
    }
}

impl Inner {
    async fn unwatch(&self, id: JobId) {
        let bound = self.bound.lock().await;
        let last = {
            let mut jobs = self.jobs.lock().expect("watch table lock");
            match jobs.get_mut(&id) {
                Some(watched) if watched.watchers > 1 => {
                    watched.watchers -= 1;
                    false
                }
                Some(_) => {
                    jobs.remove(&id);
                    true
                }
                None => false,
            }
        };
        if last && let Some(bound) = bound.as_ref() {
            let key = JobEvent::routing_key(id);
            let unbind = bound.channel.queue_unbind(
                bound.queue.as_str().into(),
                self.broker.topology().events_exchange().into(),
                key.into(),
                FieldTable::default(),
            );
            if !matches!(tokio::time::timeout(BIND_TIMEOUT, unbind).await, Ok(Ok(()))) {
                tracing::debug!(job_id = %id, "cannot unbind a job's events");
            }
        }
    }

    /// One subscription per broker session: declare the queue, bind every watched job, tell
    /// watchers to re-read (events of the gap are lost), then dispatch events until the session ends.
    async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let mut sessions = self.broker.watch();
        loop {
            if let Some(session) = self.broker.session() {
                match self.subscribe(&session).await {
                    Ok(consumer) => {
                        self.broadcast(Signal::Reread);
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = self.dispatch(consumer) => {}
                        }
                        *self.bound.lock().await = None;
                    }
                    Err(error) => tracing::warn!(%error, "cannot subscribe to job events"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = sessions.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn subscribe(&self, session: &Session) -> lapin::Result<Consumer> {
        let mut bound = self.bound.lock().await;
        let channel = session.channel().await?;
        // Server-named, exclusive and auto-deleted: it lives and dies with this connection.
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let new = Bound {
            channel,
            queue: queue.name().to_string(),
        };
        let watched: Vec<JobId> = self
            .jobs
            .lock()
            .expect("watch table lock")
            .keys()
            .copied()
            .collect();
        for id in watched {
            bind(&new, id, &self.broker).await;
        }
        *bound = Some(new);
        Ok(consumer)
    }

    async fn dispatch(&self, mut consumer: Consumer) {
        while let Some(Ok(delivery)) = consumer.next().await {
            let Some(event) = JobEvent::decode(&delivery.data) else {
                continue;
            };
            let jobs = self.jobs.lock().expect("watch table lock");
            if let Some(watched) = jobs.get(&event.job_id) {
                let _ = watched.signals.send(Signal::Changed(event));
            }
        }
    }

    fn broadcast(&self, signal: Signal) {
        for watched in self.jobs.lock().expect("watch table lock").values() {
            let _ = watched.signals.send(signal);
        }
    }
}

async fn bind(bound: &Bound, id: JobId, broker: &Broker) {
    let bind = bound.channel.queue_bind(
        bound.queue.as_str().into(),
        broker.topology().events_exchange().into(),
        JobEvent::routing_key(id).into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    if !matches!(tokio::time::timeout(BIND_TIMEOUT, bind).await, Ok(Ok(()))) {
        tracing::warn!(job_id = %id, "cannot bind a job's events; its watchers poll instead");
    }
}
