//! Rate limits as a generic cell rate algorithm (GCRA): a limit of `per_minute` requests with a
//! `burst`, kept as one "theoretical arrival time" per key. Each api instance enforces an equal
//! share of every limit (`share`), so any number of instances together never admit more than it.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Requests per minute, and how many may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

/// What one request did to its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests this instance would still admit at once.
    pub remaining: u32,
    /// Until the limit is back to its full burst.
    pub reset: Duration,
    /// When refused: how long until one request would be admitted.
    pub retry_after: Duration,
}

impl RateLimit {
    /// This instance's part of the limit when `instances` share it.
    pub fn share(self, instances: u32) -> Self {
        let instances = instances.max(1);
        Self {
            per_minute: (self.per_minute / instances).max(1),
            burst: (self.burst / instances).max(1),
        }
    }

    fn interval(self) -> Duration {
        Duration::from_secs(60) / self.per_minute.max(1)
    }

    /// Admits or refuses one request at `now`, given the key's arrival time `tat` (updated when
    /// admitted).
    pub fn check(self, tat: &mut Option<Instant>, now: Instant) -> Decision {
        let interval = self.interval();
        let tolerance = interval * self.burst.saturating_sub(1);
        let current = tat.filter(|t| *t > now).unwrap_or(now);
        let ahead = current - now;
        if ahead > tolerance {
            return Decision {
                allowed: false,
                remaining: 0,
                reset: ahead,
                retry_after: ahead - tolerance,
            };
        }
        let next = current + interval;
        *tat = Some(next);
        let used = next - now;
        let left = (tolerance + interval).saturating_sub(used);
        Decision {
            allowed: true,
            remaining: u32::try_from(left.as_nanos() / interval.as_nanos().max(1)).unwrap_or(0),
            reset: used,
            retry_after: Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_one_request_per_interval() {
        let limit = RateLimit {
            per_minute: 60,
            burst: 3,
        };
        let start = Instant::now();
        let mut tat = None;
        let decisions: Vec<_> = (0..4).map(|_| limit.check(&mut tat, start)).collect();
        assert_eq!(
            decisions.iter().map(|d| d.allowed).collect::<Vec<_>>(),
            [true, true, true, false]
        );
        assert_eq!(decisions[0].remaining, 2);
        assert_eq!(decisions[2].remaining, 0);
        assert_eq!(decisions[3].retry_after, Duration::from_secs(1));
        assert!(
            !limit
                .check(&mut tat, start + Duration::from_millis(900))
                .allowed
        );
        assert!(
            limit
                .check(&mut tat, start + Duration::from_secs(1))
                .allowed
        );
        // Idle for long enough, the whole burst is back.
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| limit.check(&mut tat, later).allowed));
    }

    #[test]
    fn instances_share_a_limit_without_exceeding_it() {
        let limit = RateLimit {
            per_minute: 600,
            burst: 10,
        };
        assert_eq!(
            limit.share(2),
            RateLimit {
                per_minute: 300,
                burst: 5
            }
        );
        assert_eq!(limit.share(0), limit);
        assert_eq!(limit.share(100).burst, 1);
    }
}
