//! The retry policy's arithmetic: how long to wait before calling a provider again within a run,
//! and how long a job waits in a delay queue before its next run.
//!
//! The backoff schedule itself (exponential with jitter) comes from `backon`; what is decided here
//! is how a provider's `Retry-After` bends it.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use tollgate_core::domain::RetryPolicy;
use tollgate_core::queue::{RETRY_DELAYS, wait_bucket};

/// Longest a run waits in place for a provider's `Retry-After`; a provider asking for more is left
/// for the next one in the chain or for the delay queue, instead of holding a worker slot.
pub const MAX_IN_RUN_WAIT: Duration = Duration::from_secs(10);

/// The waits between calls to one provider in one run: exponential from `min_delay` to
/// `max_delay` with jitter, `provider_attempts - 1` of them.
pub fn call_backoff(policy: &RetryPolicy) -> impl Iterator<Item = Duration> + use<> {
    ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_jitter()
        .with_max_times(policy.provider_attempts.saturating_sub(1) as usize)
        .build()
}

/// How long to wait before the next call to the same provider: the backoff, stretched to the
/// provider's `Retry-After`; `None` when that is longer than a run should wait in place.
pub fn before_next_call(backoff: Duration, retry_after: Option<Duration>) -> Option<Duration> {
    match retry_after {
        Some(asked) if asked > MAX_IN_RUN_WAIT => None,
        Some(asked) => Some(backoff.max(asked)),
        None => Some(backoff),
    }
}

/// How long a job waits before its next run, after `retries` earlier delayed runs: the schedule
/// of delay queues, stretched to the last `Retry-After`, rounded up to a queue that exists.
pub fn before_next_run(retries: i32, retry_after: Option<Duration>) -> Duration {
    let step = usize::try_from(retries)
        .unwrap_or(0)
        .min(RETRY_DELAYS.len() - 1);
    wait_bucket(RETRY_DELAYS[step].max(retry_after.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            provider_attempts: attempts,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_job_attempts: 5,
            structured_output_attempts: 3,
        }
    }

    #[test]
    fn a_provider_gets_its_configured_number_of_calls_with_growing_waits_up_to_the_max() {
        let waits: Vec<_> = call_backoff(&policy(6)).collect();
        assert_eq!(waits.len(), 5, "five waits between six calls");
        for (i, wait) in waits.iter().enumerate() {
            let base = Duration::from_millis(100 * 2u64.pow(i as u32)).min(Duration::from_secs(1));
            assert!(
                *wait >= base && *wait <= base * 2,
                "wait {i}: {wait:?} around {base:?}"
            );
        }
        assert_eq!(call_backoff(&policy(1)).count(), 0);
    }

    #[test]
    fn retry_after_stretches_the_wait_and_a_long_one_leaves_the_provider() {
        let backoff = Duration::from_millis(200);
        assert_eq!(before_next_call(backoff, None), Some(backoff));
        assert_eq!(
            before_next_call(backoff, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            before_next_call(Duration::from_secs(3), Some(Duration::from_secs(1))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            before_next_call(backoff, Some(Duration::from_secs(60))),
            None
        );
    }

    #[test]
    fn delayed_runs_follow_the_queue_schedule_and_honour_retry_after() {
        assert_eq!(before_next_run(0, None), Duration::from_secs(1));
        assert_eq!(before_next_run(1, None), Duration::from_secs(5));
        assert_eq!(before_next_run(99, None), Duration::from_secs(1800));
        assert_eq!(
            before_next_run(0, Some(Duration::from_secs(20))),
            Duration::from_secs(30)
        );
    }
}
