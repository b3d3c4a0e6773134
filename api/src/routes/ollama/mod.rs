//! Ollama's API under `/ollama`, so apps written for Ollama (the official `ollama` Python package
//! among them, with `Client(host=".../ollama", headers={"Authorization": "Bearer …"})`) work with
//! only the host changed: chat and generate (NDJSON streams by default, as Ollama answers),
//! embeddings, the model list, and for admins pull and delete.
//!
//! Every call is a Tollgate job like any other (queued, retried, billed, at `/v1/jobs/{id}` under
//! its `x-request-id`), and any routed model works here, whether it runs on Ollama or OpenAI.
//! Errors are Ollama's `{"error": "…"}`: every problem+json answer is rewritten by
//! [`ollama_errors`].

mod generation;
mod models;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::AppState;
use crate::database::DatabaseHealth;
use crate::error::ApiError;

pub fn router(database: DatabaseHealth) -> Router<AppState> {
    Router::new()
        .merge(generation::router())
        .merge(models::router())
        .layer(axum::middleware::from_fn_with_state(
            database,
            crate::database::gate,
        ))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::map_response(ollama_errors))
}

/// Rewrites a problem+json answer as Ollama's `{"error": "…"}` (naming the field at fault),
/// keeping its headers; a 422 becomes 400, as Ollama answers a request it cannot run.
async fn ollama_errors(response: Response) -> Response {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let problem: Value = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Err(_) => Value::Null,
    };
    if parts.status == StatusCode::UNPROCESSABLE_ENTITY {
        parts.status = StatusCode::BAD_REQUEST;
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(error_body(&problem).to_string()))
}

/// Ollama's error object for a problem: its detail, prefixed by the field at fault.
fn error_body(problem: &Value) -> Value {
    let detail = problem["detail"].as_str().unwrap_or("the request failed");
    let message = match problem["field"].as_str() {
        Some(field) if !detail.starts_with(field) => format!("{field}: {detail}"),
        _ => detail.to_owned(),
    };
    json!({ "error": message })
}

/// An error as Ollama writes it, for a stream's last line.
fn ollama_error(error: &ApiError) -> Value {
    error_body(&error.problem())
}
