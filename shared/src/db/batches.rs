//! The `batches` table and a batch's items (jobs carrying its id): intake in one transaction,
//! reading with counts and usage, and cancelling.

use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, Utc};
use futures::{Stream, TryStreamExt as _};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use sqlx::types::ipnetwork::IpNetwork;
use sqlx::{PgConnection, PgExecutor, PgPool};

use uuid::Uuid;

use crate::billing;
use crate::domain::openai_batch::Endpoint;
use crate::domain::{
    BatchId, FileId, JobError, JobId, JobKind, TenantId, TokenId, TraceParent, ValidItem,
};

/// Rows per insert statement: large enough to be fast, small enough to bound one statement.
const INSERT_CHUNK: usize = 5_000;
/// Items read per query when streaming results.
const RESULTS_PAGE: i64 = 1_000;

/// A batch about to be accepted: its items validated, each with its reservation when the tenant
/// has a quota.
pub struct NewBatch {
    pub id: BatchId,
    pub tenant_id: TenantId,
    pub token_id: Option<TokenId>,
    pub kind: JobKind,
    pub model: String,
    pub metadata: Option<Value>,
    pub webhook_url: Option<String>,
    pub origin: Option<String>,
    pub client_ip: Option<IpAddr>,
    /// The trace the batch request belongs to; every item carries it.
    pub traceparent: Option<TraceParent>,
    pub items: Vec<ValidItem>,
    /// Per item, what admission reserved (tokens, cost), in the month given.
    pub reservations: Option<(NaiveDate, Vec<(i64, Decimal)>)>,
    /// Set when the batch comes through the OpenAI-compatible API.
    pub openai: Option<OpenAiOrigin>,
}

/// What an OpenAI-style batch keeps of its making: the endpoint its lines call and its input file.
#[derive(Debug, Clone, Copy)]
pub struct OpenAiOrigin {
    pub endpoint: Endpoint,
    pub input_file_id: FileId,
}

/// A batch as its tenant sees it: counts by status and usage so far.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    pub id: BatchId,
    pub kind: String,
    pub model: String,
    pub status: String,
    pub counts: Counts,
    pub usage: BatchUsage,
    pub metadata: Option<Value>,
    pub webhook_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The endpoint of an OpenAI-style batch (its OpenAI view shows it).
    #[serde(skip)]
    pub openai_endpoint: Option<String>,
    #[serde(skip)]
    pub input_file_id: Option<FileId>,
}

/// How many of a batch's items are in each state.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub total: i64,
    pub pending: i64,
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// The tokens and cost of a batch's finished items.
#[derive(Debug, Clone, Serialize)]
pub struct BatchUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost: String,
}

/// A batch with its items' counts and usage, counted from the items themselves (the columns of
/// [`get`] and [`list`]).
struct BatchRow {
    id: BatchId,
    kind: String,
    model: String,
    status: String,
    metadata: Option<Value>,
    webhook_url: Option<String>,
    created_at: DateTime<Utc>,
    cancelled_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    openai_endpoint: Option<String>,
    input_file_id: Option<FileId>,
    total: i64,
    pending: i64,
    queued: i64,
    running: i64,
    succeeded: i64,
    failed: i64,
    cancelled: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost: Decimal,
}

impl From<BatchRow> for Batch {
    fn from(row: BatchRow) -> Self {
        Self {
            id: row.id,
            kind: row.kind,
            model: row.model,
            status: row.status,
            counts: Counts {
                total: row.total,
                pending: row.pending,
                queued: row.queued,
                running: row.running,
                succeeded: row.succeeded,
                failed: row.failed,
                cancelled: row.cancelled,
            },
            usage: BatchUsage {
                prompt_tokens: row.prompt_tokens,
                completion_tokens: row.completion_tokens,
                total_tokens: row.prompt_tokens + row.completion_tokens,
                cost: billing::display(row.cost),
            },
            metadata: row.metadata,
            webhook_url: row.webhook_url,
            created_at: row.created_at,
            cancelled_at: row.cancelled_at,
            finished_at: row.finished_at,
            openai_endpoint: row.openai_endpoint,
            input_file_id: row.input_file_id,
        }
    }
}

/// Inserts the batch and every item as `pending`, inside the caller's transaction.
pub async fn insert(conn: &mut PgConnection, batch: &NewBatch) -> Result<(), sqlx::Error> {
    let item_count = i32::try_from(batch.items.len()).unwrap_or(i32::MAX);
    sqlx::query!(
        "insert into batches (id, tenant_id, token_id, kind, model, status, item_count, metadata,
                              webhook_url, openai_endpoint, input_file_id)
         values ($1, $2, $3, $4, $5, 'in_progress', $6, $7, $8, $9, $10)",
        batch.id as BatchId,
        batch.tenant_id as TenantId,
        batch.token_id as Option<TokenId>,
        batch.kind.as_str(),
        batch.model,
        item_count,
        batch.metadata,
        batch.webhook_url,
        batch.openai.map(|o| o.endpoint.as_str()),
        batch.openai.map(|o| o.input_file_id) as Option<FileId>,
    )
    .execute(&mut *conn)
    .await?;
    let (month, reserved) = match &batch.reservations {
        Some((month, per_item)) => (Some(*month), Some(per_item)),
        None => (None, None),
    };
    for (chunk_index, chunk) in batch.items.chunks(INSERT_CHUNK).enumerate() {
        let offset = chunk_index * INSERT_CHUNK;
        let ids: Vec<JobId> = chunk.iter().map(|_| JobId::new()).collect();
        let custom_ids: Vec<&str> = chunk.iter().map(|i| i.custom_id.as_str()).collect();
        let requests = chunk
            .iter()
            .map(|i| serde_json::to_value(&i.request))
            .collect::<Result<Vec<Value>, _>>()
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let (tokens, costs): (Vec<Option<i64>>, Vec<Option<Decimal>>) = (0..chunk.len())
            .map(|i| match reserved.and_then(|r| r.get(offset + i)) {
                Some(&(tokens, cost)) => (Some(tokens), Some(cost)),
                None => (None, None),
            })
            .unzip();
        sqlx::query!(
            "insert into jobs (id, tenant_id, token_id, kind, status, model, request, origin,
                               client_ip, reserved_tokens, reserved_cost, reserved_month,
                               batch_id, custom_id, traceparent)
             select item.id, $2, $3, $4, 'pending', $5, item.request, $6, $7, item.tokens,
                    item.cost, $8, $9, item.custom_id, $14
               from unnest($1::uuid[], $10::jsonb[], $11::bigint[], $12::numeric[], $13::text[])
                    as item (id, request, tokens, cost, custom_id)",
            &ids as &[JobId],
            batch.tenant_id as TenantId,
            batch.token_id as Option<TokenId>,
            batch.kind.as_str(),
            batch.model,
            batch.origin,
            batch.client_ip.map(IpNetwork::from),
            month,
            batch.id as BatchId,
            &requests,
            &tokens as &[Option<i64>],
            &costs as &[Option<Decimal>],
            &custom_ids as &[&str],
            batch.traceparent.map(|t| t.to_string()),
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A tenant's batch; another tenant's is `None`, like one that does not exist.
pub async fn get(
    conn: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: BatchId,
) -> Result<Option<Batch>, sqlx::Error> {
    let row = sqlx::query_as!(
        BatchRow,
        r#"select b.id as "id: BatchId", b.kind, b.model, b.status, b.metadata, b.webhook_url,
                b.created_at, b.cancelled_at, b.finished_at, b.openai_endpoint,
                b.input_file_id as "input_file_id: FileId", c.total as "total!",
                c.pending as "pending!", c.queued as "queued!", c.running as "running!",
                c.succeeded as "succeeded!", c.failed as "failed!", c.cancelled as "cancelled!",
                c.prompt_tokens as "prompt_tokens!", c.completion_tokens as "completion_tokens!",
                c.cost as "cost!"
           from batches b
          cross join lateral (
                select count(*) as total,
                       count(*) filter (where j.status = 'pending') as pending,
                       count(*) filter (where j.status = 'queued') as queued,
                       count(*) filter (where j.status in ('running', 'retrying')) as running,
                       count(*) filter (where j.status = 'succeeded') as succeeded,
                       count(*) filter (where j.status = 'failed') as failed,
                       count(*) filter (where j.status = 'cancelled') as cancelled,
                       coalesce(sum(j.prompt_tokens), 0)::bigint as prompt_tokens,
                       coalesce(sum(j.completion_tokens), 0)::bigint as completion_tokens,
                       coalesce(sum(j.cost), 0) as cost
                  from jobs j where j.batch_id = b.id) c
          where b.id = $1 and b.tenant_id = $2"#,
        id as BatchId,
        tenant_id as TenantId,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Batch::from))
}

/// Which batches a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    All,
    /// Only those made through the OpenAI-compatible API.
    OpenAi,
}

/// A tenant's batches, newest first, strictly older than `before` when given (the cursor).
pub async fn list(
    pool: &PgPool,
    tenant_id: TenantId,
    listing: Listing,
    before: Option<BatchId>,
    limit: i64,
) -> Result<Vec<Batch>, sqlx::Error> {
    let rows = sqlx::query_as!(
        BatchRow,
        r#"select b.id as "id: BatchId", b.kind, b.model, b.status, b.metadata, b.webhook_url,
                b.created_at, b.cancelled_at, b.finished_at, b.openai_endpoint,
                b.input_file_id as "input_file_id: FileId", c.total as "total!",
                c.pending as "pending!", c.queued as "queued!", c.running as "running!",
                c.succeeded as "succeeded!", c.failed as "failed!", c.cancelled as "cancelled!",
                c.prompt_tokens as "prompt_tokens!", c.completion_tokens as "completion_tokens!",
                c.cost as "cost!"
           from batches b
          cross join lateral (
                select count(*) as total,
                       count(*) filter (where j.status = 'pending') as pending,
                       count(*) filter (where j.status = 'queued') as queued,
                       count(*) filter (where j.status in ('running', 'retrying')) as running,
                       count(*) filter (where j.status = 'succeeded') as succeeded,
                       count(*) filter (where j.status = 'failed') as failed,
                       count(*) filter (where j.status = 'cancelled') as cancelled,
                       coalesce(sum(j.prompt_tokens), 0)::bigint as prompt_tokens,
                       coalesce(sum(j.completion_tokens), 0)::bigint as completion_tokens,
                       coalesce(sum(j.cost), 0) as cost
                  from jobs j where j.batch_id = b.id) c
          where b.tenant_id = $1 and ($2::uuid is null or b.id < $2)
            and ($4 = false or b.openai_endpoint is not null)
          order by b.id desc limit $3"#,
        tenant_id as TenantId,
        before as Option<BatchId>,
        limit,
        listing == Listing::OpenAi,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Batch::from).collect())
}

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
        sqlx::query!(
            "with done as (
                update jobs set status = 'cancelled', finished_at = now(), revision = revision + 1,
                       error_code = 'cancelled', error_message = 'the batch was cancelled'
                 where batch_id = $1 and status in ('pending', 'queued', 'retrying')
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
        )
        .execute(&mut *tx)
        .await?;
        // With nothing running, the batch ends now rather than at the dispatcher's next round.
        let ended = super::dispatch::end_finished(&mut *tx, Some(id)).await?;
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

/// One item's outcome, a line of the results.
#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    pub custom_id: String,
    pub job_id: JobId,
    pub status: String,
    pub result: Option<Value>,
    pub error: Option<JobError>,
    pub usage: Option<BatchUsage>,
    pub finished_at: Option<DateTime<Utc>>,
}

struct ItemRow {
    id: JobId,
    custom_id: Option<String>,
    status: String,
    result: Option<Value>,
    error_code: Option<String>,
    error_message: Option<String>,
    prompt_tokens: Option<i32>,
    completion_tokens: Option<i32>,
    cost: Option<Decimal>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<ItemRow> for ItemResult {
    fn from(row: ItemRow) -> Self {
        let usage = match (row.prompt_tokens, row.completion_tokens) {
            (Some(prompt), Some(completion)) => Some(BatchUsage {
                prompt_tokens: i64::from(prompt),
                completion_tokens: i64::from(completion),
                total_tokens: i64::from(prompt) + i64::from(completion),
                cost: billing::display(row.cost.unwrap_or_default()),
            }),
            _ => None,
        };
        Self {
            custom_id: row.custom_id.unwrap_or_default(),
            job_id: row.id,
            status: row.status,
            result: row.result,
            error: row.error_code.map(|code| JobError {
                code,
                message: row.error_message.unwrap_or_default(),
            }),
            usage,
            finished_at: row.finished_at,
        }
    }
}

/// Every item's outcome in submission order, read a page at a time (no connection is held
/// between pages, and memory stays bounded whatever the batch's size).
pub fn results(
    pool: PgPool,
    batch_id: BatchId,
) -> impl Stream<Item = Result<ItemResult, sqlx::Error>> + Send + 'static {
    futures::stream::try_unfold(Some(None::<JobId>), move |cursor| {
        let pool = pool.clone();
        async move {
            let Some(after) = cursor else {
                return Ok::<_, sqlx::Error>(None);
            };
            let rows = sqlx::query_as!(
                ItemRow,
                r#"select id as "id: JobId", custom_id, status, result, error_code, error_message,
                        prompt_tokens, completion_tokens, cost, finished_at
                   from jobs
                  where batch_id = $1 and ($2::uuid is null or id > $2)
                  order by id limit $3"#,
                batch_id as BatchId,
                after as Option<JobId>,
                RESULTS_PAGE,
            )
            .fetch_all(&pool)
            .await?;
            let next = (rows.len() as i64 == RESULTS_PAGE)
                .then(|| rows.last().map(|r| r.id))
                .flatten();
            let page = rows.into_iter().map(|row| Ok(ItemResult::from(row)));
            Ok(Some((futures::stream::iter(page), next.map(Some))))
        }
    })
    .try_flatten()
}
