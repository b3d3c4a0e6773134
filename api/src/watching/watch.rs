//! Watching jobs from this api instance: SSE streams and submit-and-wait learn that a job changed
//! from the job events that workers (and api instances) publish to RabbitMQ.
//!
//! The instance has one exclusive queue per broker session, bound to every job event (`job.*`),
//! and hands each event to the local watchers of its job, if any. Binding per watched job instead
//! would keep unwatched events away, but costs two broker round trips per watch, one at a time per
//! channel: measured, that throttled submit-and-wait to the binding rate. Events are small hints,
//! so receiving them all is the cheaper side of the trade.
//!
//! A watch is registered before the caller reads the job from Postgres, and the queue is bound
//! before any watch exists, so whatever changes after that read arrives as an event: nothing falls
//! between the read and the subscription. Events are hints ([`Signal`]): watchers read the job
//! itself; after a reconnect, when events may have been missed, every watcher is told to re-read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tollgate_core::domain::{Job, JobId, TenantId};
use tollgate_core::process::Tasks;
use tollgate_core::queue::{Broker, HintBounds, HintError, HintQueue, JobEvent, Session};
use tollgate_core::sync::lock;

/// Events buffered per job for a slow watcher; one that falls further behind re-reads the job.
const BUFFER: usize = 16;
/// Bounds on the instance's event queue should it stop keeping up: the oldest events are dropped
/// (watchers re-read on their own schedule), never the broker's memory exhausted.
const QUEUE_MAX_EVENTS: i64 = 100_000;
const EVENT_TTL: Duration = Duration::from_secs(60);

/// What a watcher hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Changed(JobEvent),
    /// Events may have been missed (the broker connection was re-made): read the job again.
    Reread,
    /// The api is shutting down: end the watch (an SSE client reconnects elsewhere with
    /// `Last-Event-ID`), so open streams never hold up the shutdown.
    Closing,
}

#[derive(Clone)]
pub struct Watchers {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Broker,
    jobs: Mutex<HashMap<JobId, Watched>>,
    shutdown: CancellationToken,
}

struct Watched {
    signals: broadcast::Sender<Signal>,
    watchers: usize,
}

/// One watcher of one job; dropping it ends the watch.
pub struct Watch {
    id: JobId,
    signals: broadcast::Receiver<Signal>,
    inner: Arc<Inner>,
}

impl Watch {
    /// The next signal; a watcher that fell behind gets `Reread`, and every watcher `Closing` once
    /// shutdown begins.
    pub async fn next(&mut self) -> Signal {
        let received = tokio::select! {
            biased;
            () = self.inner.shutdown.cancelled() => return Signal::Closing,
            received = self.signals.recv() => received,
        };
        match received {
            Ok(signal) => signal,
            Err(broadcast::error::RecvError::Lagged(_)) => Signal::Reread,
            // The sender lives as long as this watch's entry: cannot happen; wait, never spin.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut jobs = lock(&self.inner.jobs);
        if let Some(watched) = jobs.get_mut(&self.id) {
            watched.watchers -= 1;
            if watched.watchers == 0 {
                jobs.remove(&self.id);
            }
        }
    }
}

impl Watchers {
    /// Starts following the broker in `tasks`: one subscription per session, until `shutdown`.
    pub fn start(broker: Broker, shutdown: CancellationToken, tasks: &mut Tasks) -> Self {
        let inner = Arc::new(Inner {
            broker,
            jobs: Mutex::new(HashMap::new()),
            shutdown: shutdown.clone(),
        });
        tasks.spawn("job watcher", inner.clone().follow(shutdown));
        Self { inner }
    }

    /// Watches job `id`; every change of the job after this returns is signalled.
    pub fn watch(&self, id: JobId) -> Watch {
        let mut jobs = lock(&self.inner.jobs);
        let watched = jobs.entry(id).or_insert_with(|| Watched {
            signals: broadcast::channel(BUFFER).0,
            watchers: 0,
        });
        watched.watchers += 1;
        Watch {
            id,
            signals: watched.signals.subscribe(),
            inner: self.inner.clone(),
        }
    }
}

impl Inner {
    /// One subscription per broker session: declare and bind the queue, tell watchers to re-read
    /// (events of the gap are lost), then dispatch events until the session ends.
    async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let broker = self.broker.clone();
        broker
            .each_session(&shutdown, |session| {
                let inner = self.clone();
                async move {
                    match inner.subscribe(&session).await {
                        Ok(queue) => {
                            inner.broadcast(Signal::Reread);
                            inner.dispatch(queue).await;
                        }
                        Err(error) => tracing::warn!(%error, "cannot subscribe to job events"),
                    }
                }
            })
            .await;
    }

    async fn subscribe(&self, session: &Session) -> Result<HintQueue<JobEvent>, HintError> {
        let bounds = HintBounds {
            max_length: Some(QUEUE_MAX_EVENTS),
            message_ttl: Some(EVENT_TTL),
        };
        let exchange = self.broker.topology().events_exchange();
        HintQueue::declare(session, &exchange, &[JobEvent::ROUTING_PATTERN], bounds).await
    }

    async fn dispatch(&self, mut queue: HintQueue<JobEvent>) {
        while let Some(event) = queue.next().await {
            let jobs = lock(&self.jobs);
            if let Some(watched) = jobs.get(&event.job_id) {
                let _ = watched.signals.send(Signal::Changed(event));
            }
        }
    }

    fn broadcast(&self, signal: Signal) {
        for watched in lock(&self.jobs).values() {
            let _ = watched.signals.send(signal);
        }
    }
}

/// The wait behind `Prefer: wait=N`: waits up to `wait` for a watched job to end; the finished
/// job, or `None` if it is still going. The job is read when an event says it ended, and once
/// more at the deadline (or when the api begins shutting down) in case that event was lost.
pub async fn finished_within(
    pool: &PgPool,
    tenant_id: TenantId,
    id: JobId,
    mut watch: Watch,
    wait: Duration,
) -> Result<Option<Job>, sqlx::Error> {
    let deadline = Instant::now() + wait;
    loop {
        let signal = tokio::select! {
            signal = watch.next() => Some(signal),
            () = tokio::time::sleep_until(deadline) => None,
        };
        let (read_now, last) = match signal {
            Some(Signal::Changed(event)) => (event.status.is_terminal(), false),
            Some(Signal::Reread) => (true, false),
            Some(Signal::Closing) | None => (true, true),
        };
        if read_now {
            let job = tollgate_core::db::jobs::get(pool, tenant_id, id).await?;
            if let Some(job) = job.filter(|job| job.status.is_terminal()) {
                return Ok(Some(job));
            }
        }
        if last {
            return Ok(None);
        }
    }
}
