//! The `jobs` and `job_attempts` tables: intake, claiming, finishing and sweeping.
//!
//! The rules of the system live in the `where` clauses here: a job is claimed only from a claimable
//! state, finished only by the claim that holds it, and its attempt row is written in the same
//! statement as its outcome.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{
    Job, JobError, JobId, JobKind, JobRequest, JobStatus, TenantId, TokenId, Usage,
};

/// Every column a [`Job`] is built from.
const JOB_COLUMNS: &str = "id, kind, status, model, provider, upstream_model, result, error_code, \
     error_message, prompt_tokens, completion_tokens, total_tokens, attempts, metadata, created_at, \
     started_at, finished_at";

#[derive(sqlx::FromRow)]
struct JobRow {
    id: JobId,
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
                cost: None,
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
}

/// Inserts a job as `queued` (not yet published) and returns it as the client will see it.
pub async fn insert(pool: &PgPool, job: &NewJob) -> Result<Job, sqlx::Error> {
    let request =
        serde_json::to_value(&job.request).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let row: JobRow = sqlx::query_as(&format!(
        "insert into jobs (id, tenant_id, token_id, kind, status, model, request, metadata)
         values ($1, $2, $3, $4, 'queued', $5, $6, $7)
         returning {JOB_COLUMNS}"
    ))
    .bind(job.id)
    .bind(job.tenant_id)
    .bind(job.token_id)
    .bind(job.request.kind().as_str())
    .bind(job.request.model().as_str())
    .bind(request)
    .bind(&job.metadata)
    .fetch_one(pool)
    .await?;
    row.try_into()
}

/// A tenant's job; another tenant's job is `None`, exactly like a job that does not exist.
pub async fn get(
    pool: &PgPool,
    tenant_id: TenantId,
    id: JobId,
) -> Result<Option<Job>, sqlx::Error> {
    let row: Option<JobRow> = sqlx::query_as(&format!(
        "select {JOB_COLUMNS} from jobs where id = $1 and tenant_id = $2"
    ))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    row.map(Job::try_from).transpose()
}

/// A tenant's jobs, newest first, strictly older than `before` when given (the cursor).
pub async fn list(
    pool: &PgPool,
    tenant_id: TenantId,
    status: Option<JobStatus>,
    before: Option<JobId>,
    limit: i64,
) -> Result<Vec<Job>, sqlx::Error> {
    // Failed and cancelled jobs have a partial index (see the migration); the planner uses it
    // only when the query repeats its predicate literally.
    let rare_status = match status {
        Some(JobStatus::Failed | JobStatus::Cancelled) => "and status in ('failed', 'cancelled')",
        _ => "",
    };
    let rows: Vec<JobRow> = sqlx::query_as(&format!(
        "select {JOB_COLUMNS} from jobs
          where tenant_id = $1
            and ($2::text is null or status = $2) {rare_status}
            and ($3::uuid is null or id < $3)
          order by id desc
          limit $4"
    ))
    .bind(tenant_id)
    .bind(status.map(JobStatus::as_str))
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(Job::try_from).collect()
}

/// Records that the broker confirmed these jobs' messages, so the sweeper leaves them alone.
/// Called in batches: one statement for many confirmed publishes. A job a worker already claimed
/// is skipped: the sweeper only looks at `queued` jobs, and not rewriting the row saves Postgres
/// a tuple version per job when the queue is short.
pub async fn mark_published(pool: &PgPool, ids: &[JobId]) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    sqlx::query(
        "update jobs set published_at = now()
          where id = any($1) and status = 'queued' and published_at is null",
    )
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// What became of a cancel request.
pub enum CancelOutcome {
    Cancelled(Job),
    /// Already running or finished: it can no longer be cancelled.
    TooLate(Job),
    NotFound,
}

/// Cancels a job that no worker has started. A running job is left to finish (its provider call is
/// already paid for); the conditional update makes a race with a claiming worker harmless.
pub async fn cancel(
    pool: &PgPool,
    tenant_id: TenantId,
    id: JobId,
) -> Result<CancelOutcome, sqlx::Error> {
    let row: Option<JobRow> = sqlx::query_as(&format!(
        "update jobs set status = 'cancelled', finished_at = now(),
                error_code = 'cancelled', error_message = 'cancelled by the client'
          where id = $1 and tenant_id = $2 and status in ('pending', 'queued', 'retrying')
          returning {JOB_COLUMNS}"
    ))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => Ok(CancelOutcome::Cancelled(row.try_into()?)),
        None => Ok(match get(pool, tenant_id, id).await? {
            Some(job) => CancelOutcome::TooLate(job),
            None => CancelOutcome::NotFound,
        }),
    }
}

/// A job a worker now holds.
pub struct ClaimedJob {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub request: JobRequest,
    /// How many times the job has been claimed, this claim included.
    pub claims: i32,
}

/// Claims a job for one worker run.
///
/// Claimable: `queued` or `retrying`; or `running` when the message is a broker redelivery (the
/// worker that held it died before acking) or the previous claim's lease ran out. Anything else —
/// a finished or cancelled job, or a duplicate message for a job another worker is running — is
/// `None`, and the caller acks the message without working it.
pub async fn claim(
    pool: &PgPool,
    id: JobId,
    claim_id: Uuid,
    redelivered: bool,
    lease: Duration,
) -> Result<Option<ClaimedJob>, sqlx::Error> {
    let row: Option<(TenantId, Value, i32)> = sqlx::query_as(
        "update jobs
            set status = 'running', claim_id = $2, attempts = attempts + 1,
                started_at = coalesce(started_at, now()),
                lease_expires_at = now() + make_interval(secs => $4)
          where id = $1
            and (status in ('queued', 'retrying')
                 or (status = 'running' and ($3 or lease_expires_at < now())))
          returning tenant_id, request, attempts",
    )
    .bind(id)
    .bind(claim_id)
    .bind(redelivered)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    let Some((tenant_id, request, claims)) = row else {
        return Ok(None);
    };
    let request = serde_json::from_value(request).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Some(ClaimedJob {
        id,
        tenant_id,
        request,
        claims,
    }))
}

/// One provider call, as recorded in `job_attempts`.
pub struct AttemptRecord {
    pub provider: String,
    pub upstream_model: String,
    pub started_at: DateTime<Utc>,
    pub latency: Duration,
    pub status_code: Option<u16>,
    pub outcome: AttemptOutcome,
    pub error: Option<JobError>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    TransientError,
    PermanentError,
}

impl AttemptOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::TransientError => "transient_error",
            Self::PermanentError => "permanent_error",
        }
    }
}

/// How a claimed job ended.
pub enum Outcome {
    Succeeded {
        provider: String,
        upstream_model: String,
        result: Value,
        prompt_tokens: i32,
        completion_tokens: i32,
    },
    Failed {
        provider: Option<String>,
        upstream_model: Option<String>,
        error: JobError,
    },
}

impl Outcome {
    /// A failure decided before any provider was called (no provider, too many claims).
    pub fn failed_without_call(code: &str, message: impl Into<String>) -> Self {
        Self::Failed {
            provider: None,
            upstream_model: None,
            error: JobError {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }
}

/// Records a claimed job's terminal outcome and its last attempt in one statement (so one commit).
///
/// Returns `false` when the claim was no longer the job's (another worker reclaimed it after a
/// redelivery): nothing is written, and the caller drops its result.
pub async fn finish(
    pool: &PgPool,
    id: JobId,
    claim_id: Uuid,
    outcome: &Outcome,
    attempt: Option<&AttemptRecord>,
) -> Result<bool, sqlx::Error> {
    let (status, provider, upstream_model, result, error, tokens) = match outcome {
        Outcome::Succeeded {
            provider,
            upstream_model,
            result,
            prompt_tokens,
            completion_tokens,
        } => (
            JobStatus::Succeeded,
            Some(provider.as_str()),
            Some(upstream_model.as_str()),
            Some(result),
            None,
            Some((*prompt_tokens, *completion_tokens)),
        ),
        Outcome::Failed {
            provider,
            upstream_model,
            error,
        } => (
            JobStatus::Failed,
            provider.as_deref(),
            upstream_model.as_deref(),
            None,
            Some(error),
            None,
        ),
    };
    let finished: i64 = sqlx::query_scalar(
        "with done as (
            update jobs
               set status = $3, provider = $4, upstream_model = $5, result = $6,
                   error_code = $7, error_message = $8,
                   prompt_tokens = $9, completion_tokens = $10, total_tokens = $9 + $10,
                   finished_at = now(), lease_expires_at = null
             where id = $1 and claim_id = $2 and status = 'running'
         returning id, attempts
         ), attempt as (
            insert into job_attempts (job_id, claim, provider, upstream_model, started_at, latency_ms,
                                      status_code, outcome, error_code, error_message,
                                      prompt_tokens, completion_tokens)
            select id, attempts, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21
              from done where $11
         )
         select count(*) from done",
    )
    .bind(id)
    .bind(claim_id)
    .bind(status.as_str())
    .bind(provider)
    .bind(upstream_model)
    .bind(result)
    .bind(error.map(|e| e.code.as_str()))
    .bind(error.map(|e| e.message.as_str()))
    .bind(tokens.map(|t| t.0))
    .bind(tokens.map(|t| t.1))
    .bind(attempt.is_some())
    .bind(attempt.map(|a| a.provider.as_str()))
    .bind(attempt.map(|a| a.upstream_model.as_str()))
    .bind(attempt.map(|a| a.started_at))
    .bind(attempt.map(|a| i32::try_from(a.latency.as_millis()).unwrap_or(i32::MAX)))
    .bind(attempt.and_then(|a| a.status_code.map(i32::from)))
    .bind(attempt.map(|a| a.outcome.as_str()))
    .bind(attempt.and_then(|a| a.error.as_ref().map(|e| e.code.as_str())))
    .bind(attempt.and_then(|a| a.error.as_ref().map(|e| e.message.as_str())))
    .bind(attempt.and_then(|a| a.prompt_tokens))
    .bind(attempt.and_then(|a| a.completion_tokens))
    .fetch_one(pool)
    .await?;
    Ok(finished == 1)
}

/// Marks a job failed without a claim: for messages the broker dead-lettered.
pub async fn fail_unclaimed(
    pool: &PgPool,
    id: JobId,
    error: &JobError,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update jobs set status = 'failed', error_code = $2, error_message = $3,
                finished_at = now(), lease_expires_at = null
          where id = $1 and status not in ('succeeded', 'failed', 'cancelled')",
    )
    .bind(id)
    .bind(&error.code)
    .bind(&error.message)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Jobs committed as `queued` more than `older_than` ago whose publish was never confirmed: the api
/// crashed between commit and publish, or the broker was down. The sweeper republishes them.
pub async fn unpublished(
    pool: &PgPool,
    older_than: Duration,
    limit: i64,
) -> Result<Vec<JobId>, sqlx::Error> {
    sqlx::query_scalar(
        "select id from jobs
          where status = 'queued' and published_at is null
            and created_at < now() - make_interval(secs => $1)
          order by created_at
          limit $2",
    )
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Puts `running` jobs whose lease ran out back to `queued`, unpublished, so the sweeper sends them
/// again: their worker died and their message is gone (dead-lettered or purged). The old claim is
/// cleared, so should that worker still be alive it can no longer finish the job.
pub async fn release_abandoned(pool: &PgPool, limit: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "update jobs set status = 'queued', claim_id = null, lease_expires_at = null, published_at = null
          where id in (select id from jobs
                        where status = 'running' and lease_expires_at < now()
                        order by lease_expires_at
                        limit $1
                        for update skip locked)",
    )
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// One row of `job_attempts`, as read back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub claim: i32,
    pub provider: String,
    pub upstream_model: String,
    pub latency_ms: i32,
    pub status_code: Option<i32>,
    pub outcome: String,
    pub error_code: Option<String>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
}

/// A job's provider calls, oldest first.
pub async fn attempts(pool: &PgPool, id: JobId) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as(
        "select claim, provider, upstream_model, latency_ms, status_code, outcome, error_code,
                prompt_tokens, completion_tokens
           from job_attempts where job_id = $1 order by id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}
