//! `POST /batches` (from an uploaded file), `GET /batches/{id}`, `GET /batches` (newest first,
//! `after` and `limit`) and `POST /batches/{id}/cancel`.
//!
//! The input file is judged whole when the batch is made, so a bad line is a 400 naming it rather
//! than a batch that fails later; a batch accepted is in progress at once.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value};
use tollgate_core::db::batches::{self, Batch, Listing, NewBatch, OpenAiOrigin};
use tollgate_core::db::files;
use tollgate_core::domain::openai_batch::Endpoint;

use super::batch_input;
use tollgate_core::domain::{BatchId, BatchSpec, ValidationError};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::objects::{self, COMPLETION_WINDOW, OpenAiBatch, OpenAiList};
use super::{OpenAiBatchId, OpenAiFileId};
use crate::AppState;
use crate::access::auth::Caller;
use crate::http::client::ClientInfo;
use crate::http::error::ApiError;
use crate::http::extract::QueryParams;
use crate::http::path::{Path, not_found};
use crate::intake::idempotency::IdempotentJson;
use crate::intake::{self, Accepted};
use crate::routes::paging;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show))
        .routes(routes!(cancel))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OpenAiBatchRequest)]
struct CreateBatch {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    metadata: Option<Map<String, Value>>,
    /// How long OpenAI keeps the output files; Tollgate writes them from the items, which it keeps.
    #[serde(rename = "output_expires_after")]
    _output_expires_after: Option<Value>,
}

/// OpenAI's metadata limits: 16 pairs, keys of 64 characters, string values of 512.
fn check_metadata(metadata: Option<Map<String, Value>>) -> Result<Option<Value>, ApiError> {
    let Some(metadata) = metadata else {
        return Ok(None);
    };
    let invalid = |message: String| ApiError::invalid_field("metadata", message);
    if metadata.len() > 16 {
        return Err(invalid("holds at most 16 pairs".into()));
    }
    for (key, value) in &metadata {
        if key.chars().count() > 64 {
            return Err(invalid(format!("key {key:?} is longer than 64 characters")));
        }
        match value {
            Value::String(v) if v.chars().count() <= 512 => {}
            _ => {
                return Err(invalid(format!(
                    "{key:?} must be a string of at most 512 characters"
                )));
            }
        }
    }
    Ok(Some(Value::Object(metadata)))
}

/// Make a batch of an uploaded file
#[utoipa::path(post,
    path = "/batches",
    tag = "OpenAI",
    description = "Every line must call `endpoint` with one model; the file is judged whole, and a bad line is a 400 on `input_file_id` naming the line and field. Accepts `Idempotency-Key`.",
    request_body = CreateBatch,
    responses(
        (status = 200, description = "The batch", body = OpenAiBatch),
        (status = 400, description = "The request cannot be run (`invalid_request_error`), `param` naming the field"),
        (status = 404, description = "No such input file"),
    ))]
async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    IdempotentJson { body, key, .. }: IdempotentJson<CreateBatch>,
) -> Result<Response, ApiError> {
    let endpoint = Endpoint::parse(&body.endpoint).ok_or_else(|| {
        ApiError::invalid_field(
            "endpoint",
            format!(
                "must be one of {}",
                Endpoint::ALL.map(Endpoint::as_str).join(", ")
            ),
        )
    })?;
    if body.completion_window != COMPLETION_WINDOW {
        return Err(ApiError::invalid_field(
            "completion_window",
            format!("must be {COMPLETION_WINDOW:?}"),
        ));
    }
    let metadata = check_metadata(body.metadata)?;
    let no_file = || ApiError::not_found("no such file").with_field("input_file_id");
    let Ok(OpenAiFileId::Upload(file_id)) = body.input_file_id.parse() else {
        return Err(no_file());
    };
    let content = files::content(&state.pool, caller.tenant_id, file_id)
        .await?
        .ok_or_else(no_file)?;
    let text = String::from_utf8(content).map_err(ApiError::internal)?;
    let bad_file = |detail: String| ApiError::invalid_field("input_file_id", detail);
    // The file passed `batch_input::lines` at upload; `items` parses each line once.
    let lines = batch_input::stored_lines(&text).map_err(|e| bad_file(e.to_string()))?;
    let (model, items) =
        batch_input::items(endpoint, &lines).map_err(|e| bad_file(e.to_string()))?;
    let model = intake::served_model(&state, &caller, &model)
        .await
        .map_err(|error| {
            bad_file(format!(
                "line {}: body.model: {}",
                lines[0].0,
                error.detail().trim_start_matches("model: ")
            ))
        })?;
    let spec = BatchSpec {
        kind: endpoint.kind(),
        model,
        options: None,
        template: None,
        tools: Vec::new(),
        tool_choice: Default::default(),
        output: Default::default(),
    };
    let mut items = spec
        .items(items, |i| lines.get(i).map(|&(number, _)| number))
        .map_err(|error| bad_file(in_line_terms(error)))?;
    intake::capable_items(&state, &caller, &items)?;
    intake::images::read_batch(&state, &mut items)?;
    let batch = NewBatch {
        id: BatchId::new(),
        tenant_id: caller.tenant_id,
        token_id: Some(caller.token_id),
        kind: spec.kind,
        model: spec.model.as_str().to_owned(),
        metadata,
        webhook_url: None,
        origin: client.origin,
        client_ip: client.ip,
        traceparent: client.trace,
        items,
        reservations: None,
        openai: Some(OpenAiOrigin {
            endpoint,
            input_file_id: file_id,
        }),
        cache: Vec::new(),
    };
    let accepted = |batch: &Batch| {
        Ok(Accepted {
            status: StatusCode::OK,
            location: format!("/openai/v1/batches/{}", OpenAiBatchId(batch.id)),
            body: serde_json::to_value(objects::batch(batch)).map_err(ApiError::internal)?,
        })
    };
    intake::batch(&state, &caller, key.as_ref(), batch, accepted)
        .await?
        .into_response()
}

/// An item's error in the terms of its line: `items[3].options.temperature` with "line 4: must
/// be…" becomes "line 4: body.temperature: must be…".
fn in_line_terms(error: ValidationError) -> String {
    let field = error
        .field
        .split_once("].")
        .map_or(error.field.as_str(), |(_, rest)| rest);
    let field = match field {
        "custom_id" => "custom_id".to_owned(),
        field => format!("body.{}", field.strip_prefix("options.").unwrap_or(field)),
    };
    match error.message.split_once(": ") {
        Some((line, message)) if line.starts_with("line ") => format!("{line}: {field}: {message}"),
        _ => format!("{field}: {}", error.message),
    }
}

/// An OpenAI-style batch
#[utoipa::path(get,
    path = "/batches/{id}",
    tag = "OpenAI",
    params(("id" = String, Path, description = "`batch_…`")),
    responses(
        (status = 200, description = "The batch", body = OpenAiBatch),
        (status = 404, description = "No such batch or file (`not_found`)"),
    ))]
async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(OpenAiBatchId(id)): Path<OpenAiBatchId>,
) -> Result<Json<OpenAiBatch>, ApiError> {
    openai_batch(batches::get(&state.pool, caller.tenant_id, id).await?).map(Json)
}

/// The batch's OpenAI view; a batch made through `/v1/batches` has none and is not found here.
fn openai_batch(batch: Option<Batch>) -> Result<OpenAiBatch, ApiError> {
    batch
        .filter(|b| b.openai_endpoint.is_some())
        .map(|b| objects::batch(&b))
        .ok_or_else(not_found::<BatchId>)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// A batch id: list the batches after it.
    after: Option<String>,
    /// 1 to 100 (20 unless given).
    limit: Option<i64>,
}

/// The tenant's OpenAI-style batches, newest first
#[utoipa::path(get,
    path = "/batches",
    tag = "OpenAI",
    params(ListQuery),
    responses(
        (status = 200, description = "The tenant's batches, newest first", body = OpenAiList<OpenAiBatch>),
        (status = 400, description = "The request cannot be run (`invalid_request_error`), `param` naming the field"),
    ))]
async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<OpenAiList<OpenAiBatch>>, ApiError> {
    let limit = paging::limit(query.limit)?;
    let after = query
        .after
        .map(|a| {
            a.parse::<OpenAiBatchId>()
                .map_err(|()| ApiError::invalid_field("after", "is not a batch id"))
        })
        .transpose()?;
    // One more than asked tells whether there are more.
    let found = batches::list(
        &state.pool,
        caller.tenant_id,
        Listing::OpenAi,
        after.map(|a| a.0),
        limit + 1,
    )
    .await?;
    Ok(Json(objects::page(
        found,
        limit,
        |b| OpenAiBatchId(b.id).to_string(),
        objects::batch,
    )))
}

/// Cancel: items not started are cancelled at once, running ones finish
#[utoipa::path(post,
    path = "/batches/{id}/cancel",
    tag = "OpenAI",
    params(("id" = String, Path, description = "`batch_…`")),
    responses(
        (status = 200, description = "The batch", body = OpenAiBatch),
        (status = 404, description = "No such batch or file (`not_found`)"),
        (status = 409, description = "The batch completed"),
    ))]
async fn cancel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(OpenAiBatchId(id)): Path<OpenAiBatchId>,
) -> Result<Json<OpenAiBatch>, ApiError> {
    // Only an OpenAI-style batch may be cancelled here.
    openai_batch(batches::get(&state.pool, caller.tenant_id, id).await?)?;
    let batch = crate::cancelling::batch(&state, caller.tenant_id, id).await?;
    Ok(Json(objects::batch(&batch)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn item_errors_are_told_in_the_terms_of_the_line() {
        let error = ValidationError::new(
            "items[3].options.temperature",
            "line 4: must be between 0 and 2",
        );
        assert_eq!(
            in_line_terms(error),
            "line 4: body.temperature: must be between 0 and 2"
        );
        let error = ValidationError::new("items[0].custom_id", "line 1: repeats items[0]");
        assert_eq!(in_line_terms(error), "line 1: custom_id: repeats items[0]");
        let error = ValidationError::new("items[1].messages[0].content", "line 2: is empty");
        assert_eq!(
            in_line_terms(error),
            "line 2: body.messages[0].content: is empty"
        );
    }

    #[test]
    fn metadata_is_held_to_openais_limits() {
        let pairs = |n: usize| {
            Some(Map::from_iter(
                (0..n).map(|i| (format!("k{i}"), json!("v"))),
            ))
        };
        assert!(check_metadata(pairs(16)).is_ok());
        assert!(check_metadata(pairs(17)).is_err());
        let number = Map::from_iter([("k".to_owned(), json!(1))]);
        assert!(check_metadata(Some(number)).is_err());
        assert_eq!(check_metadata(None).expect("none"), None);
    }
}
