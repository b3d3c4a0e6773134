//! Samples what waits for the workers — messages per queue, the age of the oldest waiting work,
//! batch items pending — every few seconds, so that a scrape only reads gauges (a scrape under
//! full load stays in the milliseconds); whether Postgres answered is the probe's readiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tollgate_core::queue::Broker;

use super::WorkerMetrics;

/// Samples until `shutdown`, saying in `postgres` whether each read was answered.
pub async fn sample(
    metrics: Arc<WorkerMetrics>,
    pool: PgPool,
    broker: Broker,
    every: Duration,
    postgres: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    loop {
        match broker.queue_depths().await {
            Ok(depths) => metrics.queue_depths(&depths),
            Err(error) => tracing::debug!(%error, "cannot read the queue depths"),
        }
        let read = tokio::time::timeout(every, tollgate_core::db::backlog::read(&pool)).await;
        postgres.store(matches!(read, Ok(Ok(_))), Ordering::Release);
        match read {
            Ok(Ok(backlog)) => metrics.backlog(&backlog, broker.topology()),
            Ok(Err(error)) => tracing::debug!(%error, "cannot read the backlog"),
            Err(_) => tracing::debug!("the backlog read timed out"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
