//! When a failed delivery is tried again: Svix's schedule with ±20 % jitter, and never sooner
//! than the receiver's `Retry-After` asked.

use std::time::Duration;

/// The longest `Retry-After` honoured; a receiver asking for more is retried after this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The delays between attempts: the first attempt is immediate, then one retry after each delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl Default for RetrySchedule {
    /// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over about 28 hours.
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self(vec![
            Duration::from_secs(5),
            minutes(5),
            minutes(30),
            minutes(120),
            minutes(300),
            minutes(600),
            minutes(600),
        ])
    }
}

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Self {
        Self(delays)
    }

    /// Attempts a delivery gets in all.
    pub fn max_attempts(&self) -> usize {
        self.0.len() + 1
    }

    /// The wait after the `attempts_made`-th attempt failed, or `None` when it was the last.
    /// `jitter` in `[-1, 1]` moves the delay by up to 20 % either way; a `Retry-After` (capped at a
    /// day) is a floor.
    pub fn next_delay(
        &self,
        attempts_made: usize,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        let base = *self.0.get(attempts_made.checked_sub(1)?)?;
        let jittered = base.mul_f64(1.0 + 0.2 * jitter.clamp(-1.0, 1.0));
        Some(match retry_after {
            Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
            None => jittered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_is_svix_with_eight_attempts() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.max_attempts(), 8);
        assert_eq!(
            schedule.next_delay(1, None, 0.0),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            schedule.next_delay(2, None, 0.0),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            schedule.next_delay(7, None, 0.0),
            Some(Duration::from_secs(36_000))
        );
        assert_eq!(schedule.next_delay(8, None, 0.0), None);
        assert_eq!(schedule.next_delay(0, None, 0.0), None);
    }

    #[test]
    fn jitter_moves_a_delay_by_at_most_a_fifth() {
        let schedule = RetrySchedule::default();
        assert_eq!(
            schedule.next_delay(1, None, 1.0),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            schedule.next_delay(1, None, -1.0),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            schedule.next_delay(1, None, 7.0),
            Some(Duration::from_secs(6))
        );
    }

    #[test]
    fn retry_after_is_a_floor_capped_at_a_day() {
        let schedule = RetrySchedule::default();
        let after = |secs| Some(Duration::from_secs(secs));
        assert_eq!(schedule.next_delay(1, after(60), 0.0), after(60));
        assert_eq!(schedule.next_delay(1, after(1), 0.0), after(5));
        assert_eq!(
            schedule.next_delay(1, after(10_000_000), 0.0),
            after(86_400)
        );
    }
}
