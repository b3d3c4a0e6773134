//! The router: every route, the fallbacks that keep even unknown routes problem+json, and the
//! layers every request passes through.

mod admin;
mod batch_events;
mod batches;
mod dashboard;
mod events;
mod health;
mod job_history;
mod jobs;
mod models;
mod ollama;
mod openai;
mod paging;
mod tenancy;
mod usage;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use crate::http::{database, error::ApiError};
use crate::{ApiSettings, AppState};

pub fn router(state: AppState, settings: &ApiSettings) -> Router {
    let metrics = state.metrics.clone();
    // Every route but health's needs Postgres: while it is known to be down, 503 at once instead
    // of waiting on the pool (the OpenAI surface says so in its own shape).
    let needs_database = Router::new()
        .merge(jobs::router())
        .merge(job_history::router())
        .merge(events::router())
        .merge(batches::router(settings.batch_body_limit))
        .merge(batch_events::router())
        .merge(usage::router())
        .merge(models::router())
        .merge(admin::router())
        .layer(axum::middleware::from_fn_with_state(
            state.database.clone(),
            database::gate,
        ));
    Router::new()
        .merge(health::router())
        .merge(dashboard::router())
        .merge(needs_database)
        .nest(
            "/openai/v1",
            openai::router(settings.batch_body_limit, state.database.clone()),
        )
        .nest("/ollama", ollama::router(state.database.clone()))
        .route_layer(axum::middleware::from_fn(crate::http::metrics::mark_route))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(settings.body_limit))
        // A body must arrive by its deadline (else 408); a refusal leaves the connection usable.
        .layer(axum::middleware::from_fn_with_state(
            settings.body_read_timeout,
            crate::http::request_body::guard,
        ))
        .layer(axum::middleware::from_fn(
            crate::access::limits::rate_headers,
        ))
        .layer(cors())
        // Until the response starts (an SSE body streams on past it); long enough for the longest
        // `Prefer: wait` and the longest sync call.
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            crate::http::prefer::MAX_WAIT.max(settings.sync_timeout) + Duration::from_secs(15),
        ))
        // 5xx answers are logged where they arise (internal errors) or are expected (503s).
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::WARN)))
        // Each request's span of its trace, and its count and time: one layer for both.
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::http::metrics::track,
        ))
        .with_state(state)
}

/// A drop-in surface's routes: answered 503 at once while Postgres is known to be down, with the
/// api's 404 and 405 for what it lacks, and every problem+json answer rewritten in the surface's
/// error shape by `render` (see [`crate::http::error::in_dialect`]).
fn surface(
    routes: Router<AppState>,
    database: database::DatabaseHealth,
    render: fn(axum::http::StatusCode, &serde_json::Value) -> serde_json::Value,
) -> Router<AppState> {
    routes
        .layer(axum::middleware::from_fn_with_state(
            database,
            database::gate,
        ))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::map_response(
            move |response: axum::response::Response| {
                crate::http::error::in_dialect(response, render)
            },
        ))
}

/// CORS for browser clients. A preflight carries no token, so it is answered for any origin; the
/// request itself is then held to its token's allowed domains (403 `origin_not_allowed`), so a
/// browser can only ever use a token from the origins the token allows.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("prefer"),
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("preference-applied"),
        ])
        .max_age(Duration::from_secs(600))
}
