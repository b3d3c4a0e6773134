//! The runtime settings' version: what processes poll to learn that their copy is stale, bumped in
//! the transaction of every change to the settings, routes, prices, hosts and providers.

use sqlx::{PgPool, Postgres, Transaction};

/// The current version.
pub async fn current(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!("select version from settings")
        .fetch_one(pool)
        .await
}

/// Marks the runtime settings changed (a route, a price, a host or a provider was written in
/// `tx`), so every process reloads them.
pub(super) async fn bump(tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query!("update settings set version = version + 1, updated_at = now()")
        .execute(&mut **tx)
        .await?;
    Ok(())
}
