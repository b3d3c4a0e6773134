//! Liveness, readiness, the metrics and the OpenAPI document.

use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::openapi::Document;
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi))
        .routes(routes!(crate::http::metrics::scrape))
}

/// The process answers.
#[derive(Serialize, ToSchema)]
struct Alive {
    /// Always `ok`.
    status: &'static str,
}

/// Liveness
///
/// The process answers; it says nothing of Postgres or RabbitMQ (see `/readyz`).
#[utoipa::path(get, path = "/healthz", tag = "Service", responses((status = 200, body = Alive)))]
async fn healthz() -> Json<Alive> {
    Json(Alive { status: "ok" })
}

/// Whether this instance can serve, and what it depends on.
#[derive(Serialize, ToSchema)]
struct Readiness {
    /// `ready` or `unavailable`.
    status: &'static str,
    checks: Checks,
    /// How many api instances share the rate limits, as this one last counted.
    api_instances: u32,
}

/// Each dependency: `ok` or `unavailable`.
#[derive(Serialize, ToSchema)]
struct Checks {
    postgres: &'static str,
    rabbitmq: &'static str,
}

/// Readiness
///
/// Ready when both Postgres and RabbitMQ answer; 503 with `Retry-After` while either is down.
#[utoipa::path(get, path = "/readyz", tag = "Service", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "Postgres or RabbitMQ is down", body = Readiness,
        headers(("Retry-After" = u32, description = "Seconds"))),
))]
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
    let body = Json(Readiness {
        status: if postgres && rabbitmq {
            "ready"
        } else {
            "unavailable"
        },
        checks: Checks {
            postgres: word(postgres),
            rabbitmq: word(rabbitmq),
        },
        api_instances: state.limiter.instances(),
    });
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

/// This document
///
/// The OpenAPI 3.1 description of every route, derived from the handlers and their types.
#[utoipa::path(get, path = "/openapi.json", tag = "Service", responses(
    (status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object),
))]
async fn openapi(Extension(document): Extension<Document>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document.0)
}
