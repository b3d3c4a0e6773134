//! Admitting a job against its tenant's monthly quota: reserve, then insert, in one transaction.
//!
//! A tenant without limits pays nothing for this: its job is a single insert. With limits, the
//! reservation (prompt tokens by the tokenizer, completion tokens from `max_tokens` or a default,
//! their cost at the model's highest current price) is taken by one conditional upsert on the
//! tenant's month row in Postgres, so every api instance sees the same count.

use shared::db::jobs::{self, NewJob};
use shared::db::quotas::{self, Limits};
use shared::domain::Job;
use sqlx::PgPool;

use crate::error::ApiError;

/// Completion tokens reserved for a generate or chat request without `max_tokens`.
pub const DEFAULT_COMPLETION_ESTIMATE: u32 = 1024;

/// Inserts `job`, first reserving its estimate against `limits` when the tenant has any; 429
/// `quota_exceeded` (with the limit and when it resets) and nothing written when it would not fit.
pub async fn admit(pool: &PgPool, limits: &Limits, mut job: NewJob) -> Result<Job, ApiError> {
    if limits.is_unlimited() {
        return Ok(jobs::insert(pool, &job).await?);
    }
    let prompt = shared::billing::estimate_tokens(&job.request.input_text());
    let completion = job
        .request
        .max_completion_tokens(DEFAULT_COMPLETION_ESTIMATE);
    let mut tx = pool.begin().await?;
    let reservation = quotas::reserve(
        &mut tx,
        job.tenant_id,
        limits,
        job.request.model().as_str(),
        i64::from(prompt),
        i64::from(completion),
    )
    .await?;
    let Some(reservation) = reservation else {
        drop(tx);
        return Err(refusal(pool, &job, i64::from(prompt) + i64::from(completion)).await);
    };
    job.reservation = Some(reservation);
    let inserted = jobs::insert(&mut *tx, &job).await?;
    tx.commit().await?;
    Ok(inserted)
}

/// Says which limit the job would pass and when the month starts over.
async fn refusal(pool: &PgPool, job: &NewJob, tokens: i64) -> ApiError {
    let status = match quotas::status(pool, job.tenant_id).await {
        Ok(Some(status)) => status,
        Ok(None) => return ApiError::not_found("no such tenant"),
        Err(error) => return error.into(),
    };
    let committed_tokens = status.used_tokens + status.reserved_tokens;
    let limit = match status.limits.monthly_token_quota {
        Some(quota) if committed_tokens + tokens > quota => format!(
            "the monthly token quota of {quota} (used {}, reserved {}, this request up to {tokens})",
            status.used_tokens, status.reserved_tokens
        ),
        _ => format!(
            "the monthly cost budget of {} (used {}, reserved {})",
            status.limits.monthly_cost_budget.unwrap_or_default(),
            shared::billing::display(status.used_cost),
            shared::billing::display(status.reserved_cost),
        ),
    };
    let wait = (status.resets_at - chrono::Utc::now()).num_seconds().max(1);
    ApiError::quota_exceeded(
        format!(
            "this request would exceed {limit}; it resets at {}",
            status.resets_at.to_rfc3339()
        ),
        u64::try_from(wait).unwrap_or(1),
    )
}
