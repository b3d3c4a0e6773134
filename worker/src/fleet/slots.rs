//! Waiting for a host's call slot, across workers: the slots are rows (`shared::db::host_slots`),
//! taken in one statement and freed with a notification.
//!
//! A call takes a slot at once when nobody in this worker is waiting; otherwise it joins this
//! worker's line, served first come first served by one task: on each freed-slot notification (and
//! every [`RETRY_EVERY`], which covers the leases of dead workers running out) it tries the waiters
//! in order, one statement per waiter served and one per kind of waiter (model and lane) that
//! found nothing, never one per waiter. A waiter's hosts are looked up again on every try, so a
//! host added or enabled while calls wait takes them at once. While the worker holds slots it
//! renews their leases.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::db::host_slots::{self, HOST_SLOT_FREED, HeldSlot, SlotLane};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often the line is tried without a notification.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// How often a worker shutting down looks whether its calls have given back their slots.
const STOPPING_CHECK: Duration = Duration::from_millis(100);

/// Why no slot was had.
#[derive(Debug)]
pub enum NoSlot {
    /// Every slot stayed held for the whole wait.
    Busy,
    Cancelled,
    /// The database could not be asked.
    Unavailable(sqlx::Error),
}

/// The slots of this worker: taking, waiting in line, renewing and freeing them.
#[derive(Clone)]
pub struct Slots {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    lease: Duration,
    /// The calls holding slots now, whose leases the renewer extends.
    held: Mutex<HashSet<Uuid>>,
    line: mpsc::UnboundedSender<Waiter>,
    candidates: Candidates,
    /// Waiters in line (or about to join it): while there are any, a new call queues behind them.
    waiting: AtomicUsize,
    freed: Notify,
}

/// A call waiting in line.
struct Waiter {
    model: String,
    lane: SlotLane,
    reply: oneshot::Sender<SlotGuard>,
}

/// The hosts that may serve a model now (enabled, with the model, not resting after failures).
pub type Candidates = Arc<dyn Fn(&str) -> Vec<Uuid> + Send + Sync>;

/// A held slot; dropping it frees the slot (in the background) and wakes whoever waits for it.
pub struct SlotGuard {
    slot: HeldSlot,
    slots: Slots,
}

impl SlotGuard {
    pub fn host_id(&self) -> Uuid {
        self.slot.host_id
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.held().remove(&self.slot.holder);
        let pool = self.slots.inner.pool.clone();
        let slot = self.slot;
        tokio::spawn(async move {
            if let Err(error) = host_slots::free(&pool, &slot).await {
                tracing::warn!(%error, "cannot free a host slot; its lease will");
            }
        });
    }
}

impl Slots {
    /// The slots and the line's receiving end, which [`Slots::run`] serves.
    pub fn new(pool: PgPool, lease: Duration, candidates: Candidates) -> (Self, Line) {
        let (line, waiters) = mpsc::unbounded_channel();
        let slots = Self {
            inner: Arc::new(Inner {
                pool,
                lease,
                held: Mutex::default(),
                line,
                candidates,
                waiting: AtomicUsize::new(0),
                freed: Notify::new(),
            }),
        };
        (slots, Line(waiters))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot for `model` on one of `hosts` (the least loaded), waiting at most `wait` for one to
    /// come free (on any host that has the model by then).
    pub async fn take(
        &self,
        model: &str,
        hosts: &[Uuid],
        lane: SlotLane,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<SlotGuard, NoSlot> {
        if self.inner.waiting.load(Ordering::Acquire) == 0
            && let Some(guard) = self
                .try_take(hosts, lane)
                .await
                .map_err(NoSlot::Unavailable)?
        {
            return Ok(guard);
        }
        let (reply, answer) = oneshot::channel();
        self.inner.waiting.fetch_add(1, Ordering::AcqRel);
        let model = model.to_owned();
        let _ = self.inner.line.send(Waiter { model, lane, reply });
        tokio::select! {
            guard = answer => guard.map_err(|_| NoSlot::Busy),
            () = tokio::time::sleep(wait) => Err(NoSlot::Busy),
            () = cancel.cancelled() => Err(NoSlot::Cancelled),
        }
    }

    async fn try_take(
        &self,
        hosts: &[Uuid],
        lane: SlotLane,
    ) -> Result<Option<SlotGuard>, sqlx::Error> {
        let holder = Uuid::now_v7();
        // Registered before the statement, so a lease renewal racing it cannot miss it.
        self.held().insert(holder);
        let taken = host_slots::take(&self.inner.pool, hosts, lane, holder, self.inner.lease).await;
        match taken {
            Ok(Some(slot)) => Ok(Some(SlotGuard {
                slot,
                slots: self.clone(),
            })),
            other => {
                self.held().remove(&holder);
                other.map(|_| None)
            }
        }
    }

    /// Serves the line, follows freed-slot notifications and renews leases until `shutdown`.
    pub async fn run(self, line: Line, shutdown: CancellationToken) {
        let listen = tokio::spawn(self.clone().listen(shutdown.clone()));
        let renew = tokio::spawn(self.clone().renew(shutdown.clone()));
        self.serve(line, shutdown).await;
        for task in [listen, renew] {
            if let Err(error) = task.await {
                tracing::error!(%error, "host slot task panicked");
            }
        }
    }

    async fn serve(&self, Line(mut arrivals): Line, shutdown: CancellationToken) {
        let mut line: VecDeque<Waiter> = VecDeque::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                arrival = arrivals.recv() => match arrival {
                    Some(waiter) => line.push_back(waiter),
                    None => return,
                },
                () = self.inner.freed.notified() => {}
                () = tokio::time::sleep(RETRY_EVERY), if !line.is_empty() => {}
            }
            while let Ok(waiter) = arrivals.try_recv() {
                line.push_back(waiter);
            }
            self.serve_line(&mut line).await;
        }
    }

    /// Tries the line in order: a waiter is skipped once one like it (same model and lane) found
    /// nothing in this pass, and waiters that gave up leave.
    async fn serve_line(&self, line: &mut VecDeque<Waiter>) {
        let mut found_nothing: Vec<(String, SlotLane)> = Vec::new();
        let mut kept = VecDeque::with_capacity(line.len());
        while let Some(waiter) = line.pop_front() {
            if waiter.reply.is_closed() {
                self.inner.waiting.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let kind = (waiter.model.clone(), waiter.lane);
            if found_nothing.contains(&kind) {
                kept.push_back(waiter);
                continue;
            }
            let hosts = (self.inner.candidates)(&waiter.model);
            match self.try_take(&hosts, waiter.lane).await {
                Ok(Some(guard)) => {
                    self.inner.waiting.fetch_sub(1, Ordering::AcqRel);
                    // A waiter that gave up meanwhile drops the guard, which frees the slot.
                    let _ = waiter.reply.send(guard);
                }
                Ok(None) => {
                    found_nothing.push(kind);
                    kept.push_back(waiter);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot take host slots; retrying");
                    kept.push_back(waiter);
                    kept.extend(line.drain(..));
                }
            }
        }
        *line = kept;
    }

    /// Wakes the line whenever a slot is freed anywhere; reconnects when the database goes away.
    async fn listen(self, shutdown: CancellationToken) {
        loop {
            let listener = async {
                let mut listener = PgListener::connect_with(&self.inner.pool).await?;
                listener.listen(HOST_SLOT_FREED).await?;
                loop {
                    listener.recv().await?;
                    self.inner.freed.notify_one();
                }
            };
            let ended: Result<(), sqlx::Error> = tokio::select! {
                () = shutdown.cancelled() => return,
                ended = listener => ended,
            };
            if let Err(error) = ended {
                tracing::warn!(%error, "lost the host slot notifications; the line retries on its own");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Extends the leases of the slots held, every third of a lease. After `shutdown` it goes on
    /// while calls that hold slots still run (the worker's grace period), then ends.
    async fn renew(self, shutdown: CancellationToken) {
        let every = self.inner.lease / 3;
        let mut renew_at = Instant::now() + every;
        loop {
            let stopping = shutdown.is_cancelled();
            if stopping && self.held().is_empty() {
                return;
            }
            let pause = if stopping { STOPPING_CHECK } else { every };
            tokio::select! {
                () = tokio::time::sleep_until(renew_at.min(Instant::now() + pause)) => {}
                () = shutdown.cancelled(), if !stopping => continue,
            }
            if Instant::now() < renew_at {
                continue;
            }
            renew_at = Instant::now() + every;
            let held: Vec<Uuid> = self.held().iter().copied().collect();
            if held.is_empty() {
                continue;
            }
            if let Err(error) = host_slots::renew(&self.inner.pool, &held, self.inner.lease).await {
                tracing::warn!(%error, "cannot renew host slot leases");
            }
        }
    }
}

/// The receiving end of a worker's line for slots.
pub struct Line(mpsc::UnboundedReceiver<Waiter>);
