//! Liveness, readiness, the metrics and the OpenAPI document.

use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, extract::State};
use serde_json::json;

use crate::AppState;

/// The OpenAPI 3.1 description of this API, kept beside the routes it describes.
const OPENAPI: &str = include_str!("../../openapi.json");

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(crate::http::metrics::scrape))
}

/// Ready when both Postgres and RabbitMQ answer; 503 with `Retry-After` while either is down.
async fn readyz(State(state): State<AppState>) -> Response {
    // Known down: said at once. Otherwise asked, briefly (a failure has the probe look too).
    let postgres = !state.database.is_down()
        && tokio::time::timeout(Duration::from_secs(1), tollgate_core::db::ping(&state.pool))
            .await
            .is_ok_and(|ping| ping.is_ok());
    if !postgres {
        state.database.report();
    }
    let rabbitmq = state.broker.is_connected();
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body = Json(json!({
        "status": if postgres && rabbitmq { "ready" } else { "unavailable" },
        "checks": { "postgres": word(postgres), "rabbitmq": word(rabbitmq) },
        // How many api instances share the rate limits, as this one last counted.
        "api_instances": state.limiter.instances(),
    }));
    if postgres && rabbitmq {
        body.into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            body,
        )
            .into_response()
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
