//! Every SQL statement Tollgate runs, one module per table, shared by the api and the worker.
//!
//! Queries are plain `sqlx::query_as` with lowercase SQL. Constraint names that callers turn into
//! client errors are exported as constants beside the statement that can violate them.

pub mod jobs;
pub mod tenants;
pub mod tokens;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

/// The schema, embedded from `migrations/` at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens a pool. Acquiring waits at most 5 s, so an overloaded or absent database surfaces as an
/// error (and a 503) rather than a request that hangs.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
}

/// Applies pending migrations; safe to call from several processes at once (sqlx takes a lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Cheap liveness query for `GET /readyz`.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("select 1").execute(pool).await.map(|_| ())
}
