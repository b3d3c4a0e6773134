//! Every SQL statement Tollgate runs, one module per table, shared by the api and the worker.
//!
//! Statements are lowercase SQL checked at compile time (`sqlx::query!` and `query_as!`) against
//! the migrations: their checked shapes are committed in `.sqlx/`, so a build needs no database,
//! and `scripts/sqlx check` (run by CI) fails when a migration breaks one. The few whose shape
//! varies with the request are assembled with `QueryBuilder`, each saying why. Constraint names
//! that callers turn into client errors are exported as constants beside the statement that can
//! violate them.

pub mod access;
pub mod activity;
pub mod audit;
pub mod backlog;
pub mod batches;
pub mod cache;
pub mod dispatch;
pub mod files;
pub mod host_models;
pub mod host_slots;
pub mod hosts;
pub mod idempotency;
pub mod images;
pub mod instances;
pub mod job_attempts;
pub mod jobs;
pub mod model_routes;
pub mod partitions;
pub mod prices;
pub mod providers;
pub mod quotas;
pub mod runs;
pub mod settings;
pub mod tenants;
pub mod tokens;
pub mod usage;
pub mod version;
pub mod webhooks;
pub mod workers;

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::domain::JobId;

/// The schema, embedded from `migrations/` at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens a pool. Acquiring waits at most 5 s, so an overloaded or absent database surfaces as an
/// error (and a 503) rather than a request that hangs. Within that wait a refused connection is
/// tried again after at most a fifth of it (sqlx's backoff: 10 ms doubling, capped at 1 s), so a
/// database that comes back is connected to within about a second.
///
/// Every connection plans its prepared statements once ([`GENERIC_PLANS`]): the statements of a
/// job's path touch day partitions, and Postgres, comparing a generic plan over every partition
/// with one made for the partitions a call's arguments name, would otherwise plan them again at
/// every call — measured, 0.7 ms for a claim and 2.3–3 ms for the closing statement, more than
/// running them (issue 38). A generic plan still prunes the partitions when it starts, by scalar
/// parameters (a statement on many jobs names their bounds too: [`id_bounds`]). The few reads
/// whose best plan depends on an argument (one tenant or all) are assembled per case instead
/// (see `usage`).
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?.options([GENERIC_PLANS]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
}

/// The setting every pooled connection starts with: plans made once per statement.
pub const GENERIC_PLANS: (&str, &str) = ("plan_cache_mode", "force_generic_plan");

/// The lowest and highest of `ids` (the nil id twice when there are none), for statements on many
/// jobs to say `id between $lo and $hi` beside `id = any($ids)`: a generic plan prunes day
/// partitions by a range of parameters when it starts, but not by an array parameter (measured:
/// every day's partition was scanned for the array's ids). Job ids are UUIDv7s, so the jobs of
/// one burst sit in one or two days.
pub fn id_bounds(ids: &[JobId]) -> (JobId, JobId) {
    let nil = JobId(uuid::Uuid::nil());
    let low = ids.iter().min().copied().unwrap_or(nil);
    let high = ids.iter().max().copied().unwrap_or(nil);
    (low, high)
}

/// A pool on `pool`'s database, of at most `max_connections`, whose commits do not wait for their
/// WAL to reach the disk (`synchronous_commit = off`): for writes whose loss in a crash the
/// system recovers from, and only those (a run's claim: see the worker's `runs`). Postgres writes
/// its WAL in order, so a later durable commit (the run's end) makes such a commit durable too; a
/// crash loses at most the last fraction of a second of them. Connects when first used.
pub fn quick_commits(pool: &PgPool, max_connections: u32) -> PgPool {
    let options =
        PgConnectOptions::clone(&pool.connect_options()).options([("synchronous_commit", "off")]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options)
}

/// Runs `operation` again while the database cannot be reached, for up to `within` (100 to
/// 500 ms between tries). For a statement whose commit may have happened before its connection
/// broke, only the database's answer can say whether it did: its caller waits for that answer
/// rather than answer its own client in doubt.
pub async fn when_reachable<T, F, Fut>(within: Duration, operation: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    use backon::Retryable as _;
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_millis(500))
        .with_total_delay(Some(within))
        .without_max_times();
    operation.retry(backoff).when(is_unreachable).await
}

/// Applies pending migrations; safe to call from several processes at once (sqlx takes a lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether the database could not be reached at all: no connection, a broken one, none free in
/// time. (A connection cut while it is being opened can show as a protocol error.)
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}

/// Whether a failed statement may succeed if simply run again: the connection or the server was
/// away, or Postgres asked for a retry. Anything else (a bad row, a violated constraint) will fail
/// the same way every time.
pub fn is_transient(error: &sqlx::Error) -> bool {
    if is_unreachable(error) {
        return true;
    }
    match error {
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            // connection exceptions, serialization failure, deadlock, insufficient resources,
            // operator intervention (e.g. the server shutting down)
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}

/// Cheap liveness query for `GET /readyz`.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query!("select 1 as one")
        .fetch_one(pool)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_transient_and_bad_rows_are_not() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::Io(
            std::io::ErrorKind::ConnectionReset.into()
        )));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::Decode(
            "bad request JSON".into()
        )));
    }
}
