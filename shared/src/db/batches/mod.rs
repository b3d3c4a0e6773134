//! The `batches` table and a batch's items (jobs carrying its id): intake in one transaction,
//! reading with counts and usage, and cancelling.

mod cancel;
mod results;

use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use sqlx::types::ipnetwork::IpNetwork;
use sqlx::{PgConnection, PgExecutor, PgPool};

use crate::billing;
use crate::domain::cache::{CacheState, JobCache};
use crate::domain::openai_batch::Endpoint;
use crate::domain::{BatchId, FileId, JobId, JobKind, TenantId, TokenId, TraceParent, ValidItem};

/// Rows per insert statement: large enough to be fast, small enough to bound one statement.
const INSERT_CHUNK: usize = 5_000;

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
    /// Per item, what the response cache does for it (empty: nothing, for every item).
    pub cache: Vec<JobCache>,
}

/// What an OpenAI-style batch keeps of its making: the endpoint its lines call and its input file.
#[derive(Debug, Clone, Copy)]
pub struct OpenAiOrigin {
    pub endpoint: Endpoint,
    pub input_file_id: FileId,
}

/// A batch as its tenant sees it: counts by status and usage so far.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    /// From when its items (their results) may be gone: the end of the UTC day it was made,
    /// plus the runtime settings' `job_retention_days`.
    pub results_expire_at: DateTime<Utc>,
    /// The endpoint of an OpenAI-style batch (its OpenAI view shows it).
    #[serde(skip)]
    pub openai_endpoint: Option<String>,
    #[serde(skip)]
    pub input_file_id: Option<FileId>,
}

/// How many of a batch's items are in each state.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BatchUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// Of the completion tokens, those spent reasoning.
    pub reasoning_tokens: i64,
    /// Of the prompt tokens, those read from the provider's cache.
    pub cached_tokens: i64,
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
    reasoning_tokens: i64,
    cached_tokens: i64,
    cost: Decimal,
    results_expire_at: DateTime<Utc>,
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
                reasoning_tokens: row.reasoning_tokens,
                cached_tokens: row.cached_tokens,
                cost: billing::display(row.cost),
            },
            metadata: row.metadata,
            webhook_url: row.webhook_url,
            created_at: row.created_at,
            cancelled_at: row.cancelled_at,
            finished_at: row.finished_at,
            results_expire_at: row.results_expire_at,
            openai_endpoint: row.openai_endpoint,
            input_file_id: row.input_file_id,
        }
    }
}

/// Inserts the batch and every item as `pending` (with the images its items show), inside the
/// caller's transaction.
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
    let mut images = std::collections::HashSet::new();
    for (chunk_index, chunk) in batch.items.chunks(INSERT_CHUNK).enumerate() {
        let offset = chunk_index * INSERT_CHUNK;
        let ids: Vec<JobId> = chunk.iter().map(|_| JobId::new()).collect();
        for (id, item) in ids.iter().zip(chunk) {
            let tenant_id = batch.tenant_id;
            super::images::store_shown(conn, tenant_id, *id, &item.request, &mut images).await?;
        }
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
        let cache: Vec<JobCache> = (0..chunk.len())
            .map(|i| batch.cache.get(offset + i).copied().unwrap_or_default())
            .collect();
        let cache_state: Vec<Option<&str>> = cache
            .iter()
            .map(|c| c.state.map(CacheState::as_str))
            .collect();
        let cache_key: Vec<Option<Vec<u8>>> =
            cache.iter().map(|c| c.key.map(|k| k.0.to_vec())).collect();
        let cache_ttl: Vec<Option<i32>> = cache
            .iter()
            .map(|c| c.ttl_secs.and_then(|t| i32::try_from(t).ok()))
            .collect();
        sqlx::query!(
            "insert into jobs (id, tenant_id, token_id, kind, status, model, request, origin,
                               client_ip, reserved_tokens, reserved_cost, reserved_month,
                               batch_id, custom_id, traceparent, cache, cache_key, cache_ttl_secs)
             select item.id, $2, $3, $4, 'pending', $5, item.request, $6, $7, item.tokens,
                    item.cost, $8, $9, item.custom_id, $14, item.cache, item.cache_key,
                    item.cache_ttl_secs
               from unnest($1::uuid[], $10::jsonb[], $11::bigint[], $12::numeric[], $13::text[],
                           $15::text[], $16::bytea[], $17::int[])
                    as item (id, request, tokens, cost, custom_id, cache, cache_key,
                             cache_ttl_secs)",
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
            &cache_state as &[Option<&str>],
            &cache_key as &[Option<Vec<u8>>],
            &cache_ttl as &[Option<i32>],
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
        r#"select id as "id!: BatchId", kind as "kind!", model as "model!", status as "status!",
                metadata, webhook_url, created_at as "created_at!", cancelled_at, finished_at,
                openai_endpoint, input_file_id as "input_file_id: FileId", total as "total!",
                pending as "pending!", queued as "queued!", running as "running!",
                succeeded as "succeeded!", failed as "failed!", cancelled as "cancelled!",
                prompt_tokens as "prompt_tokens!", completion_tokens as "completion_tokens!",
                reasoning_tokens as "reasoning_tokens!", cached_tokens as "cached_tokens!",
                cost as "cost!", results_expire_at as "results_expire_at!"
           from batch_progress
          where id = $1 and tenant_id = $2"#,
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
        r#"select id as "id!: BatchId", kind as "kind!", model as "model!", status as "status!",
                metadata, webhook_url, created_at as "created_at!", cancelled_at, finished_at,
                openai_endpoint, input_file_id as "input_file_id: FileId", total as "total!",
                pending as "pending!", queued as "queued!", running as "running!",
                succeeded as "succeeded!", failed as "failed!", cancelled as "cancelled!",
                prompt_tokens as "prompt_tokens!", completion_tokens as "completion_tokens!",
                reasoning_tokens as "reasoning_tokens!", cached_tokens as "cached_tokens!",
                cost as "cost!", results_expire_at as "results_expire_at!"
           from batch_progress
          where tenant_id = $1 and ($2::uuid is null or id < $2)
            and ($4 = false or openai_endpoint is not null)
          order by id desc limit $3"#,
        tenant_id as TenantId,
        before as Option<BatchId>,
        limit,
        listing == Listing::OpenAi,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Batch::from).collect())
}

pub use cancel::{BatchCancel, cancel};
pub use results::{ItemResult, results};
