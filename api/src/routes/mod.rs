//! The router: every route, the fallbacks that keep even unknown routes problem+json, and the
//! layers every request passes through.

mod aliases;
mod billing;
mod dead_letters;
mod events;
mod health;
mod jobs;
mod models;
mod settings;
mod tenants;
mod usage;
mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use crate::{ApiSettings, AppState, error::ApiError};

pub fn router(state: AppState, settings: &ApiSettings) -> Router {
    Router::new()
        .merge(health::router())
        .merge(jobs::router())
        .merge(settings::router())
        .merge(aliases::router())
        .merge(dead_letters::router())
        .merge(usage::router())
        .merge(billing::router())
        .merge(events::router())
        .merge(webhooks::router())
        .merge(tenants::router())
        .merge(models::router())
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(settings.body_limit))
        // Until the response starts (an SSE body streams on past it); long enough for the longest
        // `Prefer: wait`.
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            crate::prefer::MAX_WAIT + Duration::from_secs(15),
        ))
        // 5xx answers are logged where they arise (internal errors) or are expected (503s).
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::WARN)))
        .with_state(state)
}
