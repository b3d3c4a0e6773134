//! The `jobs` table: intake, reading, cancelling, sweeping and dead letters. A worker's run of a
//! job (claim, finish, park) is in [`super::runs`].

use std::time::Duration;

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::types::ipnetwork::IpNetwork;
use sqlx::{PgExecutor, PgPool};

use super::quotas::Reservation;
use super::runs::Recorded;
use crate::billing;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::{
    BatchId, Job, JobError, JobId, JobKind, JobRequest, JobStatus, TenantId, TokenId, TraceParent,
    Usage,
};

/// Every column a [`Job`] is built from, named by each statement that returns one (and read by
/// name by [`list`]'s, which varies in shape).
#[derive(sqlx::FromRow)]
struct JobRow {
    id: JobId,
    tenant_id: TenantId,
    kind: String,
    status: String,
    model: String,
    provider: Option<String>,
    upstream_model: Option<String>,
    result: Option<Value>,
    error_code: Option<String>,
    error_message: Option<String>,
    prompt_tokens: Option<i32>,
    completion_tokens: Option<i32>,
    total_tokens: Option<i32>,
    attempts: i32,
    metadata: Option<Value>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    cost: Option<Decimal>,
    usage_estimated: Option<bool>,
    unpriced: Option<bool>,
    revision: i32,
    webhook_url: Option<String>,
    batch_id: Option<BatchId>,
    custom_id: Option<String>,
    stream: bool,
    route_reason: Option<String>,
    data_policy: Option<String>,
    dead_lettered_at: Option<DateTime<Utc>>,
}

/// A [`JobRow`] from a `query!` record that names its columns and more (a statement that returns a
/// job beside something else).
macro_rules! job_row {
    ($row:expr) => {{
        let row = $row;
        JobRow {
            id: row.id,
            tenant_id: row.tenant_id,
            kind: row.kind,
            status: row.status,
            model: row.model,
            provider: row.provider,
            upstream_model: row.upstream_model,
            result: row.result,
            error_code: row.error_code,
            error_message: row.error_message,
            prompt_tokens: row.prompt_tokens,
            completion_tokens: row.completion_tokens,
            total_tokens: row.total_tokens,
            attempts: row.attempts,
            metadata: row.metadata,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            cost: row.cost,
            usage_estimated: row.usage_estimated,
            unpriced: row.unpriced,
            revision: row.revision,
            webhook_url: row.webhook_url,
            batch_id: row.batch_id,
            custom_id: row.custom_id,
            stream: row.stream,
            route_reason: row.route_reason,
            data_policy: row.data_policy,
            dead_lettered_at: row.dead_lettered_at,
        }
    }};
}

impl JobRow {
    /// The job and its revision (the id of its latest SSE event).
    fn with_revision(self) -> Result<(Job, i32), sqlx::Error> {
        let revision = self.revision;
        Job::try_from(self).map(|job| (job, revision))
    }
}

impl TryFrom<JobRow> for Job {
    type Error = sqlx::Error;

    fn try_from(row: JobRow) -> Result<Self, Self::Error> {
        let decode = |what: &str, value: &str| {
            sqlx::Error::Decode(format!("jobs row {}: unknown {what} {value:?}", row.id).into())
        };
        let kind = JobKind::parse(&row.kind).ok_or_else(|| decode("kind", &row.kind))?;
        let status = JobStatus::parse(&row.status).ok_or_else(|| decode("status", &row.status))?;
        let error = row.error_code.map(|code| JobError {
            code,
            message: row.error_message.unwrap_or_default(),
        });
        let usage = match (row.prompt_tokens, row.completion_tokens, row.total_tokens) {
            (Some(prompt_tokens), Some(completion_tokens), Some(total_tokens)) => Some(Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens,
                cost: row.cost.map(billing::display),
                estimated: row.usage_estimated.unwrap_or(false),
                unpriced: row.unpriced.unwrap_or(false),
            }),
            _ => None,
        };
        Ok(Job {
            id: row.id,
            kind,
            status,
            model: row.model,
            provider: row.provider,
            upstream_model: row.upstream_model,
            result: row.result,
            error,
            usage,
            attempts: row.attempts,
            metadata: row.metadata,
            webhook_url: row.webhook_url,
            batch_id: row.batch_id,
            custom_id: row.custom_id,
            stream: row.stream,
            route_reason: row.route_reason,
            data_policy: row.data_policy,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
        })
    }
}

/// A job about to be accepted.
pub struct NewJob {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub token_id: Option<TokenId>,
    pub request: JobRequest,
    pub metadata: Option<Value>,
    /// The request's `Origin` (or `Referer`) host and client address, kept for billing.
    pub origin: Option<String>,
    pub client_ip: Option<IpAddr>,
    /// What admission reserved against the tenant's monthly quota, if it has one.
    pub reservation: Option<Reservation>,
    /// Where the job's terminal event is POSTed (checked by the SSRF guard); else the tenant's
    /// endpoint.
    pub webhook_url: Option<String>,
    /// A streaming job: the key of the api instance holding its client, where its text goes.
    pub stream_to: Option<String>,
    /// The trace it belongs to (the accepting span's `traceparent`).
    pub traceparent: Option<TraceParent>,
}

/// Inserts a job as `queued` (not yet published) and returns it as the client will see it.
pub async fn insert(conn: impl PgExecutor<'_>, job: &NewJob) -> Result<Job, sqlx::Error> {
    let request =
        serde_json::to_value(&job.request).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let reservation = job.reservation.as_ref();
    let row = sqlx::query_as!(
        JobRow,
        r#"insert into jobs (id, tenant_id, token_id, kind, status, model, request, metadata,
                           origin, client_ip, reserved_tokens, reserved_cost, reserved_month,
                           webhook_url, stream, stream_to, traceparent)
         values ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::text is not null,
                 $14, $15)
         returning id as "id: JobId", tenant_id as "tenant_id: TenantId", kind, status, model, provider,
                upstream_model, result, error_code, error_message, prompt_tokens,
                completion_tokens, total_tokens, attempts, metadata, created_at, started_at,
                finished_at, cost, usage_estimated, unpriced, revision, webhook_url,
                batch_id as "batch_id: BatchId", custom_id, stream, route_reason, data_policy,
                dead_lettered_at"#,
        job.id as JobId,
        job.tenant_id as TenantId,
        job.token_id as Option<TokenId>,
        job.request.kind().as_str(),
        job.request.model().as_str(),
        request,
        job.metadata,
        job.origin,
        job.client_ip.map(IpNetwork::from),
        reservation.map(|r| r.tokens),
        reservation.map(|r| r.cost),
        reservation.map(|r| r.month),
        job.webhook_url,
        job.stream_to,
        job.traceparent.map(|t| t.to_string()),
    )
    .fetch_one(conn)
    .await?;
    row.try_into()
}

/// A tenant's job; another tenant's job is `None`, exactly like a job that does not exist.
pub async fn get(
    pool: &PgPool,
    tenant_id: TenantId,
    id: JobId,
) -> Result<Option<Job>, sqlx::Error> {
    let found = get_with_revision(pool, tenant_id, id).await?;
    Ok(found.map(|(job, _)| job))
}

/// A tenant's job and its revision (bumped at each status change: the id of its SSE events).
pub async fn get_with_revision(
    pool: &PgPool,
    tenant_id: TenantId,
    id: JobId,
) -> Result<Option<(Job, i32)>, sqlx::Error> {
    let row = sqlx::query_as!(
        JobRow,
        r#"select id as "id: JobId", tenant_id as "tenant_id: TenantId", kind, status, model, provider,
                upstream_model, result, error_code, error_message, prompt_tokens,
                completion_tokens, total_tokens, attempts, metadata, created_at, started_at,
                finished_at, cost, usage_estimated, unpriced, revision, webhook_url,
                batch_id as "batch_id: BatchId", custom_id, stream, route_reason, data_policy,
                dead_lettered_at
           from jobs where id = $1 and tenant_id = $2"#,
        id as JobId,
        tenant_id as TenantId,
    )
    .fetch_optional(pool)
    .await?;
    row.map(JobRow::with_revision).transpose()
}

/// Whether the tenant has a job with this id (another tenant's is `false`, like one that does
/// not exist): the check before reading what belongs to a job.
pub async fn exists(pool: &PgPool, tenant_id: TenantId, id: JobId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from jobs where id = $1 and tenant_id = $2) as "exists!""#,
        id as JobId,
        tenant_id as TenantId,
    )
    .fetch_one(pool)
    .await
}

/// A tenant's jobs, newest first, strictly older than `before` when given (the cursor).
pub async fn list(
    pool: &PgPool,
    tenant_id: TenantId,
    status: Option<JobStatus>,
    batch_id: Option<BatchId>,
    before: Option<JobId>,
    limit: i64,
) -> Result<Vec<Job>, sqlx::Error> {
    // Assembled with `QueryBuilder`: failed and cancelled jobs, and a batch's items, have partial
    // indexes (see the migrations), and the planner uses one only when the statement repeats its
    // predicate literally, so the statement's shape follows the filters asked for.
    let mut query: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "select id, tenant_id, kind, status, model, provider, upstream_model, result, error_code,
                error_message, prompt_tokens, completion_tokens, total_tokens, attempts, metadata,
                created_at, started_at, finished_at, cost, usage_estimated, unpriced, revision,
                webhook_url, batch_id, custom_id, stream, route_reason, data_policy,
                dead_lettered_at
           from jobs where tenant_id = ",
    );
    query.push_bind(tenant_id);
    if let Some(status) = status {
        query.push(" and status = ").push_bind(status.as_str());
        if matches!(status, JobStatus::Failed | JobStatus::Cancelled) {
            query.push(" and status in ('failed', 'cancelled')");
        }
    }
    if let Some(before) = before {
        query.push(" and id < ").push_bind(before);
    }
    if let Some(batch_id) = batch_id {
        query
            .push(" and batch_id = ")
            .push_bind(batch_id)
            .push(" and batch_id is not null");
    }
    query.push(" order by id desc limit ").push_bind(limit);
    let rows: Vec<JobRow> = query.build_query_as().fetch_all(pool).await?;
    rows.into_iter().map(Job::try_from).collect()
}

/// Records that the broker confirmed these jobs' messages, so the sweeper leaves them alone.
/// Called in batches: one statement for many confirmed publishes. A job a worker already claimed
/// is skipped: the sweeper only looks at `queued` and `retrying` jobs, and not rewriting the row
/// saves Postgres a tuple version per job when the queue is short.
pub async fn mark_published(pool: &PgPool, ids: &[JobId]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update jobs set published_at = now()
          where id = any($1) and status in ('queued', 'retrying') and published_at is null",
        ids as &[JobId],
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// What became of a cancel request.
pub enum CancelOutcome {
    /// Cancelled now: the job, its new revision, and the webhook delivery written for it, if any.
    Cancelled {
        job: Job,
        revision: i32,
        delivery: Option<Uuid>,
    },
    /// Running: the cancel is recorded, and the worker holding the job ends it (the caller tells
    /// the workers, see `Broker::publish_cancel`).
    Requested(Job),
    /// Already finished: it can no longer be cancelled.
    TooLate(Job),
    NotFound,
}

/// Cancels a job that no worker has started; for a running job, records the request, which the
/// worker holding it acts on (it aborts the provider call and ends the job `cancelled`, billing
/// what was generated). The conditional updates make a race with a claiming worker harmless: a
/// claim that wins ends the job as soon as it sees the request.
pub async fn cancel(
    pool: &PgPool,
    tenant_id: TenantId,
    id: JobId,
) -> Result<CancelOutcome, sqlx::Error> {
    // Ends the job, releases its reservation and writes its webhook delivery: the same rule as
    // the end of a worker's run (`runs::finish`), written out so the compiler checks each.
    let cancelled = sqlx::query!(
        r#"with done as (
            update jobs set status = 'cancelled', finished_at = now(), revision = revision + 1,
                   error_code = 'cancelled', error_message = 'cancelled by the client'
             where id = $1 and tenant_id = $2 and status in ('pending', 'queued', 'retrying')
             returning *
         ), release as (
            update quota_months q
               set reserved_tokens = q.reserved_tokens - done.reserved_tokens,
                   reserved_cost = q.reserved_cost - done.reserved_cost
              from done
             where q.tenant_id = done.tenant_id and q.month = done.reserved_month
         ), hook as (
            insert into webhook_deliveries
                   (id, tenant_id, job_id, event_type, url, tenant_endpoint)
            select gen_random_uuid(), done.tenant_id, done.id, 'job.' || done.status,
                   coalesce(done.webhook_url, t.webhook_url), done.webhook_url is null
              from done join tenants t on t.id = done.tenant_id
             where done.batch_id is null
               and (done.webhook_url is not null
                    or (t.webhook_url is not null and t.webhook_disabled_at is null))
            returning id
         )
         select id as "id!: JobId", tenant_id as "tenant_id!: TenantId", kind as "kind!",
                status as "status!", model as "model!", provider, upstream_model, result,
                error_code, error_message, prompt_tokens, completion_tokens, total_tokens,
                attempts as "attempts!", metadata, created_at as "created_at!", started_at,
                finished_at, cost, usage_estimated, unpriced, revision as "revision!",
                webhook_url, batch_id as "batch_id: BatchId", custom_id, stream as "stream!",
                route_reason, data_policy, dead_lettered_at
, (select id from hook) as delivery
           from done"#,
        id as JobId,
        tenant_id as TenantId,
    )
    .fetch_optional(pool)
    .await?;
    match cancelled {
        Some(row) => Ok(CancelOutcome::Cancelled {
            revision: row.revision,
            delivery: row.delivery,
            job: job_row!(row).try_into()?,
        }),
        None => request_cancel(pool, tenant_id, id).await,
    }
}

/// Records a cancel asked for while the job runs (kept from the first request).
async fn request_cancel(
    pool: &PgPool,
    tenant_id: TenantId,
    id: JobId,
) -> Result<CancelOutcome, sqlx::Error> {
    let running = sqlx::query_as!(
        JobRow,
        r#"update jobs set cancel_requested_at = coalesce(cancel_requested_at, now())
          where id = $1 and tenant_id = $2 and status = 'running'
          returning id as "id: JobId", tenant_id as "tenant_id: TenantId", kind, status, model, provider,
                upstream_model, result, error_code, error_message, prompt_tokens,
                completion_tokens, total_tokens, attempts, metadata, created_at, started_at,
                finished_at, cost, usage_estimated, unpriced, revision, webhook_url,
                batch_id as "batch_id: BatchId", custom_id, stream, route_reason, data_policy,
                dead_lettered_at"#,
        id as JobId,
        tenant_id as TenantId,
    )
    .fetch_optional(pool)
    .await?;
    if let Some(row) = running {
        return Ok(CancelOutcome::Requested(row.try_into()?));
    }
    Ok(match get(pool, tenant_id, id).await? {
        // Claimed between the two statements: ask again.
        Some(job) if !job.status.is_terminal() => Box::pin(cancel(pool, tenant_id, id)).await?,
        Some(job) => CancelOutcome::TooLate(job),
        None => CancelOutcome::NotFound,
    })
}

/// Marks a job failed without a claim, for a message the broker dead-lettered (poison), and notes
/// when, so admins can list it and requeue it. `None` if the job had already ended.
pub async fn fail_dead_lettered(
    pool: &PgPool,
    id: JobId,
    error: &JobError,
) -> Result<Option<Recorded>, sqlx::Error> {
    // Ends the job like the end of a worker's run (`runs::finish`): its reservation released, its
    // webhook delivery written.
    sqlx::query_as!(
        Recorded,
        r#"with done as (
            update jobs set status = 'failed', error_code = $2, error_message = $3,
                   finished_at = now(), lease_expires_at = null, retry_at = null,
                   dead_lettered_at = now(), revision = revision + 1
             where id = $1 and status not in ('succeeded', 'failed', 'cancelled')
             returning *
         ), release as (
            update quota_months q
               set reserved_tokens = q.reserved_tokens - done.reserved_tokens,
                   reserved_cost = q.reserved_cost - done.reserved_cost
              from done
             where q.tenant_id = done.tenant_id and q.month = done.reserved_month
         ), hook as (
            insert into webhook_deliveries
                   (id, tenant_id, job_id, event_type, url, tenant_endpoint)
            select gen_random_uuid(), done.tenant_id, done.id, 'job.' || done.status,
                   coalesce(done.webhook_url, t.webhook_url), done.webhook_url is null
              from done join tenants t on t.id = done.tenant_id
             where done.batch_id is null
               and (done.webhook_url is not null
                    or (t.webhook_url is not null and t.webhook_disabled_at is null))
            returning id
         )
         select revision as "revision!", (select id from hook) as delivery from done"#,
        id as JobId,
        error.code,
        error.message,
    )
    .fetch_optional(pool)
    .await
}

/// A job whose message may be missing (see [`unpublished`]).
#[derive(Debug, Clone, Copy)]
pub struct Unpublished {
    pub id: JobId,
    /// A batch item, for the bulk queue.
    pub bulk: bool,
    /// The trace its message carries.
    pub trace: Option<TraceParent>,
}

/// Jobs whose message may be missing: `queued` ones never confirmed published (the api or
/// dispatcher died between commit and publish, or a lease ran out), and `retrying` ones whose
/// delayed message is overdue.
pub async fn unpublished(
    pool: &PgPool,
    older_than: Duration,
    overdue: Duration,
    limit: i64,
) -> Result<Vec<Unpublished>, sqlx::Error> {
    // Each arm matches one partial index (jobs_queued, jobs_batch_released, jobs_retrying). A
    // batch item counts from its release, not its creation.
    let rows = sqlx::query!(
        r#"(select id as "id!: JobId", false as "bulk!", traceparent from jobs
           where status = 'queued' and published_at is null and batch_id is null
             and created_at < now() - make_interval(secs => $1)
           order by created_at
           limit $3)
         union all
         (select id, true, traceparent from jobs
           where status = 'queued' and published_at is null and batch_id is not null
             and released_at < now() - make_interval(secs => $1)
           limit $3)
         union all
         (select id, batch_id is not null, traceparent from jobs
           where status = 'retrying'
             and retry_at < now() - make_interval(secs => $1)
             and (published_at is null or retry_at < now() - make_interval(secs => $2))
           order by retry_at
           limit $3)"#,
        older_than.as_secs_f64(),
        overdue.as_secs_f64(),
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let (id, trace) = with_trace((row.id, row.traceparent));
            Unpublished {
                id,
                bulk: row.bulk,
                trace,
            }
        })
        .collect())
}

/// A job id with its stored `traceparent`, parsed.
pub(super) fn with_trace((id, trace): (JobId, Option<String>)) -> (JobId, Option<TraceParent>) {
    (id, trace.as_deref().and_then(TraceParent::parse))
}

/// Puts `running` jobs whose lease ran out back to `queued`, unpublished, so the sweeper sends them
/// again: their worker died and their message is gone (dead-lettered or purged). The old claim is
/// cleared, so should that worker still be alive it can no longer finish the job. Returns each
/// released job with its new revision.
pub async fn release_abandoned(
    pool: &PgPool,
    limit: i64,
) -> Result<Vec<(JobId, i32)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"update jobs set status = 'queued', claim_id = null, lease_expires_at = null,
                         published_at = null, revision = revision + 1
          where id in (select id from jobs
                        where status = 'running' and lease_expires_at < now()
                        order by lease_expires_at
                        limit $1
                        for update skip locked)
      returning id as "id: JobId", revision"#,
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, row.revision)).collect())
}

/// A dead-lettered job, as admins list it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub tenant_id: TenantId,
    pub dead_lettered_at: DateTime<Utc>,
    pub job: Job,
}

/// Jobs whose message the broker dead-lettered, across tenants, newest first; strictly older than
/// `before` when given (the cursor).
pub async fn dead_lettered(
    pool: &PgPool,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let rows = sqlx::query_as!(
        JobRow,
        r#"select id as "id: JobId", tenant_id as "tenant_id: TenantId", kind, status, model, provider,
                upstream_model, result, error_code, error_message, prompt_tokens,
                completion_tokens, total_tokens, attempts, metadata, created_at, started_at,
                finished_at, cost, usage_estimated, unpriced, revision, webhook_url,
                batch_id as "batch_id: BatchId", custom_id, stream, route_reason, data_policy,
                dead_lettered_at
           from jobs
          where dead_lettered_at is not null and ($1::timestamptz is null or dead_lettered_at < $1)
          order by dead_lettered_at desc
          limit $2"#,
        before,
        limit,
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(DeadLetter {
                tenant_id: row.tenant_id,
                dead_lettered_at: row.dead_lettered_at.unwrap_or(row.created_at),
                job: row.try_into()?,
            })
        })
        .collect()
}

/// What asking to requeue a dead-lettered job came to.
pub enum Requeued {
    /// The job and its new revision: a single job `queued` (to publish), a batch item `pending`
    /// (its batch's dispatcher releases it to the bulk queue).
    Job(Box<Job>, i32),
    /// A batch item whose batch was cancelled: it stays failed.
    BatchCancelled,
    /// No dead-lettered failure has that id.
    NotFound,
}

/// Gives a dead-lettered job a fresh start, its error and run counters cleared (its attempt
/// history stays): a single job `queued` and unpublished; a batch item `pending` in its lane, its
/// batch reopened if it had completed (it ends again, and announces it again, once the item has).
pub async fn requeue_dead_lettered(pool: &PgPool, id: JobId) -> Result<Requeued, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let batch_status = sqlx::query_scalar!(
        r#"select b.status as "status?" from jobs j left join batches b on b.id = j.batch_id
          where j.id = $1 and j.status = 'failed' and j.dead_lettered_at is not null
            for update of j"#,
        id as JobId,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let refused = match batch_status.as_ref() {
        None => Some(Requeued::NotFound),
        Some(Some(status)) if matches!(status.as_str(), "cancelling" | "cancelled") => {
            Some(Requeued::BatchCancelled)
        }
        Some(_) => None,
    };
    if let Some(refused) = refused {
        // At once: the row stays locked until the transaction ends.
        tx.rollback().await?;
        return Ok(refused);
    }
    let row = sqlx::query_as!(
        JobRow,
        r#"update jobs
            set status = case when batch_id is null then 'queued' else 'pending' end,
                error_code = null, error_message = null, finished_at = null,
                dead_lettered_at = null, claims = 0, retries = 0, claim_id = null,
                lease_expires_at = null, published_at = null, retry_at = null,
                released_at = null, revision = revision + 1,
                -- its reservation was released when it failed
                reserved_tokens = null, reserved_cost = null, reserved_month = null
          where id = $1
          returning id as "id: JobId", tenant_id as "tenant_id: TenantId", kind, status, model, provider,
                upstream_model, result, error_code, error_message, prompt_tokens,
                completion_tokens, total_tokens, attempts, metadata, created_at, started_at,
                finished_at, cost, usage_estimated, unpriced, revision, webhook_url,
                batch_id as "batch_id: BatchId", custom_id, stream, route_reason, data_policy,
                dead_lettered_at"#,
        id as JobId,
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        "update batches set status = 'in_progress', finished_at = null, revision = revision + 1
          where id = (select batch_id from jobs where id = $1) and status = 'completed'",
        id as JobId,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let (job, revision) = row.with_revision()?;
    Ok(Requeued::Job(Box::new(job), revision))
}
