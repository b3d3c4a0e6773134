//! Cancelling a job: at once when no worker has started it, else by recording the request for the
//! worker holding it.

use sqlx::PgPool;
use uuid::Uuid;

use super::{JobRow, get, job_row};
use crate::db::runs::cancelled_error;
use crate::domain::{BatchId, Job, JobId, TenantId};

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
    // Ends the job, releases its reservation and writes its webhook delivery (where
    // `tollgate_webhook_target` says), as the end of a worker's run does (`runs::finish`).
    let cancelled = cancelled_error();
    let cancelled = sqlx::query!(
        r#"with done as (
            update jobs set status = 'cancelled', finished_at = now(), revision = revision + 1,
                   error_code = $3, error_message = $4
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
            select gen_random_uuid(), done.tenant_id, done.id, 'job.' || done.status, w.url,
                   w.tenant_endpoint
              from done, tollgate_webhook_target(done.tenant_id, done.webhook_url) w
             where done.batch_id is null
            returning id
         )
         select id as "id!: JobId", tenant_id as "tenant_id!: TenantId", kind as "kind!",
                status as "status!", model as "model!", provider, upstream_model, result,
                error_code, error_message, prompt_tokens, completion_tokens, total_tokens,
                reasoning_tokens, cached_tokens, cache_write_tokens, error_body,
                attempts as "attempts!", metadata, created_at as "created_at!", started_at,
                finished_at, cost, usage_estimated, unpriced, revision as "revision!",
                webhook_url, batch_id as "batch_id: BatchId", custom_id, stream as "stream!",
                route_reason, data_policy, dead_lettered_at, cache
, (select id from hook) as delivery
           from done"#,
        id as JobId,
        tenant_id as TenantId,
        cancelled.code.as_str(),
        cancelled.message,
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
                completion_tokens, total_tokens,
                reasoning_tokens, cached_tokens, cache_write_tokens, error_body, attempts, metadata, created_at, started_at,
                finished_at, cost, usage_estimated, unpriced, revision, webhook_url,
                batch_id as "batch_id: BatchId", custom_id, stream, route_reason, data_policy,
                dead_lettered_at, cache"#,
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
