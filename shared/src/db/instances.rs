//! The `api_instances` table: each api instance's heartbeat, so every instance knows how many
//! share the rate limits.

use sqlx::PgPool;
use uuid::Uuid;

/// An instance is alive while its heartbeat is younger than this many seconds.
const ALIVE_SECS: f64 = 3.0;

/// Records that instance `id` is alive and returns how many instances are (itself included).
pub async fn heartbeat(pool: &PgPool, id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"with beat as (
            insert into api_instances (id, seen_at) values ($1, now())
            on conflict (id) do update set seen_at = now()
         )
         select 1 + count(*) as "alive!" from api_instances
          where id <> $1 and seen_at > now() - make_interval(secs => $2)"#,
        id,
        ALIVE_SECS,
    )
    .fetch_one(pool)
    .await
}

/// Removes the instance (at shutdown) and any long dead.
pub async fn leave(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "delete from api_instances where id = $1 or seen_at < now() - interval '1 hour'",
        id
    )
    .execute(pool)
    .await?;
    Ok(())
}
