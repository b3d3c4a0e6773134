//! Waiting for a host's call slot, across workers: the slots are rows (`tollgate_core::db::host_slots`),
//! taken in one statement and freed with a notification.
//!
//! A worker keeps the slots it took between its calls: a slot whose call ended serves the worker's
//! next call that can use it (the first in line, else the next to ask), and goes back to the
//! database once nobody here used it for [`LINGER`] — or at once, while another worker's calls
//! wait for that host (it says so, and the saying holds for [`CONTENDED_FOR`]). So a steady stream
//! of calls costs no statement per call, and under contention every slot goes back into the common
//! pool as its call ends, for whichever worker's waiter comes first.
//!
//! A call with nothing kept to use takes a slot from the database at once when nobody in this
//! worker is waiting; otherwise it joins this worker's line, served first come first served by one
//! task: on each freed-slot notification (and every [`RETRY_EVERY`], which covers the leases of
//! dead workers running out) it tries the waiters in order, one statement per waiter served and one
//! per kind of waiter (model and lane) that found nothing, never one per waiter; while waiters
//! remain it tells the other workers. A waiter's hosts are looked up again on every try, so a host
//! added or enabled while calls wait takes them at once. While the worker holds slots it renews
//! their leases.

mod background;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tollgate_core::db::host_slots::{self, HeldSlot, SlotLane};
use tollgate_core::domain::{Capabilities, FleetRoute};
use uuid::Uuid;

/// How often the line is tried without a notification (and the other workers told it waits).
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// How long a slot whose call ended is kept for this worker's next call.
const LINGER: Duration = Duration::from_secs(1);

/// How long another worker's word that its calls wait for a host's slots holds.
const CONTENDED_FOR: Duration = Duration::from_secs(1);

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

/// A host a call may use now, with the slot numbers open to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usable {
    pub host_id: Uuid,
    pub slots: u32,
    pub bulk_slots: u32,
}

impl Usable {
    /// Whether slot number `slot` of this host may serve a call of `lane`.
    fn admits(&self, slot: &HeldSlot, lane: SlotLane) -> bool {
        let number = u32::try_from(slot.slot).unwrap_or(u32::MAX);
        slot.host_id == self.host_id
            && number <= self.slots
            && (lane == SlotLane::Any || number <= self.bulk_slots)
    }
}

/// The hosts that may serve a model for a call that needs something now (enabled, with the model
/// able to do it, not resting after failures).
pub type Candidates = Arc<dyn Fn(&FleetRoute, Capabilities) -> Vec<Usable> + Send + Sync>;

/// The slots of this worker: taking, waiting in line, keeping, renewing and freeing them.
#[derive(Clone)]
pub struct Slots {
    inner: Arc<Inner>,
}

struct Inner {
    /// This worker, as it names itself when it says which slots its calls want.
    id: Uuid,
    pool: PgPool,
    lease: Duration,
    /// The holders of every slot this worker holds (in a call or kept), whose leases the renewer
    /// extends.
    held: Mutex<HashSet<Uuid>>,
    /// Slots whose call ended, kept for the next call, and since when.
    kept: Mutex<Vec<(HeldSlot, Instant)>>,
    /// Hosts other workers' calls wait for, until when.
    contended: Mutex<HashMap<Uuid, Instant>>,
    line: mpsc::UnboundedSender<Waiter>,
    candidates: Candidates,
    /// Waiters in line (or about to join it): while there are any, a new call queues behind them.
    waiting: AtomicUsize,
    /// A slot was freed somewhere, or one of ours came back: the line may move.
    moved: Notify,
    /// The line's task has stopped (shutdown): a slot whose call ends goes straight back.
    stopped: AtomicBool,
}

/// A call waiting in line.
struct Waiter {
    /// What the call runs on each kind of host.
    route: FleetRoute,
    /// What the call needs the model to do.
    needs: Capabilities,
    lane: SlotLane,
    reply: oneshot::Sender<SlotGuard>,
}

/// A held slot; dropping it keeps the slot for this worker's next call, or frees it.
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
        let mut kept = self.slots.kept();
        // Checked under the lock the line's task drains the kept slots under when it stops.
        if self.slots.inner.stopped.load(Ordering::Acquire)
            || self.slots.is_contended(self.slot.host_id)
        {
            drop(kept);
            self.slots.free(self.slot);
        } else {
            kept.push((self.slot, Instant::now()));
            drop(kept);
            self.slots.inner.moved.notify_one();
        }
    }
}

impl Slots {
    /// The slots and the line's receiving end, which [`Slots::run`] serves.
    pub fn new(pool: PgPool, lease: Duration, candidates: Candidates) -> (Self, Line) {
        let (line, arrivals) = mpsc::unbounded_channel();
        let slots = Self {
            inner: Arc::new(Inner {
                id: Uuid::now_v7(),
                pool,
                lease,
                held: Mutex::default(),
                kept: Mutex::default(),
                contended: Mutex::default(),
                line,
                candidates,
                waiting: AtomicUsize::new(0),
                moved: Notify::new(),
                stopped: AtomicBool::new(false),
            }),
        };
        (slots, Line(arrivals))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        tollgate_core::sync::lock(&self.inner.held)
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Vec<(HeldSlot, Instant)>> {
        tollgate_core::sync::lock(&self.inner.kept)
    }

    fn contended(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Instant>> {
        tollgate_core::sync::lock(&self.inner.contended)
    }

    /// Whether another worker said lately that its calls wait for `host`'s slots.
    fn is_contended(&self, host: Uuid) -> bool {
        self.contended()
            .get(&host)
            .is_some_and(|until| *until > Instant::now())
    }

    fn guard(&self, slot: HeldSlot) -> SlotGuard {
        SlotGuard {
            slot,
            slots: self.clone(),
        }
    }

    /// Gives a slot back to the common pool (in the background) and wakes whoever waits for it.
    fn free(&self, slot: HeldSlot) {
        self.held().remove(&slot.holder);
        let pool = self.inner.pool.clone();
        #[expect(
            clippy::disallowed_methods,
            reason = "one statement, left to finish on its own: a slot it fails to free is freed by its lease"
        )]
        tokio::spawn(async move {
            if let Err(error) = host_slots::free(&pool, &slot).await {
                tracing::warn!(%error, "cannot free a host slot; its lease will");
            }
        });
    }

    /// A kept slot one of `usable` admits for `lane`, if there is one.
    fn reuse(&self, usable: &[Usable], lane: SlotLane) -> Option<SlotGuard> {
        let mut kept = self.kept();
        let found = kept
            .iter()
            .position(|(slot, _)| usable.iter().any(|u| u.admits(slot, lane)))?;
        let (slot, _) = kept.swap_remove(found);
        Some(self.guard(slot))
    }

    /// A slot for `route` on one of `usable` (the least loaded), waiting at most `wait` for one
    /// to come free (on any host that has its model able to do what `needs` says by then).
    pub async fn take(
        &self,
        route: &FleetRoute,
        needs: Capabilities,
        usable: &[Usable],
        lane: SlotLane,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<SlotGuard, NoSlot> {
        if self.inner.waiting.load(Ordering::Acquire) == 0 {
            if let Some(guard) = self.reuse(usable, lane) {
                return Ok(guard);
            }
            if let Some(guard) = self
                .try_take(usable, lane)
                .await
                .map_err(NoSlot::Unavailable)?
            {
                return Ok(guard);
            }
        }
        let (reply, answer) = oneshot::channel();
        self.inner.waiting.fetch_add(1, Ordering::AcqRel);
        let waiter = Waiter {
            route: route.clone(),
            needs,
            lane,
            reply,
        };
        let _ = self.inner.line.send(waiter);
        tokio::select! {
            guard = answer => guard.map_err(|_| NoSlot::Busy),
            () = tokio::time::sleep(wait) => Err(NoSlot::Busy),
            () = cancel.cancelled() => Err(NoSlot::Cancelled),
        }
    }

    /// A slot from the database, on the least loaded of `usable`.
    async fn try_take(
        &self,
        usable: &[Usable],
        lane: SlotLane,
    ) -> Result<Option<SlotGuard>, sqlx::Error> {
        let hosts: Vec<Uuid> = usable.iter().map(|u| u.host_id).collect();
        let holder = Uuid::now_v7();
        // Registered before the statement, so a lease renewal racing it cannot miss it.
        self.held().insert(holder);
        let taken =
            host_slots::take(&self.inner.pool, &hosts, lane, holder, self.inner.lease).await;
        match taken {
            Ok(Some(slot)) => Ok(Some(self.guard(slot))),
            other => {
                self.held().remove(&holder);
                other.map(|_| None)
            }
        }
    }
}

/// The receiving end of a worker's line for slots.
pub struct Line(mpsc::UnboundedReceiver<Waiter>);
