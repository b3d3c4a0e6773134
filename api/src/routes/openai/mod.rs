//! OpenAI's API under `/openai/v1`, so OpenAI's own clients (the `openai` Python package among
//! them) work with only `base_url` and the key changed: Chat Completions and Responses (streamed
//! or not), Embeddings, Models, and the Batch API (upload a JSONL file, make a batch of it, poll
//! it, read its output and error files).
//!
//! Every call is a Tollgate job like any other (queued, retried, billed, at `/v1/jobs/{id}` under
//! its `x-request-id`), and a batch made here a Tollgate batch (scheduled fairly, billed per item,
//! also visible under `/v1/batches`); only the views are OpenAI's. Errors are OpenAI's shape, too:
//! every problem+json answer of these routes is rewritten by [`error_body`].

mod batch_input;
mod batches;
mod chat;
mod conversation;
mod embeddings;
mod files;
mod models;
mod objects;
mod replies;
mod requests;
mod response_events;
mod streams;

use std::fmt;
use std::str::FromStr;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use tollgate_core::domain::{BatchId, FileId};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::AppState;
use crate::http::database::DatabaseHealth;
use crate::http::error::{ApiError, ErrorCode, Problem};
use crate::http::path::PathId;

pub fn router(settings: &crate::ApiSettings, database: DatabaseHealth) -> OpenApiRouter<AppState> {
    let (files, document) = files::router().split_for_parts();
    let files = files.layer(DefaultBodyLimit::max(settings.batch_body_limit));
    let routes = OpenApiRouter::with_openapi(document)
        .merge(files.into())
        .merge(batches::router())
        .merge(chat::router(settings.image_body_limit))
        .merge(embeddings::router())
        .merge(models::router());
    super::surface(routes, database, error_body)
}

/// An error answer of every `/openai/v1` route, in OpenAI's shape (a 422 is answered 400, as
/// OpenAI does).
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiError {
    error: OpenAiErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
struct OpenAiErrorDetail {
    message: String,
    /// `authentication_error`, `permission_error`, `not_found_error`, `rate_limit_error`,
    /// `server_error` or `invalid_request_error`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The request parameter at fault (`input_file_id` for a bad line of an uploaded file, whose
    /// message names the line and field).
    param: Option<String>,
    /// Tollgate's stable problem code.
    code: ErrorCode,
}

/// OpenAI's `{"error": {message, type, param, code}}` for a problem answered with `status`.
fn error_body(status: StatusCode, problem: &Problem) -> Value {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500.. => "server_error",
        _ => "invalid_request_error",
    };
    let error = OpenAiError {
        error: OpenAiErrorDetail {
            message: problem.detail.clone(),
            kind,
            param: problem.field.clone(),
            code: problem.code,
        },
    };
    serde_json::to_value(error).unwrap_or_default()
}

/// An error as OpenAI writes it, for a stream's error event.
fn openai_error(error: &ApiError) -> Value {
    error_body(error.status(), &error.problem())
}

/// A batch's OpenAI id: `batch_` and its UUID's 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OpenAiBatchId(BatchId);

impl fmt::Display for OpenAiBatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch_{}", self.0.0.simple())
    }
}

impl PathId for OpenAiBatchId {
    const NOT_FOUND: &'static str = "no such batch";
}

impl FromStr for OpenAiBatchId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let hex = s.strip_prefix("batch_").ok_or(())?;
        simple_uuid(hex).map(|id| Self(BatchId(id)))
    }
}

/// A file's OpenAI id: an upload's `file-{hex}`, or a batch's generated output (`file-{hex}-output`)
/// and error (`file-{hex}-errors`) files, which are written from its items whenever they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenAiFileId {
    Upload(FileId),
    Output(BatchId),
    Errors(BatchId),
}

impl fmt::Display for OpenAiFileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Upload(id) => write!(f, "file-{}", id.0.simple()),
            Self::Output(id) => write!(f, "file-{}-output", id.0.simple()),
            Self::Errors(id) => write!(f, "file-{}-errors", id.0.simple()),
        }
    }
}

impl PathId for OpenAiFileId {
    const NOT_FOUND: &'static str = "no such file";
}

impl FromStr for OpenAiFileId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let rest = s.strip_prefix("file-").ok_or(())?;
        if let Some(hex) = rest.strip_suffix("-output") {
            return simple_uuid(hex).map(|id| Self::Output(BatchId(id)));
        }
        if let Some(hex) = rest.strip_suffix("-errors") {
            return simple_uuid(hex).map(|id| Self::Errors(BatchId(id)));
        }
        simple_uuid(rest).map(|id| Self::Upload(FileId(id)))
    }
}

/// A UUID written as 32 hex digits, and only so.
fn simple_uuid(hex: &str) -> Result<Uuid, ()> {
    if hex.len() != 32 {
        return Err(());
    }
    Uuid::try_parse(hex).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_refuse_other_forms() {
        let batch = OpenAiBatchId(BatchId::new());
        assert_eq!(batch.to_string().parse::<OpenAiBatchId>(), Ok(batch));
        assert_eq!(batch.to_string().len(), "batch_".len() + 32);
        let upload = OpenAiFileId::Upload(FileId::new());
        let output = OpenAiFileId::Output(batch.0);
        let errors = OpenAiFileId::Errors(batch.0);
        for id in [upload, output, errors] {
            assert_eq!(id.to_string().parse::<OpenAiFileId>(), Ok(id));
        }
        let hyphenated = batch.0.to_string();
        assert!(
            format!("batch_{hyphenated}")
                .parse::<OpenAiBatchId>()
                .is_err()
        );
        assert!(
            format!("file-{hyphenated}")
                .parse::<OpenAiFileId>()
                .is_err()
        );
        assert!("file-xyz-output".parse::<OpenAiFileId>().is_err());
        assert!("batch-1".parse::<OpenAiBatchId>().is_err());
    }
}
