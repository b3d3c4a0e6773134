//! A batch's results: every item's outcome in submission order, streamed a page at a time.

use chrono::{DateTime, Utc};
use futures::{Stream, TryStreamExt as _};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use super::BatchUsage;
use crate::billing;
use crate::domain::{BatchId, JobError, JobId};

/// Items read per query when streaming results.
const RESULTS_PAGE: i64 = 1_000;

/// One item's outcome, a line of the results.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    reasoning_tokens: Option<i32>,
    cached_tokens: Option<i32>,
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
                reasoning_tokens: i64::from(row.reasoning_tokens.unwrap_or(0)),
                cached_tokens: i64::from(row.cached_tokens.unwrap_or(0)),
                cost: billing::display(row.cost.unwrap_or_default()),
            }),
            _ => None,
        };
        Self {
            custom_id: row.custom_id.unwrap_or_default(),
            job_id: row.id,
            status: row.status,
            result: row.result,
            error: row
                .error_code
                .map(|code| JobError::new(code.into(), row.error_message.unwrap_or_default())),
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
                        prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens, cost,
                        finished_at
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
