//! The `worker_health` table: each worker's circuits and calls in flight, written every few
//! seconds, so the api can show provider health that lives in the workers' memory.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

/// A worker is alive while its report is younger than this many seconds.
const ALIVE_SECS: f64 = 30.0;

/// A provider (or one host of the fleet) as one worker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProviderState {
    pub provider: String,
    /// The fleet's host; `None` for OpenAI.
    pub host: Option<String>,
    pub circuit_open: bool,
    pub slots: u32,
    pub in_flight: u32,
}

/// A live worker's last report.
#[derive(Debug, Clone)]
pub struct WorkerReport {
    pub id: Uuid,
    pub seen_at: DateTime<Utc>,
    pub providers: Json<Vec<ProviderState>>,
}

/// Records worker `id`'s providers as it sees them now; forgets workers long gone.
pub async fn report(
    pool: &PgPool,
    id: Uuid,
    providers: &[ProviderState],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "with gone as (delete from worker_health where seen_at < now() - interval '1 hour')
         insert into worker_health (id, seen_at, providers) values ($1, now(), $2)
         on conflict (id) do update set seen_at = now(), providers = excluded.providers",
        id,
        Json(providers) as _,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes the worker's report (at shutdown).
pub async fn leave(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("delete from worker_health where id = $1", id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The live workers' reports, oldest worker first.
pub async fn alive(pool: &PgPool) -> Result<Vec<WorkerReport>, sqlx::Error> {
    sqlx::query_as!(
        WorkerReport,
        r#"select id, seen_at, providers as "providers: Json<Vec<ProviderState>>"
             from worker_health
          where seen_at > now() - make_interval(secs => $1) order by id"#,
        ALIVE_SECS,
    )
    .fetch_all(pool)
    .await
}
