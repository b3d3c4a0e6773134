//! Ollama's API under `/ollama`, so apps written for Ollama (the official `ollama` Python package
//! among them, with `Client(host=".../ollama", headers={"Authorization": "Bearer …"})`) work with
//! only the host changed: chat and generate (NDJSON streams by default, as Ollama answers),
//! embeddings, the model list, and for admins pull and delete.
//!
//! Every call is a Tollgate job like any other (queued, retried, billed, at `/v1/jobs/{id}` under
//! its `x-request-id`), and any routed model works here, whether it runs on Ollama or OpenAI.
//! Errors are Ollama's `{"error": "…"}`: every problem+json answer is rewritten by
//! [`error_body`].

mod conversation;
mod generation;
mod models;
mod requests;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::http::database::DatabaseHealth;
use crate::http::error::{ApiError, Problem};

pub fn router(image_body_limit: usize, database: DatabaseHealth) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new()
        .merge(generation::router(image_body_limit))
        .merge(models::router());
    super::surface(routes, database, |_, problem| error_body(problem))
}

/// An error answer of every `/ollama` route, in Ollama's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct OllamaError {
    /// What went wrong, prefixed by the field at fault.
    error: String,
}

/// Ollama's error object for a problem: its detail, prefixed by the field at fault.
fn error_body(problem: &Problem) -> Value {
    let detail = &problem.detail;
    let error = match &problem.field {
        Some(field) if !detail.starts_with(field.as_str()) => format!("{field}: {detail}"),
        _ => detail.clone(),
    };
    serde_json::to_value(OllamaError { error }).unwrap_or_default()
}

/// An error as Ollama writes it, for a stream's last line.
fn ollama_error(error: &ApiError) -> Value {
    error_body(&error.problem())
}
