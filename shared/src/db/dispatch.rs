//! What the dispatcher runs: which batches have items waiting, how deep the bulk queue is, and
//! releasing items (`pending` → `queued`) so that no item is released twice, however many
//! dispatchers run; and ending the batches whose items have all ended (with their webhook).

use sqlx::{PgConnection, PgExecutor};

use uuid::Uuid;

use crate::domain::{BatchId, JobId, TenantId, TraceParent};

/// The one lock a dispatch round holds for its transaction: rounds of several workers take turns
/// rather than each releasing a full budget (which would deepen the queue by their number).
const DISPATCH_LOCK: i64 = 0x7467_6469_7370; // "tgdisp"

/// Takes the round's turn inside the caller's transaction; `false` when another dispatcher is
/// mid-round.
pub async fn take_turn(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select pg_try_advisory_xact_lock($1) as "taken!""#,
        DISPATCH_LOCK
    )
    .fetch_one(conn)
    .await
}

/// Bulk items released and not yet claimed by a worker: the bulk queue's depth.
pub async fn released_unclaimed(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select count(*) as "count!" from jobs where batch_id is not null and status = 'queued'"#
    )
    .fetch_one(conn)
    .await
}

/// Batches still in progress with items waiting, oldest first, with their tenant.
pub async fn waiting(conn: &mut PgConnection) -> Result<Vec<(BatchId, TenantId)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select b.id as "id: BatchId", b.tenant_id as "tenant_id: TenantId" from batches b
          where b.status = 'in_progress'
            and exists (select 1 from jobs j where j.batch_id = b.id and j.status = 'pending')
          order by b.id"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|b| (b.id, b.tenant_id)).collect())
}

/// Releases up to `count` of each batch's oldest pending items; returns the items released, with
/// their traces. Rows another dispatcher has locked are skipped, and only `pending` items change,
/// so an item is never released twice.
pub async fn release(
    conn: &mut PgConnection,
    shares: &[(BatchId, i32)],
) -> Result<Vec<(JobId, Option<TraceParent>)>, sqlx::Error> {
    let (batches, counts): (Vec<BatchId>, Vec<i32>) = shares.iter().copied().unzip();
    let released = sqlx::query!(
        r#"with share as (select * from unnest($1::uuid[], $2::int[]) as s (batch_id, n)),
              picked as (
                select item.id from share
                 cross join lateral (
                       select j.id from jobs j
                        where j.batch_id = share.batch_id and j.status = 'pending'
                        order by j.id limit share.n
                          for update skip locked) item)
         update jobs set status = 'queued', released_at = now(), revision = revision + 1
           from picked
          where jobs.id = picked.id and jobs.status = 'pending'
         returning jobs.id as "id: JobId", jobs.traceparent"#,
        &batches as &[BatchId],
        &counts,
    )
    .fetch_all(conn)
    .await?;
    Ok(released
        .into_iter()
        .map(|job| super::jobs::with_trace((job.id, job.traceparent)))
        .collect())
}

/// A batch that has just ended, and the delivery announcing it (if it has somewhere to go).
#[derive(Debug, Clone)]
pub struct Ended {
    pub id: BatchId,
    pub tenant_id: TenantId,
    pub status: String,
    pub revision: i32,
    pub delivery: Option<Uuid>,
}

/// Ends every batch whose items have all ended (only batch `only` when given) — `completed`, or
/// `cancelled` after a cancel —
/// writing each one's webhook delivery in the same statement: to the batch's own URL, else to the
/// tenant's endpoint while it is enabled.
pub async fn end_finished(
    conn: impl PgExecutor<'_>,
    only: Option<BatchId>,
) -> Result<Vec<Ended>, sqlx::Error> {
    sqlx::query_as!(
        Ended,
        r#"with ended as (
            update batches b
               set status = case b.status when 'cancelling' then 'cancelled' else 'completed' end,
                   finished_at = now(), revision = b.revision + 1
             where b.finished_at is null and ($1::uuid is null or b.id = $1)
               and not exists (select 1 from jobs j where j.batch_id = b.id and j.finished_at is null)
            returning b.id, b.tenant_id, b.status, b.revision, b.webhook_url
         ), hook as (
            insert into webhook_deliveries
                   (id, tenant_id, batch_id, event_type, url, tenant_endpoint)
            select gen_random_uuid(), ended.tenant_id, ended.id, 'batch.' || ended.status, w.url,
                   w.tenant_endpoint
              from ended, tollgate_webhook_target(ended.tenant_id, ended.webhook_url) w
            returning id, batch_id
         )
         select ended.id as "id!: BatchId", ended.tenant_id as "tenant_id!: TenantId",
                ended.status as "status!", ended.revision as "revision!", hook.id as "delivery?"
           from ended left join hook on hook.batch_id = ended.id"#,
        only as Option<BatchId>,
    )
    .fetch_all(conn)
    .await
}
