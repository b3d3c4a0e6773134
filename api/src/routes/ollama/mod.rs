//! Ollama's API under `/ollama`, so apps written for Ollama (the official `ollama` Python package
//! among them, with `Client(host=".../ollama", headers={"Authorization": "Bearer …"})`) work with
//! only the host changed: chat and generate (NDJSON streams by default, as Ollama answers),
//! embeddings, the model list, and for admins pull and delete.
//!
//! Every call is a Tollgate job like any other (queued, retried, billed, at `/v1/jobs/{id}` under
//! its `x-request-id`), and any routed model works here, whether it runs on Ollama or OpenAI.
//! Errors are Ollama's `{"error": "…"}`: every problem+json answer is rewritten by
//! [`error_body`].

mod generation;
mod models;

use axum::Router;
use serde_json::{Value, json};

use crate::AppState;
use crate::http::database::DatabaseHealth;
use crate::http::error::ApiError;

pub fn router(database: DatabaseHealth) -> Router<AppState> {
    let routes = Router::new()
        .merge(generation::router())
        .merge(models::router());
    super::surface(routes, database, |_, problem| error_body(problem))
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
