//! The webhook tables: each tenant's endpoint and signing secrets, the deliveries a job's terminal
//! statement writes, and one row per attempt to send one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{BatchId, JobId, TenantId};

/// Writes the delivery of a job that just ended (`done`, with `id, tenant_id, status,
/// webhook_url, batch_id`): to the job's own URL, else to the tenant's endpoint while it is
/// enabled; nothing when neither is set, nor for a batch's item (its batch announces itself). Part of the terminal statement, so the event is as durable as the outcome.
pub(super) const DELIVERY_FROM_DONE: &str = "
    hook as (
        insert into webhook_deliveries (id, tenant_id, job_id, event_type, url, tenant_endpoint)
        select gen_random_uuid(), done.tenant_id, done.id, 'job.' || done.status,
               coalesce(done.webhook_url, t.webhook_url), done.webhook_url is null
          from done join tenants t on t.id = done.tenant_id
         where done.status in ('succeeded', 'failed', 'cancelled')
           and done.batch_id is null
           and (done.webhook_url is not null
                or (t.webhook_url is not null and t.webhook_disabled_at is null))
     returning id)";

/// Writes the delivery announcing a batch that just ended (`ended`, with `id, tenant_id, status,
/// webhook_url`): to the batch's own URL, else to the tenant's endpoint while it is enabled.
pub(super) const BATCH_DELIVERY_FROM_ENDED: &str = "
    hook as (
        insert into webhook_deliveries (id, tenant_id, batch_id, event_type, url, tenant_endpoint)
        select gen_random_uuid(), ended.tenant_id, ended.id, 'batch.' || ended.status,
               coalesce(ended.webhook_url, t.webhook_url), ended.webhook_url is null
          from ended join tenants t on t.id = ended.tenant_id
         where ended.webhook_url is not null
            or (t.webhook_url is not null and t.webhook_disabled_at is null)
     returning id, batch_id)";

/// A tenant's endpoint as admins see it: never a secret, only when each was made and expires.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub url: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub secrets: Vec<SecretInfo>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SecretInfo {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    /// Set once rotated out: until then deliveries are signed with it too.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The tenant's endpoint; `None` if there is no such tenant.
pub async fn endpoint(pool: &PgPool, tenant_id: TenantId) -> Result<Option<Endpoint>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        webhook_url: Option<String>,
        webhook_disabled_at: Option<DateTime<Utc>>,
        webhook_disabled_reason: Option<String>,
    }
    let row: Option<Row> = sqlx::query_as(
        "select webhook_url, webhook_disabled_at, webhook_disabled_reason from tenants where id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let secrets = sqlx::query_as(
        "select id, created_at, expires_at from webhook_secrets
          where tenant_id = $1 and (expires_at is null or expires_at > now())
          order by id desc",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    Ok(Some(Endpoint {
        url: row.webhook_url,
        disabled_at: row.webhook_disabled_at,
        disabled_reason: row.webhook_disabled_reason,
        secrets,
    }))
}

/// Sets (or clears) the tenant's endpoint and enables it again, and stores `candidate` (a sealed
/// new secret) if the tenant has no signing secret yet. Returns whether the tenant exists and
/// whether `candidate` became its secret.
pub async fn set_endpoint(
    pool: &PgPool,
    tenant_id: TenantId,
    url: Option<&str>,
    candidate: &[u8],
) -> Result<Option<bool>, sqlx::Error> {
    let row: Option<(bool,)> = sqlx::query_as(
        "with tenant as (
            update tenants set webhook_url = $2, webhook_disabled_at = null,
                               webhook_disabled_reason = null
             where id = $1
         returning id
         ), secret as (
            insert into webhook_secrets (tenant_id, sealed)
            select id, $3 from tenant
             where not exists (select 1 from webhook_secrets
                                where tenant_id = $1 and expires_at is null)
         returning id
         )
         select exists (select 1 from secret) from tenant",
    )
    .bind(tenant_id)
    .bind(url)
    .bind(candidate)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(created,)| created))
}

/// Makes `sealed` the tenant's signing secret; the secrets it replaces keep signing for `overlap`.
/// Returns when they stop, or `None` if there is no such tenant.
pub async fn rotate_secret(
    pool: &PgPool,
    tenant_id: TenantId,
    sealed: &[u8],
    overlap: Duration,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "with tenant as (
            select id from tenants where id = $1
         ), retired as (
            update webhook_secrets set expires_at = now() + make_interval(secs => $3)
             where tenant_id = $1 and expires_at is null
         ), added as (
            insert into webhook_secrets (tenant_id, sealed) select id, $2 from tenant
         )
         select now() + make_interval(secs => $3) from tenant",
    )
    .bind(tenant_id)
    .bind(sealed)
    .bind(overlap.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// Whether the tenant can sign webhooks (has a secret): a job may name a URL only then.
pub async fn has_secret(pool: &PgPool, tenant_id: TenantId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from webhook_secrets
                         where tenant_id = $1 and (expires_at is null or expires_at > now()))",
    )
    .bind(tenant_id)
    .fetch_one(pool)
    .await
}

/// The sealed secrets a delivery is signed with, newest first.
pub async fn signing_secrets(
    pool: &PgPool,
    tenant_id: TenantId,
) -> Result<Vec<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar(
        "select sealed from webhook_secrets
          where tenant_id = $1 and (expires_at is null or expires_at > now())
          order by id desc",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await
}

/// A delivery a deliverer now holds.
#[derive(Debug, Clone, sqlx::FromRow)]
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
    sqlx::query_as(
        "update webhook_deliveries d set next_attempt_at = now() + make_interval(secs => $2)
           from tenants t
          where d.id = $1 and t.id = d.tenant_id
            and d.status = 'pending' and d.next_attempt_at <= now() + interval '1 second'
      returning d.id, d.tenant_id, d.job_id, d.batch_id, d.event_type, d.url, d.tenant_endpoint,
                d.payload,
                d.attempts, d.created_at,
                d.tenant_endpoint and t.webhook_disabled_at is not null as endpoint_disabled,
                (select traceparent from jobs j where j.id = d.job_id) as traceparent",
    )
    .bind(id)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// Stores the body rendered for a delivery's first attempt and returns the stored one: a body
/// stored earlier (by an attempt whose outcome was lost) wins, so every attempt sends the same
/// bytes.
pub async fn keep_payload(pool: &PgPool, id: Uuid, payload: &str) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "update webhook_deliveries set payload = coalesce(payload, $2) where id = $1
      returning payload",
    )
    .bind(id)
    .bind(payload)
    .fetch_one(pool)
    .await
}

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
    sqlx::query(
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
    )
    .bind(id)
    .bind(attempt.attempted_at)
    .bind(attempt.status_code.map(i32::from))
    .bind(i32::try_from(attempt.latency.as_millis()).unwrap_or(i32::MAX))
    .bind(&attempt.error)
    .bind(status)
    .bind(retry_in)
    .bind(verdict == AttemptVerdict::Gone)
    .execute(pool)
    .await?;
    Ok(())
}

/// A delivery as its tenant (and admins) see it.
#[derive(Debug, Clone, Serialize)]
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

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Attempt {
    pub attempted_at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: Uuid,
    event_type: String,
    url: String,
    status: String,
    next_attempt_at: DateTime<Utc>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

/// A tenant's job's deliveries with their attempts, oldest first; another tenant's job has none.
pub async fn for_job(
    pool: &PgPool,
    tenant_id: TenantId,
    job_id: JobId,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "select id, event_type, url, status, next_attempt_at, last_error, created_at, finished_at
           from webhook_deliveries
          where job_id = $1 and tenant_id = $2
          order by created_at, id",
    )
    .bind(job_id)
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
    let attempts: Vec<(Uuid, Attempt)> = sqlx::query_as::<_, AttemptRow>(
        "select delivery_id, attempted_at, status_code, latency_ms, error from webhook_attempts
          where delivery_id = any($1) order by id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|row| (row.delivery_id, row.attempt))
    .collect();
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

#[derive(sqlx::FromRow)]
struct AttemptRow {
    delivery_id: Uuid,
    #[sqlx(flatten)]
    attempt: Attempt,
}

/// A delivery as admins list it, across tenants.
#[derive(Debug, Clone, Serialize)]
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
    #[derive(sqlx::FromRow)]
    struct Row {
        id: Uuid,
        tenant_id: TenantId,
        job_id: Option<JobId>,
        batch_id: Option<BatchId>,
        event_type: String,
        url: String,
        status: String,
        attempts: i32,
        last_error: Option<String>,
        created_at: DateTime<Utc>,
        finished_at: Option<DateTime<Utc>>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "select id, tenant_id, job_id, batch_id, event_type, url, status, attempts, last_error,
                created_at, finished_at
           from webhook_deliveries
          where status = $1 and ($2::timestamptz is null or created_at < $2)
          order by created_at desc
          limit $3",
    )
    .bind(status)
    .bind(before)
    .bind(limit)
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
    let done = sqlx::query(
        "update webhook_deliveries
            set status = 'pending', next_attempt_at = now(), finished_at = null
          where id = $1",
    )
    .bind(id)
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
    sqlx::query_scalar(
        "update webhook_deliveries set next_attempt_at = now()
          where id in (select id from webhook_deliveries
                        where status = 'pending'
                          and next_attempt_at < now() - make_interval(secs => $1)
                        order by next_attempt_at
                        limit $2
                        for update skip locked)
      returning id",
    )
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await
}
