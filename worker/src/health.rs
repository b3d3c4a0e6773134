//! This worker's report to the dashboard: every few seconds, its providers as it sees them
//! (circuits, slots, calls in flight) and the jobs it finished since the last report go to
//! Postgres (`worker_health`, `activity_minutes`), where the api's overview reads them — what
//! lives in a worker's memory is not something the api can ask for. The worker leaves at the end.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tollgate_core::db::workers::{self, ProviderState};
use uuid::Uuid;

use crate::Providers;
use crate::metrics::WorkerMetrics;

/// Reports every `every` until `done`, then once more, and leaves.
pub async fn report(
    providers: Providers,
    metrics: Arc<WorkerMetrics>,
    pool: PgPool,
    every: Duration,
    done: CancellationToken,
) {
    let id = Uuid::now_v7();
    loop {
        let states = states(&providers, &metrics);
        if let Err(error) = workers::report(&pool, id, &states).await {
            tracing::debug!(%error, "cannot report this worker's providers");
        }
        if let Err(error) = metrics.tally.report(&pool).await {
            tracing::debug!(%error, "cannot report the jobs this worker finished");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = done.cancelled() => break,
        }
    }
    if let Err(error) = metrics.tally.report(&pool).await {
        tracing::warn!(%error, "cannot report the jobs this worker finished last");
    }
    if let Err(error) = workers::leave(&pool, id).await {
        tracing::warn!(%error, "cannot remove this worker's report");
    }
}

fn states(providers: &Providers, metrics: &WorkerMetrics) -> Vec<ProviderState> {
    providers
        .health()
        .into_iter()
        .map(|health| ProviderState {
            provider: health.provider.to_owned(),
            in_flight: metrics.in_flight_now(health.provider, health.host.as_deref()),
            host: health.host,
            circuit_open: health.circuit_open,
            slots: health.slots,
        })
        .collect()
}
