//! Single jobs ahead of batch items on the machine, not only in the queues. While single jobs are
//! running in this worker (and for a moment after the last one ended), batch items take turns for
//! their database work: at most `turns` of them claim or record an outcome at once, so a single
//! job's statements do not queue for CPU behind hundreds of batch statements. Provider calls are
//! never gated, so a batch on a slow provider keeps every slot it has; with no single job about,
//! batch items do not wait at all.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

/// How long batch items keep yielding after the last single job ended: single jobs tend to come
/// in streams, and the next one should not find the machine busy again.
const LINGER: Duration = Duration::from_secs(1);

pub struct Priority {
    singles_running: AtomicUsize,
    last_single_ended: Mutex<Option<Instant>>,
    turns: Option<Semaphore>,
}

/// A single job running; dropping it records when it ended.
pub struct SingleRunning<'a>(&'a Priority);

impl Drop for SingleRunning<'_> {
    fn drop(&mut self) {
        if let Ok(mut last) = self.0.last_single_ended.lock() {
            *last = Some(Instant::now());
        }
        self.0.singles_running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Priority {
    /// `turns` batch items at a time do database work while single jobs are about; 0 never holds
    /// them back.
    pub fn new(turns: usize) -> Self {
        Self {
            singles_running: AtomicUsize::new(0),
            last_single_ended: Mutex::new(None),
            turns: (turns > 0).then(|| Semaphore::new(turns)),
        }
    }

    /// Marks a single job running until the guard drops.
    pub fn single(&self) -> SingleRunning<'_> {
        self.singles_running.fetch_add(1, Ordering::AcqRel);
        SingleRunning(self)
    }

    /// Waits, while single jobs are about, for a batch item's turn at its database work (held
    /// until the permit drops); at once, with no permit, otherwise.
    pub async fn bulk_turn(&self) -> Option<SemaphorePermit<'_>> {
        let turns = self.turns.as_ref()?;
        if !self.singles_about(Instant::now()) {
            return None;
        }
        turns.acquire().await.ok()
    }

    /// Whether a single job is running, or one ended within [`LINGER`] of `now`.
    fn singles_about(&self, now: Instant) -> bool {
        if self.singles_running.load(Ordering::Acquire) > 0 {
            return true;
        }
        let last = self.last_single_ended.lock().ok().and_then(|last| *last);
        last.is_some_and(|ended| now.saturating_duration_since(ended) < LINGER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_items_yield_while_a_single_job_runs_and_for_a_moment_after() {
        let priority = Priority::new(2);
        let start = Instant::now();
        assert!(!priority.singles_about(start), "nothing has run yet");
        let running = priority.single();
        assert!(priority.singles_about(start + Duration::from_secs(60)));
        drop(running);
        let ended = Instant::now();
        assert!(priority.singles_about(ended + LINGER / 2));
        assert!(!priority.singles_about(ended + LINGER * 2));
    }

    #[tokio::test]
    async fn turns_are_handed_out_only_while_singles_are_about() {
        let priority = Priority::new(1);
        assert!(
            priority.bulk_turn().await.is_none(),
            "no single job: no wait"
        );
        let _single = priority.single();
        let first = priority.bulk_turn().await;
        assert!(first.is_some());
        let second = tokio::time::timeout(Duration::from_millis(50), priority.bulk_turn()).await;
        assert!(second.is_err(), "the one turn is taken");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), priority.bulk_turn())
            .await
            .expect("a turn once the first is given back");
        assert!(third.is_some());
        assert!(
            Priority::new(0).bulk_turn().await.is_none(),
            "0 never holds back"
        );
    }
}
