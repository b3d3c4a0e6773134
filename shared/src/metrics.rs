//! What the api's and the worker's `/metrics` have in common: the OpenMetrics exposition of a
//! registry, the optional bearer token that guards a scrape, and the buckets latencies are counted
//! in; and the tally of requests and jobs each process adds to the dashboard's activity per
//! minute. Names carry their unit (`_seconds`) without a `# UNIT` line, which some OpenMetrics
//! parsers refuse on histograms. Each process keeps its own registry (no global recorder), so an api and a worker running in
//! one process — as the tests run them — each expose only their own figures.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};

use crate::db::activity::Counts;

/// The content type of a scrape: OpenMetrics text, which Prometheus prefers when offered.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every name carries this prefix.
pub const PREFIX: &str = "tollgate";

/// Latency buckets in seconds, from a fast intake (a few ms) to the slowest provider call.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Waiting-time buckets in seconds: a queue's wait runs from nothing to many minutes in a backlog.
pub const WAIT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 1800.0,
];

/// Buckets in seconds for work done in memory per answer (a schema check): 1 µs to 100 ms.
pub const CHECK_BUCKETS: [f64; 10] = [
    0.000_001, 0.000_005, 0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.1,
];

/// A family of histograms over `LATENCY_BUCKETS`.
pub type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

/// A family of histograms of latencies, labelled by `L`.
pub fn latencies<L: Clone + std::hash::Hash + Eq>() -> Latencies<L> {
    Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS))
}

/// A family of histograms of in-memory checks, labelled by `L`.
pub fn checks<L: Clone + std::hash::Hash + Eq>() -> Latencies<L> {
    Family::new_with_constructor(|| Histogram::new(CHECK_BUCKETS))
}

/// A family of histograms of waits, labelled by `L`.
pub fn waits<L: Clone + std::hash::Hash + Eq>() -> Latencies<L> {
    Family::new_with_constructor(|| Histogram::new(WAIT_BUCKETS))
}

/// A fresh registry whose names all start with [`PREFIX`].
pub fn registry() -> Registry {
    Registry::with_prefix(PREFIX)
}

/// The registry in OpenMetrics text.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::with_capacity(32 * 1024);
    encode(&mut text, registry)?;
    Ok(text)
}

/// Who may scrape: anyone, or whoever sends the configured bearer token.
#[derive(Clone, Default)]
pub struct ScrapeGuard {
    /// The SHA-256 of the token: compared as digests, so the comparison's time says nothing about
    /// how much of a guess was right.
    token: Option<[u8; 32]>,
}

impl ScrapeGuard {
    pub fn new(token: Option<&SecretString>) -> Self {
        Self {
            token: token.map(|t| digest(t.expose_secret())),
        }
    }

    /// Whether a request with this `Authorization` header may scrape.
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(expected) = self.token else {
            return true;
        };
        authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .is_some_and(|given| digest(given.trim()) == expected)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Requests and jobs this process counted since it last reported them to the dashboard's
/// activity per minute (`db::activity`): the api counts requests and jobs accepted, the worker
/// jobs finished. Plain atomics, so counting costs the hot path nothing measurable.
#[derive(Debug, Default)]
pub struct Tally {
    requests: AtomicI64,
    jobs_accepted: AtomicI64,
    jobs_succeeded: AtomicI64,
    jobs_failed: AtomicI64,
}

impl Tally {
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn accepted(&self, jobs: u64) {
        let jobs = i64::try_from(jobs).unwrap_or(i64::MAX);
        self.jobs_accepted.fetch_add(jobs, Ordering::Relaxed);
    }

    /// A job's end: succeeded, or failed (a cancelled job is neither).
    pub fn finished(&self, succeeded: bool) {
        let counter = if succeeded {
            &self.jobs_succeeded
        } else {
            &self.jobs_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds what was counted since the last report to the current minute. What a failed write
    /// could not add is kept for the next report.
    pub async fn report(&self, pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
        let take = |counter: &AtomicI64| counter.swap(0, Ordering::Relaxed);
        let counts = Counts {
            requests: take(&self.requests),
            jobs_accepted: take(&self.jobs_accepted),
            jobs_succeeded: take(&self.jobs_succeeded),
            jobs_failed: take(&self.jobs_failed),
        };
        if counts.is_empty() {
            return Ok(());
        }
        crate::db::activity::add(pool, counts)
            .await
            .inspect_err(|_| {
                self.requests.fetch_add(counts.requests, Ordering::Relaxed);
                self.jobs_accepted
                    .fetch_add(counts.jobs_accepted, Ordering::Relaxed);
                self.jobs_succeeded
                    .fetch_add(counts.jobs_succeeded, Ordering::Relaxed);
                self.jobs_failed
                    .fetch_add(counts.jobs_failed, Ordering::Relaxed);
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_anyone_scrapes_and_with_one_only_its_bearer() {
        assert!(ScrapeGuard::new(None).allows(None));
        let guard = ScrapeGuard::new(Some(&SecretString::from("s3cret")));
        assert!(guard.allows(Some("Bearer s3cret")));
        assert!(!guard.allows(Some("Bearer s3cre")));
        assert!(!guard.allows(Some("s3cret")));
        assert!(!guard.allows(None));
    }
}
