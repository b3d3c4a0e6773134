//! `webhook_deliveries`: one row per event to send, written by the terminal statement of the job
//! or batch it announces; claimed by a deliverer for each attempt, listed for tenants and admins,
//! redelivered by admins and swept when its message was lost.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::attempts::{self, Attempt};
use crate::domain::{BatchId, JobId, TenantId};

/// A delivery a deliverer now holds.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: Uuid,
    pub tenant_id: TenantId,
    /// What the event is about: a job, or a batch.
    pub job_id: Option<JobId>,
    pub batch_id: Option<BatchId>,
    pub event_type: String,
    pub url: String,
    pub tenant_endpoint: bool,
    pub payload: Option<String>,
    /// Attempts made before this one.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    /// It goes to the tenant's endpoint, which a 410 has disabled since: nothing more is sent.
    pub endpoint_disabled: bool,
    /// The trace of the job it is about (its `traceparent`), if any.
    pub traceparent: Option<String>,
}

/// Claims a pending delivery that is due for one attempt, pushing its due time out by `lease` so
/// a duplicate message (the sweeper's, or a redelivery) finds it taken. `None`: not due, already
/// delivered or given up.
pub async fn claim(
    pool: &PgPool,
    id: Uuid,
    lease: Duration,
) -> Result<Option<ClaimedDelivery>, sqlx::Error> {
    sqlx::query_as!(
        ClaimedDelivery,
        r#"update webhook_deliveries d set next_attempt_at = now() + make_interval(secs => $2)
           from tenants t
          where d.id = $1 and t.id = d.tenant_id
            and d.status = 'pending' and d.next_attempt_at <= now() + interval '1 second'
      returning d.id, d.tenant_id as "tenant_id: TenantId", d.job_id as "job_id: JobId",
                d.batch_id as "batch_id: BatchId", d.event_type, d.url, d.tenant_endpoint,
                d.payload, d.attempts, d.created_at,
                d.tenant_endpoint and t.webhook_disabled_at is not null as "endpoint_disabled!",
                (select traceparent from jobs j where j.id = d.job_id) as traceparent"#,
        id,
        lease.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await
}

/// Stores the body rendered for a delivery's first attempt and returns the stored one: a body
/// stored earlier (by an attempt whose outcome was lost) wins, so every attempt sends the same
/// bytes.
pub async fn keep_payload(pool: &PgPool, id: Uuid, payload: &str) -> Result<String, sqlx::Error> {
    sqlx::query_scalar!(
        r#"update webhook_deliveries set payload = coalesce(payload, $2) where id = $1
      returning payload as "payload!""#,
        id,
        payload,
    )
    .fetch_one(pool)
    .await
}

/// A delivery as its tenant (and admins) see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The `webhook-id` header's value.
    pub id: String,
    pub event_type: String,
    pub url: String,
    pub status: String,
    /// When the next attempt is due, while the delivery is pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub attempts: Vec<Attempt>,
}

/// A tenant's job's deliveries with their attempts, oldest first; another tenant's job has none.
pub async fn for_job(
    pool: &PgPool,
    tenant_id: TenantId,
    job_id: JobId,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let rows = sqlx::query!(
        "select id, event_type, url, status, next_attempt_at, last_error, created_at, finished_at
           from webhook_deliveries
          where job_id = $1 and tenant_id = $2
          order by created_at, id",
        job_id as JobId,
        tenant_id as TenantId,
    )
    .fetch_all(pool)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
    let attempts = attempts::of_deliveries(pool, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| Delivery {
            id: crate::webhook::message_id(row.id),
            attempts: attempts
                .iter()
                .filter(|(delivery, _)| *delivery == row.id)
                .map(|(_, attempt)| attempt.clone())
                .collect(),
            next_attempt_at: (row.status == "pending").then_some(row.next_attempt_at),
            event_type: row.event_type,
            url: row.url,
            status: row.status,
            last_error: row.last_error,
            created_at: row.created_at,
            finished_at: row.finished_at,
        })
        .collect())
}

/// A delivery as admins list it, across tenants.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliverySummary {
    /// The `webhook-id` header's value.
    pub id: String,
    pub tenant_id: TenantId,
    pub job_id: Option<JobId>,
    pub batch_id: Option<BatchId>,
    pub event_type: String,
    pub url: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Deliveries in `status` across tenants, newest first, strictly older than `before` when given.
pub async fn list(
    pool: &PgPool,
    status: &str,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<DeliverySummary>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select id, tenant_id as "tenant_id: TenantId", job_id as "job_id: JobId",
                batch_id as "batch_id: BatchId", event_type, url, status, attempts, last_error,
                created_at, finished_at
           from webhook_deliveries
          where status = $1 and ($2::timestamptz is null or created_at < $2)
          order by created_at desc
          limit $3"#,
        status,
        before,
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| DeliverySummary {
            id: crate::webhook::message_id(row.id),
            tenant_id: row.tenant_id,
            job_id: row.job_id,
            batch_id: row.batch_id,
            event_type: row.event_type,
            url: row.url,
            status: row.status,
            attempts: row.attempts,
            last_error: row.last_error,
            created_at: row.created_at,
            finished_at: row.finished_at,
        })
        .collect())
}

/// Makes a delivery pending and due now, for one more attempt (an admin's redelivery): it keeps
/// its id and body. `false` if there is no such delivery.
pub async fn redeliver(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update webhook_deliveries
            set status = 'pending', next_attempt_at = now(), finished_at = null
          where id = $1",
        id,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Pending deliveries overdue by more than `older_than` (their message was lost, or never
/// published), for the sweeper to send again; each is marked due now, so the next sweep leaves it
/// alone for `older_than` while its new message travels.
pub async fn overdue(
    pool: &PgPool,
    older_than: Duration,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "update webhook_deliveries set next_attempt_at = now()
          where id in (select id from webhook_deliveries
                        where status = 'pending'
                          and next_attempt_at < now() - make_interval(secs => $1)
                        order by next_attempt_at
                        limit $2
                        for update skip locked)
      returning id",
        older_than.as_secs_f64(),
        limit,
    )
    .fetch_all(pool)
    .await
}
