//! Samples what waits for the workers — messages per queue, the age of the oldest waiting work,
//! batch items pending — every few seconds, so that a scrape only reads gauges (a scrape under
//! full load stays in the milliseconds).

use std::sync::Arc;
use std::time::Duration;

use shared::queue::Broker;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::WorkerMetrics;

/// Samples until `shutdown`.
pub async fn sample(
    metrics: Arc<WorkerMetrics>,
    pool: PgPool,
    broker: Broker,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match broker.queue_depths().await {
            Ok(depths) => metrics.queue_depths(&depths),
            Err(error) => tracing::debug!(%error, "cannot read the queue depths"),
        }
        match shared::db::backlog::read(&pool).await {
            Ok(backlog) => metrics.backlog(&backlog, broker.topology()),
            Err(error) => tracing::debug!(%error, "cannot read the backlog"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
