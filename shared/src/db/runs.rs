//! A worker's run of a job: claiming it, then recording how the run ended — finished, or parked in
//! a delay queue for another run — together with the run's attempt rows, in one statement.
//!
//! The `where` clauses carry the rules: a job is claimed only from a claimable state, and only the
//! claim that holds it may record its end, so a worker that lost its claim writes nothing.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::job_attempts::{AttemptColumns, AttemptRecord, INSERT_FROM_DONE};
use crate::domain::{JobError, JobId, JobRequest, JobStatus, ProviderName, TenantId};

/// A job a worker now holds.
pub struct ClaimedJob {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub request: JobRequest,
    /// How many times the job has been claimed, this claim included.
    pub claims: i32,
    /// How many earlier runs ended with the job parked for a delayed retry.
    pub retries: i32,
}

impl ClaimedJob {
    /// Claims whose run neither finished nor parked the job: its workers died (or lost the job to
    /// the sweeper) this many times, this claim included.
    pub fn abandoned_runs(&self) -> i32 {
        self.claims - self.retries
    }
}

/// A `retrying` job's message may arrive a little before `retry_at` (clocks differ); one that
/// arrives earlier than this is a stale duplicate and is left alone.
const EARLY_ARRIVAL: &str = "1 second";

/// Claims a job for one worker run.
///
/// Claimable: `queued`; `retrying` once it is due; or `running` when the message is a broker
/// redelivery (the worker that held it died before acking) or the previous claim's lease ran out.
/// Anything else — a finished or cancelled job, or a duplicate message for a job another worker is
/// running — is `None`, and the caller acks the message without working it.
pub async fn claim(
    pool: &PgPool,
    id: JobId,
    claim_id: Uuid,
    redelivered: bool,
    lease: Duration,
) -> Result<Option<ClaimedJob>, sqlx::Error> {
    let row: Option<(TenantId, Value, i32, i32)> = sqlx::query_as(&format!(
        "update jobs
            set status = 'running', claim_id = $2, claims = claims + 1,
                started_at = coalesce(started_at, now()),
                lease_expires_at = now() + make_interval(secs => $4)
          where id = $1
            and (status = 'queued'
                 or (status = 'retrying' and retry_at <= now() + interval '{EARLY_ARRIVAL}')
                 or (status = 'running' and ($3 or lease_expires_at < now())))
          returning tenant_id, request, claims, retries"
    ))
    .bind(id)
    .bind(claim_id)
    .bind(redelivered)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    let Some((tenant_id, request, claims, retries)) = row else {
        return Ok(None);
    };
    let request = serde_json::from_value(request).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Some(ClaimedJob {
        id,
        tenant_id,
        request,
        claims,
        retries,
    }))
}

/// Pushes a running claim's lease out to `lease` from now; a lost claim is left alone.
pub async fn extend_lease(
    pool: &PgPool,
    id: JobId,
    claim_id: Uuid,
    lease: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update jobs set lease_expires_at = now() + make_interval(secs => $3)
          where id = $1 and claim_id = $2 and status = 'running'",
    )
    .bind(id)
    .bind(claim_id)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// How a run ended the job.
pub enum Outcome {
    Succeeded {
        provider: ProviderName,
        upstream_model: String,
        result: Value,
        prompt_tokens: i32,
        completion_tokens: i32,
    },
    Failed {
        provider: Option<ProviderName>,
        upstream_model: Option<String>,
        error: JobError,
    },
}

impl Outcome {
    /// A failure decided without a provider answer (no provider, too many claims).
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

/// The one statement that ends a run: `set` applied to the job if claim `$12` still holds job `$11`,
/// and the run's attempts (`$1`..`$10`) inserted for it; `set`'s own parameters start at `$13`.
/// Its single value is 1 if the run's end was recorded, 0 if the claim was lost.
fn end_of_run(set: &str) -> String {
    format!(
        "with done as (
            update jobs set {set}
             where id = $11 and claim_id = $12 and status = 'running'
         returning id, claims
         ), attempt as ({INSERT_FROM_DONE})
         select count(*) from done"
    )
}

/// Records a claimed job's terminal outcome and the run's attempts in one statement (one commit).
///
/// Returns `false` when the claim was no longer the job's (another worker reclaimed it after a
/// redelivery): nothing is written, and the caller drops its result.
pub async fn finish(
    pool: &PgPool,
    id: JobId,
    claim_id: Uuid,
    outcome: &Outcome,
    attempts: &[AttemptRecord],
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
            Some(*provider),
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
            *provider,
            upstream_model.as_deref(),
            None,
            Some(error),
            None,
        ),
    };
    let columns = AttemptColumns::new(attempts);
    let sql = end_of_run(
        "status = $13, provider = $14, upstream_model = $15, result = $16,
         error_code = $17, error_message = $18,
         prompt_tokens = $19, completion_tokens = $20, total_tokens = $19 + $20,
         attempts = attempts + $21, finished_at = now(), lease_expires_at = null, retry_at = null",
    );
    let finished: i64 = columns
        .bind(sqlx::query_scalar(&sql))
        .bind(id)
        .bind(claim_id)
        .bind(status.as_str())
        .bind(provider.map(ProviderName::as_str))
        .bind(upstream_model)
        .bind(result)
        .bind(error.map(|e| e.code.as_str()))
        .bind(error.map(|e| e.message.as_str()))
        .bind(tokens.map(|t| t.0))
        .bind(tokens.map(|t| t.1))
        .bind(columns.len())
        .fetch_one(pool)
        .await?;
    Ok(finished == 1)
}

/// Parks a claimed job as `retrying` after a run in which every provider failed transiently: the
/// last error is shown meanwhile, the run's attempts are recorded, and `retry_at` says when it is
/// due. The caller then publishes its message to the delay queue. `false` if the claim was lost.
pub async fn park(
    pool: &PgPool,
    id: JobId,
    claim_id: Uuid,
    error: &JobError,
    delay: Duration,
    attempts: &[AttemptRecord],
) -> Result<bool, sqlx::Error> {
    let columns = AttemptColumns::new(attempts);
    let sql = end_of_run(
        "status = 'retrying', retries = retries + 1, attempts = attempts + $16,
         error_code = $13, error_message = $14, retry_at = now() + make_interval(secs => $15),
         claim_id = null, lease_expires_at = null, published_at = null",
    );
    let parked: i64 = columns
        .bind(sqlx::query_scalar(&sql))
        .bind(id)
        .bind(claim_id)
        .bind(&error.code)
        .bind(&error.message)
        .bind(delay.as_secs_f64())
        .bind(columns.len())
        .fetch_one(pool)
        .await?;
    Ok(parked == 1)
}
