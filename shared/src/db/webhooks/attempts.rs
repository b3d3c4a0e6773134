//! `webhook_attempts`: one row per attempt to send a delivery, recorded with the verdict it brings
//! its delivery.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// One attempt, as recorded.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub attempted_at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub latency: Duration,
    pub error: Option<String>,
}

/// What an attempt means for its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptVerdict {
    Delivered,
    /// Try again after this long.
    RetryAfter(Duration),
    /// No more attempts (out of retries, or a refusal that will not change).
    GiveUp,
    /// The receiver answered 410: give up, and disable the tenant's endpoint if it was that.
    Gone,
}

/// One attempt as its tenant (and admins) read it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub attempted_at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub error: Option<String>,
}

/// Records an attempt and its verdict in one statement; a 410 from the tenant's endpoint disables
/// it.
pub async fn record_attempt(
    pool: &PgPool,
    id: Uuid,
    attempt: &AttemptRecord,
    verdict: AttemptVerdict,
) -> Result<(), sqlx::Error> {
    let (status, retry_in) = match verdict {
        AttemptVerdict::Delivered => ("succeeded", None),
        AttemptVerdict::RetryAfter(delay) => ("pending", Some(delay.as_secs_f64())),
        AttemptVerdict::GiveUp | AttemptVerdict::Gone => ("failed", None),
    };
    sqlx::query!(
        "with attempt as (
            insert into webhook_attempts (delivery_id, attempted_at, status_code, latency_ms, error)
            values ($1, $2, $3, $4, $5)
         ), delivery as (
            update webhook_deliveries
               set status = $6, attempts = attempts + 1, last_error = $5,
                   next_attempt_at = coalesce(now() + make_interval(secs => $7), next_attempt_at),
                   finished_at = case when $6 = 'pending' then null else now() end
             where id = $1
         returning tenant_id, tenant_endpoint
         )
         update tenants set webhook_disabled_at = now(),
                            webhook_disabled_reason = 'the endpoint answered 410 Gone'
           from delivery
          where $8 and delivery.tenant_endpoint and tenants.id = delivery.tenant_id",
        id,
        attempt.attempted_at,
        attempt.status_code.map(i32::from),
        i32::try_from(attempt.latency.as_millis()).unwrap_or(i32::MAX),
        attempt.error,
        status,
        retry_in,
        verdict == AttemptVerdict::Gone,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The attempts of the given deliveries, each with its delivery's id, oldest first.
pub(super) async fn of_deliveries(
    pool: &PgPool,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, Attempt)>, sqlx::Error> {
    let rows = sqlx::query!(
        "select delivery_id, attempted_at, status_code, latency_ms, error from webhook_attempts
          where delivery_id = any($1) order by id",
        ids,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let attempt = Attempt {
                attempted_at: row.attempted_at,
                status_code: row.status_code,
                latency_ms: row.latency_ms,
                error: row.error,
            };
            (row.delivery_id, attempt)
        })
        .collect())
}
