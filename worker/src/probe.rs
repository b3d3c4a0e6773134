//! The worker's own small HTTP listener (`TOLLGATE_WORKER_LISTEN`): `/metrics` for Prometheus,
//! `/healthz` and `/readyz` for an orchestrator's probes. Nothing else is served on it.
//!
//! It runs on a thread and runtime of its own: a worker at full load keeps its runtime's threads
//! busy with jobs, and a scrape queued behind them would wait its turn. Nothing here touches the
//! database or the broker: it reads what the worker's tasks keep current (the metrics, the
//! providers' state, and Postgres's health as the backlog sampler last saw it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tollgate_core::metrics::ScrapeGuard;
use tollgate_core::queue::Broker;

use crate::Providers;
use crate::metrics::WorkerMetrics;

/// What the probe's handlers read.
#[derive(Clone)]
pub struct Probe {
    pub metrics: Arc<WorkerMetrics>,
    pub providers: Providers,
    pub broker: Broker,
    pub guard: ScrapeGuard,
    /// Whether Postgres answered the backlog sampler's last read.
    pub postgres: Arc<AtomicBool>,
}

/// Serves the probe on `listener` from a thread of its own until `shutdown`.
pub fn spawn(
    listener: TcpListener,
    probe: Probe,
    shutdown: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    let listener = listener.into_std()?;
    std::thread::Builder::new()
        .name("worker-probe".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "cannot start the worker probe's runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, probe, shutdown).await,
                    Err(error) => tracing::error!(%error, "cannot serve the worker probe"),
                }
            });
        })
}

async fn serve(listener: TcpListener, probe: Probe, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .with_state(probe);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "worker probe listening");
    }
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "the worker probe stopped");
    }
}

async fn metrics(State(probe): State<Probe>, headers: HeaderMap) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if !probe.guard.allows(authorization) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "send `Authorization: Bearer <TOLLGATE_METRICS_TOKEN>`\n",
        )
            .into_response();
    }
    probe.metrics.health(&probe.providers.health());
    match tollgate_core::metrics::render(probe.metrics.registry()) {
        Ok(text) => (
            [(header::CONTENT_TYPE, tollgate_core::metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Ready when Postgres answered the sampler's last read and RabbitMQ is connected: a worker
/// without either cannot work.
async fn readyz(State(probe): State<Probe>) -> Response {
    let postgres = probe.postgres.load(Ordering::Acquire);
    let rabbitmq = probe.broker.is_connected();
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body = Json(json!({
        "status": if postgres && rabbitmq { "ready" } else { "unavailable" },
        "checks": { "postgres": word(postgres), "rabbitmq": word(rabbitmq) },
    }));
    if postgres && rabbitmq {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}
