//! Anthropic's Messages API under `/anthropic`, so the `anthropic` SDK and Claude Code work with
//! only the base URL changed (`ANTHROPIC_BASE_URL=http://host/anthropic`): messages, streamed or
//! not, on any routed model whatever its upstream; `count_tokens`; the model list; and the `HEAD
//! /` Claude Code probes with. The key is the caller's token, as `x-api-key` or a bearer token.
//!
//! Every call is a Tollgate job like any other (queued, retried, billed, at `/v1/jobs/{id}` under
//! its `request-id`). Errors are Anthropic's shape (`{"type": "error", "error": {"type",
//! "message"}, "request_id"}`) with Anthropic's status for each type: every problem+json answer
//! of these routes is rewritten by [`error_body`], and [`answered`] names the request in it and
//! in `request-id`.
//!
//! - `requests` — a request read into the conversation model, with Anthropic's extras kept;
//! - `replies` — a finished job as a `message`;
//! - `events` — the stream's events;
//! - `messages` — the routes.

mod events;
mod messages;
mod replies;
mod requests;

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};
use tollgate_core::provider::anthropic_wire::{error_status, error_type};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::calls::answer::REQUEST_ID;
use crate::http::database::DatabaseHealth;
use crate::http::error::Problem;

/// Anthropic's header naming the request (the job) behind an answer.
static ANTHROPIC_REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

pub fn router(body_limit: usize, database: DatabaseHealth) -> OpenApiRouter<AppState> {
    let routes = messages::router(body_limit);
    let (routes, document) = super::surface(routes, database, error_body).split_for_parts();
    let routes = routes.layer(axum::middleware::map_response(answered));
    OpenApiRouter::with_openapi(document).merge(routes.into())
}

/// An error answer of every `/anthropic` route, in Anthropic's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnthropicError {
    /// `error`.
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicErrorDetail,
    /// The job's id when there is one, else the request's own.
    request_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct AnthropicErrorDetail {
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `not_found_error`,
    /// `request_too_large`, `rate_limit_error`, `api_error`, `timeout_error` or
    /// `overloaded_error`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// What went wrong, prefixed by the field at fault.
    message: String,
}

/// Anthropic's error object for a problem answered with `status` (its `request_id` is added by
/// [`answered`]): a failed job's Anthropic upstream's own, unchanged, when it answered one about
/// the request or its load (Claude Code's retry logic reads its wording) — not one about the
/// gateway's own key or account, which is no concern of the client's.
fn error_body(status: StatusCode, problem: &Problem) -> Value {
    if let Some(upstream) = problem.upstream.as_deref()
        && upstream["type"] == "error"
        && let Some(kind) = upstream["error"]["type"].as_str()
        && !matches!(
            kind,
            "authentication_error" | "permission_error" | "billing_error"
        )
        && status_of(kind).is_some()
    {
        return upstream.clone();
    }
    let detail = &problem.detail;
    let message = match &problem.field {
        Some(field) if !detail.starts_with(field.as_str()) => format!("{field}: {detail}"),
        _ => detail.clone(),
    };
    let error = AnthropicError {
        kind: "error",
        error: AnthropicErrorDetail {
            kind: error_type(anthropic_status(status).as_u16()),
            message,
        },
        request_id: None,
    };
    serde_json::to_value(error).unwrap_or_default()
}

/// The status Anthropic answers with an error of type `kind`.
fn status_of(kind: &str) -> Option<StatusCode> {
    error_status(kind).and_then(|status| StatusCode::from_u16(status).ok())
}

/// The status Anthropic answers where Tollgate answers `status`: it is overloaded (529) where
/// Tollgate is unavailable for a moment (503), which Anthropic's clients retry alike.
fn anthropic_status(status: StatusCode) -> StatusCode {
    match status {
        StatusCode::SERVICE_UNAVAILABLE => StatusCode::from_u16(529).unwrap_or(status),
        other => other,
    }
}

/// Names the request behind every answer in `request-id` (the job's id, as `x-request-id` does),
/// and in an error's body, with Anthropic's status.
async fn answered(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let request_id = parts
        .headers
        .get(&REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .map_or_else(
            || format!("req_{}", uuid::Uuid::now_v7().simple()),
            str::to_owned,
        );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        parts.headers.insert(ANTHROPIC_REQUEST_ID.clone(), value);
    }
    let is_json = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !parts.status.is_client_error() && !parts.status.is_server_error() || !is_json {
        return Response::from_parts(parts, body);
    }
    parts.status = anthropic_status(parts.status);
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let mut error: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        json!({ "type": "error", "error": { "type": error_type(parts.status.as_u16()),
                                            "message": String::from_utf8_lossy(&bytes) } })
    });
    // An upstream's error passed on already names its request (Anthropic's always do): it
    // keeps its id, and is answered with the status its type has.
    if error.get("request_id").is_none_or(Value::is_null) {
        error["request_id"] = json!(request_id);
    } else if let Some(status) = error["error"]["type"].as_str().and_then(status_of) {
        parts.status = status;
    }
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(error.to_string()))
}
