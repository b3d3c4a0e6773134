//! Following streaming jobs' text on this api instance. A streaming job carries the key of the
//! instance holding its client, and the worker publishes each piece to the text exchange under
//! `<instance>.<job id>`: this instance binds `<instance>.*` once per broker session, so its own
//! streams cost no broker round trip, and text reaches only the instance that reads it (a job's
//! events go to every instance, but they are two per job; text is hundreds of pieces). Following
//! another instance's stream (a job's event stream) binds `*.<job id>` for as long as it lasts.
//!
//! A follow exists before the job is published, so no piece can come before it. After the broker
//! connection is re-made, the bindings are made again and followers told that pieces may have
//! been lost: they then take the rest of the text from the finished job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tollgate_core::domain::JobId;
use tollgate_core::process::Tasks;
use tollgate_core::queue::{Broker, HintBinding, HintBounds, HintQueue, StreamMessage};

/// What a follower hears.
#[derive(Debug)]
pub enum Heard {
    Piece(StreamMessage),
    /// The broker connection was re-made: pieces may have been lost.
    Gap,
}

/// How long a follow waits for this session's queue to be declared.
const SUBSCRIBE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The followers of each followed job.
type Table = HashMap<JobId, Followed>;

#[derive(Default)]
struct Followed {
    /// Each follower under its own key.
    followers: Vec<(u64, mpsc::UnboundedSender<Heard>)>,
    /// The job is bound by its id (`*.<job id>`): its client is elsewhere.
    bound: bool,
}

#[derive(Clone)]
pub struct Followers {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Broker,
    /// This instance's key: streaming jobs whose client it holds carry it.
    key: String,
    jobs: Mutex<Table>,
    /// The current session's queue, once subscribed.
    bound: Mutex<Option<HintBinding>>,
    next_key: std::sync::atomic::AtomicU64,
}

/// One follower of one job's text; dropping it ends the follow.
pub struct Following {
    id: JobId,
    key: u64,
    heard: mpsc::UnboundedReceiver<Heard>,
    inner: Arc<Inner>,
}

impl Following {
    /// The next piece or gap; `None` only if the follow table dropped this follower (never while
    /// it lives), so callers may treat it as a gap.
    pub async fn next(&mut self) -> Option<Heard> {
        self.heard.recv().await
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut jobs = self.inner.lock_jobs();
        let Some(followed) = jobs.get_mut(&self.id) else {
            return;
        };
        followed.followers.retain(|(key, _)| *key != self.key);
        if followed.followers.is_empty() {
            let bound = followed.bound;
            jobs.remove(&self.id);
            drop(jobs);
            if bound {
                let inner = self.inner.clone();
                let id = self.id;
                #[expect(
                    clippy::disallowed_methods,
                    reason = "an unbinding left to finish on its own: the session's end drops the binding anyway"
                )]
                tokio::spawn(async move { inner.unbind(id).await });
            }
        }
    }
}

/// Following needs the broker, and it is away.
#[derive(Debug, thiserror::Error)]
#[error("cannot follow the job's text: {0}")]
pub struct FollowError(String);

impl Followers {
    /// Starts following the broker in `tasks`: one subscription per session, until `shutdown`.
    pub fn start(broker: Broker, shutdown: CancellationToken, tasks: &mut Tasks) -> Self {
        let inner = Arc::new(Inner {
            broker,
            key: uuid::Uuid::now_v7().simple().to_string(),
            jobs: Mutex::new(HashMap::new()),
            bound: Mutex::new(None),
            next_key: std::sync::atomic::AtomicU64::new(0),
        });
        tasks.spawn("text follower", inner.clone().run(shutdown));
        Self { inner }
    }

    /// This instance's key, for the streaming jobs whose client it holds (`stream_to`).
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// Follows the text of job `id`, whose client this instance holds (it carries [`Self::key`]):
    /// every piece published after this returns is heard, with no broker round trip.
    pub async fn follow(&self, id: JobId) -> Result<Following, FollowError> {
        self.inner.subscribed().await?;
        Ok(self.register(id, false).0)
    }

    /// Follows the text of job `id` whose client is wherever it is (a job's event stream): every
    /// piece published after this returns is heard.
    pub async fn follow_job(&self, id: JobId) -> Result<Following, FollowError> {
        let (following, bind) = self.register(id, true);
        if bind {
            self.inner.bind(id).await?;
        }
        Ok(following)
    }

    /// Adds a follower of job `id` (`by_id`: its pieces are to be bound by the job's id); whether
    /// that binding is still to be made.
    fn register(&self, id: JobId, by_id: bool) -> (Following, bool) {
        let (sender, heard) = mpsc::unbounded_channel();
        let key = self
            .inner
            .next_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut jobs = self.inner.lock_jobs();
        let followed = jobs.entry(id).or_default();
        followed.followers.push((key, sender));
        let bind = by_id && !followed.bound;
        followed.bound |= by_id;
        drop(jobs);
        let following = Following {
            id,
            key,
            heard,
            inner: self.inner.clone(),
        };
        (following, bind)
    }
}

impl Inner {
    fn lock_jobs(&self) -> std::sync::MutexGuard<'_, Table> {
        tollgate_core::sync::lock(&self.jobs)
    }

    fn lock_bound(&self) -> std::sync::MutexGuard<'_, Option<HintBinding>> {
        tollgate_core::sync::lock(&self.bound)
    }

    fn current(&self) -> Option<HintBinding> {
        self.lock_bound().clone()
    }

    /// This session's queue; while the broker is connected but the queue not yet declared (just
    /// after start or a reconnect), waits for it a moment.
    async fn subscribed(&self) -> Result<HintBinding, FollowError> {
        let deadline = tokio::time::Instant::now() + SUBSCRIBE_WAIT;
        loop {
            if let Some(bound) = self.current() {
                return Ok(bound);
            }
            if !self.broker.is_connected() || tokio::time::Instant::now() >= deadline {
                return Err(FollowError("the message broker is unavailable".into()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    async fn bind(&self, id: JobId) -> Result<(), FollowError> {
        let binding = self.subscribed().await?;
        binding
            .bind(&StreamMessage::job_pattern(id))
            .await
            .map_err(|error| FollowError(error.to_string()))
    }

    async fn unbind(&self, id: JobId) {
        let Some(binding) = self.current() else {
            return;
        };
        if let Err(error) = binding.unbind(&StreamMessage::job_pattern(id)).await {
            tracing::debug!(%error, job_id = %id, "cannot unbind a followed job");
        }
    }

    /// One subscription per broker session: declare the queue, bind every followed job again, tell
    /// followers pieces may be lost, then hand pieces out until the session ends.
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let broker = self.broker.clone();
        let exchange = broker.topology().streams_exchange();
        broker
            .each_session(&shutdown, |session| {
                let (inner, exchange) = (self.clone(), exchange.clone());
                async move {
                    let own = StreamMessage::instance_pattern(&inner.key);
                    let keys = [own.as_str()];
                    let declared =
                        HintQueue::declare(&session, &exchange, &keys, HintBounds::default());
                    match declared.await {
                        Ok(queue) => {
                            *inner.lock_bound() = Some(queue.binding());
                            inner.rebind_all().await;
                            inner.dispatch(queue).await;
                        }
                        Err(error) => tracing::warn!(%error, "cannot subscribe to streamed text"),
                    }
                    *inner.lock_bound() = None;
                }
            })
            .await;
    }

    /// Binds again the jobs followed by id, and tells every follower pieces may have been lost.
    async fn rebind_all(&self) {
        let ids: Vec<JobId> = self
            .lock_jobs()
            .iter()
            .filter(|(_, followed)| followed.bound)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Err(error) = self.bind(id).await {
                tracing::warn!(%error, job_id = %id, "cannot follow a job again");
            }
        }
        for followed in self.lock_jobs().values() {
            for (_, sender) in &followed.followers {
                let _ = sender.send(Heard::Gap);
            }
        }
    }

    async fn dispatch(&self, mut queue: HintQueue<StreamMessage>) {
        while let Some(message) = queue.next().await {
            if let Some(followed) = self.lock_jobs().get(&message.job_id) {
                for (_, sender) in &followed.followers {
                    let _ = sender.send(Heard::Piece(message.clone()));
                }
            }
        }
    }
}

impl From<FollowError> for crate::http::error::ApiError {
    fn from(error: FollowError) -> Self {
        tracing::warn!(%error, "cannot follow a streaming job");
        Self::unavailable("the message broker is unavailable", 5)
    }
}
