//! What waits for a worker, read across tables for the metrics an autoscaler watches: how old the
//! oldest queued job and due webhook delivery are (a message's age is not something AMQP tells),
//! and how many batch items wait in Postgres for the dispatcher.

use sqlx::PgPool;

/// Ages in seconds, `None` when nothing waits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    /// The oldest single job accepted and not yet claimed.
    pub oldest_single: Option<f64>,
    /// The oldest batch item released to the bulk queue and not yet claimed (its age counts from
    /// its batch's submission).
    pub oldest_batch_item: Option<f64>,
    /// Batch items waiting in Postgres to be released.
    pub batch_items_pending: i64,
    /// The webhook delivery that has been due the longest.
    pub oldest_due_webhook: Option<f64>,
}

/// One statement, each part answered from a partial index (`jobs_queued`, `jobs_batch_pending`,
/// `webhook_deliveries_due`).
pub async fn read(pool: &PgPool) -> Result<Backlog, sqlx::Error> {
    sqlx::query_as!(
        Backlog,
        r#"select
           (select extract(epoch from now() - min(created_at))::float8
              from jobs where status = 'queued' and batch_id is null) as oldest_single,
           (select extract(epoch from now() - min(created_at))::float8
              from jobs where status = 'queued' and batch_id is not null) as oldest_batch_item,
           (select count(*) from jobs where status = 'pending') as "batch_items_pending!",
           (select extract(epoch from now() - min(next_attempt_at))::float8
              from webhook_deliveries
             where status = 'pending' and next_attempt_at <= now()) as oldest_due_webhook"#,
    )
    .fetch_one(pool)
    .await
}

/// The jobs not finished yet, by status: the overview's "jobs by status".
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Unfinished {
    /// Batch items waiting in Postgres for the dispatcher.
    pub pending: i64,
    pub queued: i64,
    pub running: i64,
    pub retrying: i64,
}

/// One statement, each count read from a partial index (`jobs_batch_pending`, `jobs_queued`,
/// `jobs_running_lease`, `jobs_retrying`), so finished history is never scanned.
pub async fn unfinished(pool: &PgPool) -> Result<Unfinished, sqlx::Error> {
    sqlx::query_as!(
        Unfinished,
        r#"select (select count(*) from jobs where status = 'pending') as "pending!",
                (select count(*) from jobs where status = 'queued') as "queued!",
                (select count(*) from jobs where status = 'running') as "running!",
                (select count(*) from jobs where status = 'retrying') as "retrying!""#,
    )
    .fetch_one(pool)
    .await
}
