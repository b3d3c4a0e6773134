//! Jobs whose message the broker dead-lettered: failing them, listing them, and requeueing one.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::JobRow;
use crate::db::runs::Recorded;
use crate::domain::{BatchId, Job, JobError, JobId, TenantId};

/// Marks a job failed without a claim, for a message the broker dead-lettered (poison), and notes
/// when, so admins can list it and requeue it. `None` if the job had already ended.
pub async fn fail_dead_lettered(
    pool: &PgPool,
    id: JobId,
    error: &JobError,
) -> Result<Option<Recorded>, sqlx::Error> {
    // Ends the job like the end of a worker's run (`runs::finish`): its reservation released, its
    // webhook delivery written where `tollgate_webhook_target` says.
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
            select gen_random_uuid(), done.tenant_id, done.id, 'job.' || done.status, w.url,
                   w.tenant_endpoint
              from done, tollgate_webhook_target(done.tenant_id, done.webhook_url) w
             where done.batch_id is null
            returning id
         )
         select revision as "revision!", (select id from hook) as delivery from done"#,
        id as JobId,
        error.code.as_str(),
        error.message,
    )
    .fetch_optional(pool)
    .await
}

/// A dead-lettered job, as admins list it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
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
                completion_tokens, total_tokens,
                reasoning_tokens, cached_tokens, cache_write_tokens, error_body, attempts, metadata, created_at, started_at,
                finished_at, cost, usage_estimated, unpriced, revision, webhook_url,
                batch_id as "batch_id: BatchId", custom_id, stream, route_reason, data_policy,
                dead_lettered_at, cache
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
                completion_tokens, total_tokens,
                reasoning_tokens, cached_tokens, cache_write_tokens, error_body, attempts, metadata, created_at, started_at,
                finished_at, cost, usage_estimated, unpriced, revision, webhook_url,
                batch_id as "batch_id: BatchId", custom_id, stream, route_reason, data_policy,
                dead_lettered_at, cache"#,
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
