//! Admitting a job against its tenant's monthly quota: reserve, then insert, in one transaction.
//!
//! A tenant without limits pays nothing for this: its job is a single insert. With limits, the
//! reservation (prompt tokens by the tokenizer, completion tokens from `max_tokens` or a default,
//! their cost at the model's highest current price) is taken by one conditional upsert on the
//! tenant's month row in Postgres, so every api instance sees the same count. A batch reserves the
//! sum of its items' estimates at once.

use rust_decimal::Decimal;
use sqlx::PgConnection;
use tollgate_core::db::batches::{self, Batch, NewBatch};
use tollgate_core::db::jobs::{self, NewJob};
use tollgate_core::db::quotas::{self, Limits};
use tollgate_core::domain::{Job, JobRequest};

use crate::http::error::ApiError;

/// Completion tokens reserved for a generate or chat request without `max_tokens`.
pub const DEFAULT_COMPLETION_ESTIMATE: u32 = 1024;

/// Inserts `job` on the caller's connection (a transaction when there is a reservation or an
/// `Idempotency-Key` to write with it, see [`crate::intake`]), first reserving its estimate
/// against `limits` when the tenant has any; 429 `quota_exceeded` (with the limit and when it
/// resets) and nothing written when it would not fit. A refusal is explained on the same
/// connection: under a burst, every request already holds one.
pub async fn admit_in(
    tx: &mut PgConnection,
    limits: &Limits,
    mut job: NewJob,
) -> Result<Job, ApiError> {
    if !limits.is_unlimited() {
        let (prompt, completion) = estimate(&job.request);
        let reservation = quotas::reserve(
            tx,
            job.tenant_id,
            limits,
            job.request.model().as_str(),
            i64::from(prompt),
            i64::from(completion),
        )
        .await?;
        let Some(reservation) = reservation else {
            let tokens = i64::from(prompt) + i64::from(completion);
            return Err(refusal(tx, job.tenant_id, tokens).await);
        };
        job.reservation = Some(reservation);
    }
    let mut images = std::collections::HashSet::new();
    tollgate_core::db::images::store_shown(tx, job.tenant_id, job.id, &job.request, &mut images)
        .await?;
    Ok(jobs::insert(&mut *tx, &job).await?)
}

/// Inserts the batch and its items inside the caller's transaction, first reserving the sum of
/// the items' estimates when the tenant has limits (each item carries its own part, released when
/// it ends); 429 `quota_exceeded` and nothing written when the batch would not fit. Returns the
/// batch as its tenant sees it.
pub async fn admit_batch(
    tx: &mut PgConnection,
    limits: &Limits,
    mut batch: NewBatch,
) -> Result<Batch, ApiError> {
    if !limits.is_unlimited() {
        let estimates: Vec<(i32, u32)> = batch
            .items
            .iter()
            .map(|item| estimate(&item.request))
            .collect();
        let prompt: i64 = estimates.iter().map(|&(p, _)| i64::from(p)).sum();
        let completion: i64 = estimates.iter().map(|&(_, c)| i64::from(c)).sum();
        let reserved = quotas::reserve(
            tx,
            batch.tenant_id,
            limits,
            &batch.model,
            prompt,
            completion,
        )
        .await?;
        let Some(reserved) = reserved else {
            return Err(refusal(tx, batch.tenant_id, prompt + completion).await);
        };
        let tokens: Vec<i64> = estimates
            .iter()
            .map(|&(p, c)| i64::from(p) + i64::from(c))
            .collect();
        batch.reservations = Some((reserved.month, split_cost(reserved.cost, &tokens)));
    }
    batches::insert(tx, &batch).await?;
    batches::get(&mut *tx, batch.tenant_id, batch.id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the batch just written is missing")))
}

/// A request's estimate: prompt tokens by the tokenizer, completion tokens from `max_tokens` or
/// the default.
fn estimate(request: &JobRequest) -> (i32, u32) {
    (
        tollgate_core::billing::estimate_tokens(&request.input_text()),
        request.max_completion_tokens(DEFAULT_COMPLETION_ESTIMATE),
    )
}

/// Each item's tokens with its share of `cost` (in proportion to its tokens); the shares add up
/// to `cost` exactly, the last item taking the rounding.
fn split_cost(cost: Decimal, tokens: &[i64]) -> Vec<(i64, Decimal)> {
    let total: i64 = tokens.iter().sum();
    let mut left = cost;
    let mut shares = Vec::with_capacity(tokens.len());
    for (i, &t) in tokens.iter().enumerate() {
        let share = if i + 1 == tokens.len() {
            left
        } else if total == 0 {
            Decimal::ZERO
        } else {
            (cost * Decimal::from(t) / Decimal::from(total)).round_dp(10)
        };
        left -= share;
        shares.push((t, share));
    }
    shares
}

/// Says which limit the job would pass and when the month starts over.
async fn refusal(
    conn: &mut PgConnection,
    tenant_id: tollgate_core::domain::TenantId,
    tokens: i64,
) -> ApiError {
    let status = match quotas::status(conn, tenant_id).await {
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
            tollgate_core::billing::display(status.used_cost),
            tollgate_core::billing::display(status.reserved_cost),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reservation_is_split_in_proportion_and_adds_up() {
        let cost = Decimal::new(1, 2); // 0.01
        let shares = split_cost(cost, &[1, 1, 1]);
        assert_eq!(shares.iter().map(|&(_, c)| c).sum::<Decimal>(), cost);
        assert_eq!(shares[0].1, Decimal::new(33_333_333, 10));
        assert_eq!(shares[0].0, 1);
        assert_eq!(split_cost(Decimal::ZERO, &[0, 0])[1].1, Decimal::ZERO);
    }
}
