//! The `jobs` table: intake and reading here; cancelling ([`cancel`]), what the sweeper finds
//! ([`sweep`]) and dead letters ([`dead_letters`]) beside. A worker's run of a job (claim, finish,
//! park) is in [`super::runs`].

mod cancel;
mod dead_letters;
mod sweep;

use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::types::ipnetwork::IpNetwork;
use sqlx::{PgExecutor, PgPool};

use sqlx::{Postgres, QueryBuilder};

use super::quotas::Reservation;
use crate::billing;
use crate::domain::cache::{CacheState, JobCache};

use crate::domain::{
    BatchId, Job, JobError, JobId, JobKind, JobRequest, JobStatus, TenantId, TokenId, TraceParent,
    Usage,
};

pub use cancel::{CancelOutcome, cancel};
pub use dead_letters::{
    DeadLetter, Requeued, dead_lettered, fail_dead_lettered, requeue_dead_lettered,
};
pub(in crate::db) use sweep::with_trace;
pub use sweep::{Unpublished, release_abandoned, unpublished};

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
    reasoning_tokens: Option<i32>,
    cached_tokens: Option<i32>,
    cache_write_tokens: Option<i32>,
    error_body: Option<Value>,
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
    cache: Option<String>,
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
            reasoning_tokens: row.reasoning_tokens,
            cached_tokens: row.cached_tokens,
            cache_write_tokens: row.cache_write_tokens,
            error_body: row.error_body,
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
            cache: row.cache,
        }
    }};
}

use job_row;

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
            code: code.into(),
            message: row.error_message.unwrap_or_default(),
            upstream: row.error_body.map(Box::new),
        });
        let usage = match (row.prompt_tokens, row.completion_tokens, row.total_tokens) {
            (Some(prompt_tokens), Some(completion_tokens), Some(total_tokens)) => Some(Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens,
                reasoning_tokens: row.reasoning_tokens.unwrap_or(0),
                cached_tokens: row.cached_tokens.unwrap_or(0),
                cache_write_tokens: row.cache_write_tokens.unwrap_or(0),
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
            cache: row.cache.as_deref().and_then(CacheState::parse),
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
    /// What the response cache does for it (nothing, by default).
    pub cache: JobCache,
}

/// Inserts a job as `queued` (not yet published) and returns it as the client will see it.
pub async fn insert(conn: impl PgExecutor<'_>, job: &NewJob) -> Result<Job, sqlx::Error> {
    let mut inserted = insert_many(conn, std::slice::from_ref(job)).await?;
    inserted.pop().ok_or(sqlx::Error::RowNotFound)
}

/// Inserts jobs as `queued` (not yet published) in one statement, so in one commit outside a
/// transaction, and returns them as their clients will see them, in the order given.
pub async fn insert_many(
    conn: impl PgExecutor<'_>,
    jobs: &[NewJob],
) -> Result<Vec<Job>, sqlx::Error> {
    let columns = NewJobColumns::new(jobs)?;
    let rows = sqlx::query_as!(
        JobRow,
        r#"insert into jobs (id, tenant_id, token_id, kind, status, model, request, metadata,
                           origin, client_ip, reserved_tokens, reserved_cost, reserved_month,
                           webhook_url, stream, stream_to, traceparent, cache, cache_key,
                           cache_ttl_secs)
         select id, tenant_id, token_id, kind, 'queued', model, request, metadata, origin,
                client_ip, reserved_tokens, reserved_cost, reserved_month, webhook_url,
                stream_to is not null, stream_to, traceparent, cache, cache_key, cache_ttl_secs
           from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::jsonb[],
                       $7::jsonb[], $8::text[], $9::inet[], $10::bigint[], $11::numeric[],
                       $12::date[], $13::text[], $14::text[], $15::text[], $16::text[],
                       $17::bytea[], $18::int[])
                as j(id, tenant_id, token_id, kind, model, request, metadata, origin, client_ip,
                     reserved_tokens, reserved_cost, reserved_month, webhook_url, stream_to,
                     traceparent, cache, cache_key, cache_ttl_secs)
         returning id as "id: JobId", tenant_id as "tenant_id: TenantId", kind, status, model, provider,
                upstream_model, result, error_code, error_message, prompt_tokens,
                completion_tokens, total_tokens,
                reasoning_tokens, cached_tokens, cache_write_tokens, error_body, attempts, metadata, created_at, started_at,
                finished_at, cost, usage_estimated, unpriced, revision, webhook_url,
                batch_id as "batch_id: BatchId", custom_id, stream, route_reason, data_policy,
                dead_lettered_at, cache"#,
        &columns.id as &[JobId],
        &columns.tenant_id as &[TenantId],
        &columns.token_id as &[Option<TokenId>],
        &columns.kind as &[&str],
        &columns.model as &[&str],
        &columns.request,
        &columns.metadata as &[Option<Value>],
        &columns.origin as &[Option<&str>],
        &columns.client_ip as &[Option<IpNetwork>],
        &columns.reserved_tokens as &[Option<i64>],
        &columns.reserved_cost as &[Option<Decimal>],
        &columns.reserved_month as &[Option<NaiveDate>],
        &columns.webhook_url as &[Option<&str>],
        &columns.stream_to as &[Option<&str>],
        &columns.traceparent as &[Option<String>],
        &columns.cache as &[Option<&str>],
        &columns.cache_key as &[Option<Vec<u8>>],
        &columns.cache_ttl_secs as &[Option<i32>],
    )
    .fetch_all(conn)
    .await?;
    in_order(jobs, rows)
}

/// [`insert_many`] tried again after its commit's answer was lost (the connection broke as it
/// committed): it finds its own effect — a job already stored under its id (ids are new UUIDv7s,
/// so only the earlier try can have written it; its tenant is checked too) is returned as stored,
/// not refused as a duplicate — so the request that wrote it is answered `202`, not an error for a
/// job that will run anyway. A statement of its own, not the first try's: reading `jobs` back
/// costs its planning a look at every partition, which the first try has no need of.
pub async fn insert_many_again(
    conn: impl PgExecutor<'_>,
    jobs: &[NewJob],
) -> Result<Vec<Job>, sqlx::Error> {
    let columns = NewJobColumns::new(jobs)?;
    // The second branch reads the rows from before the insert: only jobs an earlier try wrote.
    let rows = sqlx::query_as!(
        JobRow,
        r#"with new as (
            insert into jobs (id, tenant_id, token_id, kind, status, model, request, metadata,
                              origin, client_ip, reserved_tokens, reserved_cost, reserved_month,
                              webhook_url, stream, stream_to, traceparent, cache, cache_key,
                              cache_ttl_secs)
            select id, tenant_id, token_id, kind, 'queued', model, request, metadata, origin,
                   client_ip, reserved_tokens, reserved_cost, reserved_month, webhook_url,
                   stream_to is not null, stream_to, traceparent, cache, cache_key,
                   cache_ttl_secs
              from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
                          $6::jsonb[], $7::jsonb[], $8::text[], $9::inet[], $10::bigint[],
                          $11::numeric[], $12::date[], $13::text[], $14::text[], $15::text[],
                          $16::text[], $17::bytea[], $18::int[])
                   as j(id, tenant_id, token_id, kind, model, request, metadata, origin,
                        client_ip, reserved_tokens, reserved_cost, reserved_month, webhook_url,
                        stream_to, traceparent, cache, cache_key, cache_ttl_secs)
            on conflict (id) do nothing
            returning *
         ), written as (
            select * from new
             union all
            select * from jobs where id = any($1::uuid[])
         )
         select id as "id!: JobId", tenant_id as "tenant_id!: TenantId", kind as "kind!",
                status as "status!", model as "model!", provider, upstream_model, result,
                error_code, error_message, prompt_tokens, completion_tokens, total_tokens,
                reasoning_tokens, cached_tokens, cache_write_tokens, error_body,
                attempts as "attempts!", metadata, created_at as "created_at!", started_at,
                finished_at, cost, usage_estimated, unpriced, revision as "revision!",
                webhook_url, batch_id as "batch_id: BatchId", custom_id, stream as "stream!",
                route_reason, data_policy, dead_lettered_at, cache
           from written"#,
        &columns.id as &[JobId],
        &columns.tenant_id as &[TenantId],
        &columns.token_id as &[Option<TokenId>],
        &columns.kind as &[&str],
        &columns.model as &[&str],
        &columns.request,
        &columns.metadata as &[Option<Value>],
        &columns.origin as &[Option<&str>],
        &columns.client_ip as &[Option<IpNetwork>],
        &columns.reserved_tokens as &[Option<i64>],
        &columns.reserved_cost as &[Option<Decimal>],
        &columns.reserved_month as &[Option<NaiveDate>],
        &columns.webhook_url as &[Option<&str>],
        &columns.stream_to as &[Option<&str>],
        &columns.traceparent as &[Option<String>],
        &columns.cache as &[Option<&str>],
        &columns.cache_key as &[Option<Vec<u8>>],
        &columns.cache_ttl_secs as &[Option<i32>],
    )
    .fetch_all(conn)
    .await?;
    in_order(jobs, rows)
}

/// The jobs written, in the order of `jobs` (`returning` need not follow it), each its own
/// tenant's.
fn in_order(jobs: &[NewJob], rows: Vec<JobRow>) -> Result<Vec<Job>, sqlx::Error> {
    let mut by_id: std::collections::HashMap<JobId, JobRow> =
        rows.into_iter().map(|row| (row.id, row)).collect();
    jobs.iter()
        .map(|job| {
            by_id
                .remove(&job.id)
                .filter(|row| row.tenant_id == job.tenant_id)
                .ok_or(sqlx::Error::RowNotFound)
                .and_then(Job::try_from)
        })
        .collect()
}

/// New jobs as column arrays, for one multi-row insert.
#[derive(Default)]
struct NewJobColumns<'a> {
    id: Vec<JobId>,
    tenant_id: Vec<TenantId>,
    token_id: Vec<Option<TokenId>>,
    kind: Vec<&'static str>,
    model: Vec<&'a str>,
    request: Vec<Value>,
    metadata: Vec<Option<Value>>,
    origin: Vec<Option<&'a str>>,
    client_ip: Vec<Option<IpNetwork>>,
    reserved_tokens: Vec<Option<i64>>,
    reserved_cost: Vec<Option<Decimal>>,
    reserved_month: Vec<Option<NaiveDate>>,
    webhook_url: Vec<Option<&'a str>>,
    stream_to: Vec<Option<&'a str>>,
    traceparent: Vec<Option<String>>,
    cache: Vec<Option<&'static str>>,
    cache_key: Vec<Option<Vec<u8>>>,
    cache_ttl_secs: Vec<Option<i32>>,
}

impl<'a> NewJobColumns<'a> {
    fn new(jobs: &'a [NewJob]) -> Result<Self, sqlx::Error> {
        let mut c = Self::default();
        for job in jobs {
            let request =
                serde_json::to_value(&job.request).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            let reservation = job.reservation.as_ref();
            c.id.push(job.id);
            c.tenant_id.push(job.tenant_id);
            c.token_id.push(job.token_id);
            c.kind.push(job.request.kind().as_str());
            c.model.push(job.request.model().as_str());
            c.request.push(request);
            c.metadata.push(job.metadata.clone());
            c.origin.push(job.origin.as_deref());
            c.client_ip.push(job.client_ip.map(IpNetwork::from));
            c.reserved_tokens.push(reservation.map(|r| r.tokens));
            c.reserved_cost.push(reservation.map(|r| r.cost));
            c.reserved_month.push(reservation.map(|r| r.month));
            c.webhook_url.push(job.webhook_url.as_deref());
            c.stream_to.push(job.stream_to.as_deref());
            c.traceparent.push(job.traceparent.map(|t| t.to_string()));
            c.cache.push(job.cache.state.map(CacheState::as_str));
            c.cache_key.push(job.cache.key.map(|k| k.0.to_vec()));
            c.cache_ttl_secs
                .push(job.cache.ttl_secs.and_then(|t| i32::try_from(t).ok()));
        }
        Ok(c)
    }
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
    pool: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: JobId,
) -> Result<Option<(Job, i32)>, sqlx::Error> {
    let row = sqlx::query_as!(
        JobRow,
        r#"select id as "id: JobId", tenant_id as "tenant_id: TenantId", kind, status, model, provider,
                upstream_model, result, error_code, error_message, prompt_tokens,
                completion_tokens, total_tokens,
                reasoning_tokens, cached_tokens, cache_write_tokens, error_body, attempts, metadata, created_at, started_at,
                finished_at, cost, usage_estimated, unpriced, revision, webhook_url,
                batch_id as "batch_id: BatchId", custom_id, stream, route_reason, data_policy,
                dead_lettered_at, cache
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

/// Rewrites a running job's request once its worker fetched its images (naming them now by
/// their hash), while the claim `claim_id` holds; `false` when it no longer does.
pub async fn keep_fetched(
    conn: impl PgExecutor<'_>,
    id: JobId,
    claim_id: uuid::Uuid,
    request: &JobRequest,
) -> Result<bool, sqlx::Error> {
    let request = serde_json::to_value(request).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let updated = sqlx::query!(
        "update jobs set request = $3
          where id = $1 and claim_id = $2 and status = 'running'",
        id as JobId,
        claim_id,
        request,
    )
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
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
                error_message, prompt_tokens, completion_tokens, total_tokens,
                reasoning_tokens, cached_tokens, cache_write_tokens, error_body, attempts, metadata,
                created_at, started_at, finished_at, cost, usage_estimated, unpriced, revision,
                webhook_url, batch_id, custom_id, stream, route_reason, data_policy,
                dead_lettered_at, cache
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
///
/// It never waits for a row: one another statement holds (a claim, a run's end) is being claimed
/// or ended, and needs no mark. Waiting was a deadlock with the closing statement (issue 38): an
/// update that finds a row changed since its snapshot locks the row's newest version before it
/// rechecks it, and keeps that lock when the row no longer qualifies — here a job just claimed —
/// so this statement held a running job while waiting for another that a run's end held, and the
/// run's end, locking its jobs in order, came to the first: one of the two was killed after
/// Postgres's `deadlock_timeout` (1 s), the tail of the interactive path's latency under load.
pub async fn mark_published(pool: &PgPool, ids: &[JobId]) -> Result<(), sqlx::Error> {
    let (low, high) = crate::db::id_bounds(ids);
    sqlx::query!(
        "with free as (
            select id from jobs
             where id = any($1) and id between $2 and $3
               and status in ('queued', 'retrying') and published_at is null
               for update skip locked
         )
         update jobs set published_at = now()
           from free
          where jobs.id = free.id and jobs.id = any($1) and jobs.id between $2 and $3",
        ids as &[JobId],
        low as JobId,
        high as JobId,
    )
    .execute(pool)
    .await?;
    Ok(())
}
