//! The worker's own small HTTP listener (`TOLLGATE_WORKER_LISTEN`): `/metrics` for Prometheus,
//! `/healthz` and `/readyz` for an orchestrator's probes. Nothing else is served on it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use shared::metrics::ScrapeGuard;
use shared::queue::Broker;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Providers;
use crate::metrics::WorkerMetrics;

/// What the probe's handlers read.
#[derive(Clone)]
pub struct Probe {
    pub metrics: Arc<WorkerMetrics>,
    pub providers: Providers,
    pub pool: PgPool,
    pub broker: Broker,
    pub guard: ScrapeGuard,
}

/// Serves the probe on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, probe: Probe, shutdown: CancellationToken) {
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
    match shared::metrics::render(probe.metrics.registry()) {
        Ok(text) => (
            [(header::CONTENT_TYPE, shared::metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Ready when Postgres answers and RabbitMQ is connected: a worker without either cannot work.
async fn readyz(State(probe): State<Probe>) -> Response {
    let postgres = tokio::time::timeout(Duration::from_secs(1), shared::db::ping(&probe.pool))
        .await
        .is_ok_and(|ping| ping.is_ok());
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
