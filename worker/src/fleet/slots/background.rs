//! What the slots do in the background until shutdown: serve the line of waiting calls, free the
//! slots kept too long, say which hosts' slots are wanted, follow freed and wanted slots, and
//! renew the leases of held ones.

use sqlx::postgres::PgListener;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tollgate_core::db::host_slots::{self, HOST_SLOT_FREED, HOST_SLOT_WANTED, HeldSlot, SlotLane};
use tollgate_core::process::Tasks;
use uuid::Uuid;

use super::*;

impl Slots {
    /// Serves the line, keeps returned slots, follows freed and wanted slots and renews leases
    /// until `shutdown`.
    pub async fn run(self, line: Line, shutdown: CancellationToken) {
        let mut tasks = Tasks::default();
        tasks.spawn("host slot listener", self.clone().listen(shutdown.clone()));
        tasks.spawn("host slot leases", self.clone().renew(shutdown.clone()));
        self.serve(line, shutdown).await;
        // Each task that panicked is logged by name.
        let _panicked = tasks.join().await;
    }

    async fn serve(&self, Line(mut arrivals): Line, shutdown: CancellationToken) {
        let mut line: VecDeque<Waiter> = VecDeque::new();
        let mut said_wanted = Instant::now();
        loop {
            let expiry = self.kept().iter().map(|(_, since)| *since + LINGER).min();
            tokio::select! {
                () = shutdown.cancelled() => break,
                waiter = arrivals.recv() => match waiter {
                    Some(waiter) => line.push_back(waiter),
                    None => break,
                },
                () = self.inner.moved.notified() => {}
                () = tokio::time::sleep(RETRY_EVERY), if !line.is_empty() => {}
                () = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)),
                    if expiry.is_some() => {}
            }
            while let Ok(waiter) = arrivals.try_recv() {
                line.push_back(waiter);
            }
            self.serve_line(&mut line).await;
            self.free_kept(Instant::now());
            if !line.is_empty() && said_wanted.elapsed() >= RETRY_EVERY {
                said_wanted = Instant::now();
                self.say_wanted(&line);
            }
        }
        // Whatever is kept goes back; calls still running free theirs as they end.
        let kept: Vec<(HeldSlot, Instant)> = {
            let mut kept = self.kept();
            self.inner.stopped.store(true, Ordering::Release);
            kept.drain(..).collect()
        };
        for (slot, _) in kept {
            self.free(slot);
        }
    }

    /// Frees the kept slots nobody here used within [`LINGER`], and those other workers wait
    /// for.
    fn free_kept(&self, now: Instant) {
        let expired: Vec<HeldSlot> = {
            let mut kept = self.kept();
            let (expired, fresh): (Vec<_>, Vec<_>) = kept.drain(..).partition(|(slot, since)| {
                *since + LINGER <= now || self.is_contended(slot.host_id)
            });
            *kept = fresh;
            expired.into_iter().map(|(slot, _)| slot).collect()
        };
        for slot in expired {
            self.free(slot);
        }
    }

    /// Tells the other workers which hosts this worker's waiters want, so that they give back the
    /// slots they keep between calls.
    fn say_wanted(&self, line: &VecDeque<Waiter>) {
        let mut hosts: Vec<Uuid> = line
            .iter()
            .flat_map(|w| (self.inner.candidates)(&w.route, w.needs))
            .map(|u| u.host_id)
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        let pool = self.inner.pool.clone();
        let worker = self.inner.id;
        #[expect(
            clippy::disallowed_methods,
            reason = "one notification, left to finish on its own: the line says so again if still waiting"
        )]
        tokio::spawn(async move {
            if let Err(error) = host_slots::want(&pool, &hosts, worker).await {
                tracing::warn!(%error, "cannot say which host slots are wanted");
            }
        });
    }

    /// Tries the line in order, each waiter first with a kept slot, then from the database: a
    /// waiter is skipped once one like it (same route, needs and lane) found nothing in this pass, and
    /// waiters that gave up leave.
    async fn serve_line(&self, line: &mut VecDeque<Waiter>) {
        let mut found_nothing: Vec<(FleetRoute, Capabilities, SlotLane)> = Vec::new();
        let mut kept = VecDeque::with_capacity(line.len());
        while let Some(waiter) = line.pop_front() {
            if waiter.reply.is_closed() {
                self.inner.waiting.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let kind = (waiter.route.clone(), waiter.needs, waiter.lane);
            if found_nothing.contains(&kind) {
                kept.push_back(waiter);
                continue;
            }
            let usable = (self.inner.candidates)(&waiter.route, waiter.needs);
            let taken = match self.reuse(&usable, waiter.lane) {
                Some(guard) => Ok(Some(guard)),
                None => self.try_take(&usable, waiter.lane).await,
            };
            match taken {
                Ok(Some(guard)) => {
                    self.inner.waiting.fetch_sub(1, Ordering::AcqRel);
                    // A waiter that gave up meanwhile drops the guard, which passes the slot on.
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

    /// Wakes the line whenever a slot is freed anywhere, and notes the hosts other workers' calls
    /// wait for (their slots kept here go back); reconnects when the database goes away.
    async fn listen(self, shutdown: CancellationToken) {
        loop {
            let listener = async {
                let mut listener = PgListener::connect_with(&self.inner.pool).await?;
                listener
                    .listen_all([HOST_SLOT_FREED, HOST_SLOT_WANTED])
                    .await?;
                loop {
                    let notification = listener.recv().await?;
                    if notification.channel() == HOST_SLOT_WANTED
                        && let Some((host, worker)) = host_slots::wanted(notification.payload())
                        && worker != self.inner.id
                    {
                        self.contended()
                            .insert(host, Instant::now() + CONTENDED_FOR);
                    }
                    self.inner.moved.notify_one();
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
