//! Cancelling a batch: its items no worker has started cancelled at once (their reservations
//! released), running items left to finish, and the batch ended once they have.

use sqlx::PgPool;
use uuid::Uuid;

use super::{Batch, get};
use crate::domain::{BatchId, JobErrorCode, TenantId};

/// What a cancel did.
pub enum BatchCancel {
    /// Items no worker had started are cancelled; running ones finish. When none was running the
    /// batch has ended, and `delivery` announces it.
    Cancelling {
        batch: Batch,
        delivery: Option<Uuid>,
    },
    /// The batch had already ended.
    TooLate(Batch),
    NotFound,
}

/// Cancels a batch: its items no worker has started are cancelled at once (their reservations
/// released), running items finish, and the batch ends once they have.
pub async fn cancel(
    pool: &PgPool,
    tenant_id: TenantId,
    id: BatchId,
) -> Result<BatchCancel, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut delivery = None;
    let marked = sqlx::query!(
        "update batches set status = 'cancelling', cancelled_at = now(), revision = revision + 1
          where id = $1 and tenant_id = $2 and status = 'in_progress'",
        id as BatchId,
        tenant_id as TenantId,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if marked == 1 {
        // Its items are locked in id order first, as the closing statement locks its jobs, so
        // that the two cannot deadlock (a worker's claim of a group of them skips what it holds).
        sqlx::query!(
            "with locked as (
                select id from jobs
                 where batch_id = $1 and status in ('pending', 'queued', 'retrying')
                 order by id for update),
             done as (
                update jobs set status = 'cancelled', finished_at = now(), revision = revision + 1,
                       error_code = $2, error_message = 'the batch was cancelled'
                  from locked
                 where jobs.id = locked.id and status in ('pending', 'queued', 'retrying')
                 returning tenant_id, reserved_month, reserved_tokens, reserved_cost),
             freed as (
                select tenant_id, reserved_month, sum(reserved_tokens) as tokens,
                       sum(reserved_cost) as cost
                  from done where reserved_month is not null
                 group by tenant_id, reserved_month)
             update quota_months q
                set reserved_tokens = q.reserved_tokens - freed.tokens,
                    reserved_cost = q.reserved_cost - freed.cost
               from freed
              where q.tenant_id = freed.tenant_id and q.month = freed.reserved_month",
            id as BatchId,
            JobErrorCode::Cancelled.as_str(),
        )
        .execute(&mut *tx)
        .await?;
        // With nothing running, the batch ends now rather than at the dispatcher's next round.
        let ended = crate::db::dispatch::end_finished(&mut *tx, Some(id)).await?;
        delivery = ended.first().and_then(|batch| batch.delivery);
    }
    tx.commit().await?;
    let Some(batch) = get(pool, tenant_id, id).await? else {
        return Ok(BatchCancel::NotFound);
    };
    Ok(if marked == 1 {
        BatchCancel::Cancelling { batch, delivery }
    } else {
        BatchCancel::TooLate(batch)
    })
}
