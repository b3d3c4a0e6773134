//! Batches: `POST /v1/batches` (a JSON object with `items`, or JSONL items with the batch's
//! settings in the query string), `GET /v1/batches[/{id}]`, `GET /v1/batches/{id}/results`
//! (JSONL, streamed) and `POST /v1/batches/{id}/cancel`. An admin reads another tenant's batches
//! with `?tenant_id=` ([`super::tenancy`]).
//!
//! A batch is validated as a whole (an error names the item, and its line in JSONL), then it and
//! every item are written in one transaction, as `pending`: the worker's dispatcher releases them.
//! An `Idempotency-Key` makes a retry return the same batch.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_core::db::batches::{self, Batch, ItemResult, NewBatch};
use tollgate_core::domain::conversation::{OutputFormat, Tool, ToolChoice};
use tollgate_core::domain::{BatchId, BatchItem, BatchSpec, GenerationOptions, JobKind, Template};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::paging;
use super::tenancy::{self, ForTenant};
use crate::AppState;
use crate::access::auth::Caller;
use crate::http::client::ClientInfo;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::{self, QueryParams};
use crate::http::path::{Path, not_found};
use crate::intake::idempotency::{self, Key};
use crate::intake::{self, Accepted};

pub fn router(batch_body_limit: usize) -> OpenApiRouter<AppState> {
    let (schemas, paths, create) = routes!(create);
    let create = create.layer(DefaultBodyLimit::max(batch_body_limit));
    OpenApiRouter::new()
        .routes((schemas, paths, create))
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(results))
        .routes(routes!(cancel))
}

/// A batch as one JSON object.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = BatchRequest)]
struct BatchBody {
    kind: JobKind,
    model: String,
    options: Option<GenerationOptions>,
    template: Option<String>,
    /// Chat batches: the tools every item offers.
    tools: Option<Vec<Tool>>,
    /// Chat batches: `auto` (the default), `none`, `required`, or `{"tool": "<name>"}`.
    tool_choice: Option<ToolChoice>,
    /// The form every item's answer takes unless the item gives its own `output` (a JSON
    /// schema: each answer is checked, so a batch of products comes back as validated objects or
    /// per-item `invalid_structured_output` errors).
    output: Option<OutputFormat>,
    items: Vec<BatchItem>,
    metadata: Option<Value>,
    webhook_url: Option<String>,
}

/// A JSONL batch's settings, in the query string (`metadata` as a JSON object).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct JsonlQuery {
    /// JSONL bodies only (required then): the items' kind.
    #[param(required = false)]
    kind: JobKind,
    /// JSONL bodies only (required then): the model every item runs on.
    #[param(required = false)]
    model: String,
    /// JSONL bodies only: a prompt template whose `{{field}}`s each item's `variables` fill.
    template: Option<String>,
    /// JSONL bodies only: the batch's metadata, a JSON object.
    metadata: Option<String>,
    /// JSONL bodies only: where the batch's terminal event is POSTed.
    webhook_url: Option<String>,
}

/// What both forms come to.
struct Submitted {
    kind: JobKind,
    model: String,
    options: Option<GenerationOptions>,
    template: Option<String>,
    tools: Vec<Tool>,
    tool_choice: ToolChoice,
    output: OutputFormat,
    items: Vec<BatchItem>,
    /// Per item, its line in a JSONL body.
    lines: Option<Vec<usize>>,
    metadata: Option<Value>,
    webhook_url: Option<String>,
}

/// Submit a batch
#[utoipa::path(post, path = "/v1/batches", tag = "Batches",
    description = "Many items of one kind and model, as one JSON object, or as JSONL (`application/jsonl` or `application/x-ndjson`: one item per line, the batch's settings in the query string). Answers 202 with the batch and its `Location`; its items are scheduled fairly against other tenants' work.",
    request_body(content((BatchBody = "application/json"), (String = "application/jsonl"), (String = "application/x-ndjson"))),
    params(JsonlQuery, ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer instead of a second batch")),
    responses(
        (status = 202, description = "Accepted: the batch", body = Batch, headers(("Location" = String, description = "The batch's URL"))),
        (status = 409, description = "`idempotency_key_in_use`"),
        (status = 413, description = "`body_too_large`: over `TOLLGATE_BATCH_BODY_LIMIT_BYTES`"),
        (status = 415, description = "`unsupported_media_type`: neither JSON nor JSONL"),
        (status = 422, description = "A field or an item is refused (`invalid_field` naming it, `items[i].field` with its line in JSONL), `model_not_served` (no provider can serve the model for this caller; the detail names it and the reason: `data_policy`, `no_route` or `route_disabled`), or `idempotency_key_reused`"),
    ))]
async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    request: Request,
) -> Result<Response, ApiError> {
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let key_header = request.headers().get(idempotency::HEADER).cloned();
    let (submitted, bytes) = read_submission(&state, request).await?;
    let key = Key::from_header(key_header.as_ref(), || {
        idempotency::fingerprint(&method, &uri, &bytes)
    })?;
    drop(bytes);
    let metadata = intake::check_metadata(submitted.metadata)?;
    let model = intake::served_model(&state, &caller, &submitted.model).await?;
    let template = submitted
        .template
        .as_deref()
        .map(Template::parse)
        .transpose()
        .map_err(ApiError::from)?;
    // The batch's own options are judged once, under their own name, not on each item.
    let options = match (submitted.kind, submitted.options) {
        (JobKind::Embedding, Some(_)) => {
            return Err(ApiError::invalid_field(
                "options",
                "embedding batches take no options",
            ));
        }
        (_, options) => options
            .map(GenerationOptions::validate)
            .transpose()
            .map_err(ApiError::from)?,
    };
    if submitted.kind != JobKind::Chat && !submitted.tools.is_empty() {
        return Err(ApiError::invalid_field(
            "tools",
            "only chat batches offer tools",
        ));
    }
    let spec = BatchSpec {
        kind: submitted.kind,
        model,
        options,
        template,
        tools: submitted.tools,
        tool_choice: submitted.tool_choice,
        output: submitted.output,
    };
    let lines = submitted.lines;
    let mut items = spec
        .items(submitted.items, |i| {
            lines.as_ref().and_then(|l| l.get(i).copied())
        })
        .map_err(ApiError::from)?;
    intake::capable_items(&state, &caller, &items)?;
    intake::images::read_batch(&state, &mut items)?;
    let webhook_url = match submitted.webhook_url {
        Some(url) => Some(intake::webhook_url(&state, caller.tenant_id, &url).await?),
        None => None,
    };
    let batch = NewBatch {
        id: BatchId::new(),
        tenant_id: caller.tenant_id,
        token_id: Some(caller.token_id),
        kind: spec.kind,
        model: spec.model.as_str().to_owned(),
        metadata,
        webhook_url,
        origin: client.origin,
        client_ip: client.ip,
        traceparent: client.trace,
        items,
        reservations: None,
        openai: None,
        cache: Vec::new(),
    };
    let accepted = |batch: &Batch| {
        Ok(Accepted {
            status: StatusCode::ACCEPTED,
            location: format!("/v1/batches/{}", batch.id),
            body: serde_json::to_value(batch).map_err(ApiError::internal)?,
        })
    };
    intake::batch(&state, &caller, key.as_ref(), batch, accepted)
        .await?
        .into_response()
}

/// Reads either form of the body: JSON (`application/json`) or JSONL (`application/jsonl`,
/// `application/x-ndjson`), whose settings are in the query string. Also returns the raw body
/// (an `Idempotency-Key` fingerprints it).
async fn read_submission(
    state: &AppState,
    request: Request,
) -> Result<(Submitted, Bytes), ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if is_jsonl(&content_type) {
        let (mut parts, body) = request.into_parts();
        let QueryParams(query) =
            <QueryParams<JsonlQuery> as FromRequestParts<AppState>>::from_request_parts(
                &mut parts, state,
            )
            .await?;
        let request = Request::from_parts(parts, body);
        let bytes = extract::body_bytes(request, state, state.batch_body_limit).await?;
        let (items, lines) = parse_jsonl(&bytes)?;
        let metadata = query
            .metadata
            .map(|m| {
                serde_json::from_str(&m).map_err(|e| {
                    ApiError::invalid_field("metadata", format!("is not a JSON object: {e}"))
                })
            })
            .transpose()?;
        let submitted = Submitted {
            kind: query.kind,
            model: query.model,
            options: None,
            template: query.template,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            output: OutputFormat::Text,
            items,
            lines: Some(lines),
            metadata,
            webhook_url: query.webhook_url,
        };
        return Ok((submitted, bytes));
    }
    if !extract::is_json(request.headers().get(header::CONTENT_TYPE)) {
        return Err(ApiError::unsupported_media_type());
    }
    let bytes = extract::body_bytes(request, state, state.batch_body_limit).await?;
    let body: BatchBody = extract::parse(&bytes)?;
    let submitted = Submitted {
        kind: body.kind,
        model: body.model,
        options: body.options,
        template: body.template,
        tools: body.tools.unwrap_or_default(),
        tool_choice: body.tool_choice.unwrap_or_default(),
        output: body.output.unwrap_or_default(),
        items: body.items,
        lines: None,
        metadata: body.metadata,
        webhook_url: body.webhook_url,
    };
    Ok((submitted, bytes))
}

fn is_jsonl(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "application/jsonl" | "application/x-ndjson" | "application/x-jsonlines"
    )
}

/// One item per non-blank line; an error names the item and its line.
fn parse_jsonl(bytes: &Bytes) -> Result<(Vec<BatchItem>, Vec<usize>), ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ApiError::malformed(format!("the body is not UTF-8: {e}")))?;
    let mut items = Vec::new();
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = index + 1;
        let item = extract::parse_line::<BatchItem>(line, number).map_err(|error| {
            let Some(field) = error.field_name() else {
                return error;
            };
            // The detail is `{field}: {message}`; the item's path replaces the line's.
            let message = error
                .detail()
                .strip_prefix(&format!("{field}: "))
                .unwrap_or(error.detail());
            let path = match field.as_str() {
                "body" => format!("items[{}]", items.len()),
                field => format!("items[{}].{field}", items.len()),
            };
            ApiError::invalid_field(path, format!("line {number}: {message}"))
        })?;
        items.push(item);
        lines.push(number);
    }
    Ok((items, lines))
}

/// One of your batches
#[utoipa::path(get, path = "/v1/batches/{id}", tag = "Batches", params(("id" = BatchId, Path), ForTenant),
    responses(
        (status = 200, description = "The batch, with its counts by status and usage", body = Batch),
        (status = 404, description = "No such batch"),
        (status = 422, description = "`tenant_id` is not a tenant id"),
    ))]
async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<BatchId>,
    QueryParams(query): QueryParams<ForTenant>,
) -> Result<Json<Batch>, ApiError> {
    let tenant_id = tenancy::tenant(&caller, query.tenant_id.as_deref())?;
    batches::get(&state.pool, tenant_id, id)
        .await?
        .map(Json)
        .ok_or_else(not_found::<BatchId>)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Page size, 1 to 100 (20 unless given).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Admins: this tenant's batches instead of your own.
    #[param(value_type = Option<tollgate_core::domain::TenantId>)]
    tenant_id: Option<String>,
}

/// A page of batches, newest first.
#[derive(Serialize, ToSchema)]
struct BatchPage {
    data: Vec<Batch>,
    next_cursor: Option<BatchId>,
}

/// Your batches
#[utoipa::path(get, path = "/v1/batches", tag = "Batches", params(ListQuery),
    responses(
        (status = 200, description = "A page of batches", body = BatchPage),
        (status = 422, description = "A parameter is refused (`invalid_field`, naming it)"),
    ))]
async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<BatchPage>, ApiError> {
    let limit = paging::limit(query.limit)?;
    let cursor = paging::cursor::<BatchId>(query.cursor)?;
    let data = batches::list(
        &state.pool,
        tenancy::tenant(&caller, query.tenant_id.as_deref())?,
        batches::Listing::All,
        cursor,
        limit,
    )
    .await?;
    let next_cursor = paging::next_cursor(&data, limit, |b| b.id);
    Ok(Json(BatchPage { data, next_cursor }))
}

/// A batch's results
///
/// Every item's outcome as JSONL, in submission order, read a page at a time so that no batch is
/// ever held in memory whole.
#[utoipa::path(get, path = "/v1/batches/{id}/results", tag = "Batches", params(("id" = BatchId, Path)),
    responses(
        (status = 200, description = "One line per item, in submission order", content_type = "application/jsonl", body = ItemResult),
        (status = 404, description = "No such batch"),
        (status = 410, description = "`job_expired`: the batch's items are past `results_expire_at` and gone"),
    ))]
async fn results(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<BatchId>,
) -> Result<Response, ApiError> {
    let batch = batches::get(&state.pool, caller.tenant_id, id)
        .await?
        .ok_or_else(not_found::<BatchId>)?;
    // Every item's day was dropped: the results are gone, not empty.
    if batch.counts.total == 0 && batch.results_expire_at <= chrono::Utc::now() {
        return Err(ApiError::gone(
            ErrorCode::JobExpired,
            format!(
                "the batch's results expired at {}: jobs are kept `job_retention_days`",
                batch.results_expire_at.to_rfc3339()
            ),
        ));
    }
    let lines = batches::results(state.pool.clone(), id).map_ok(|item| {
        let mut line = serde_json::to_vec(&item).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    });
    Ok((
        [(header::CONTENT_TYPE, "application/jsonl")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// Cancel a batch
#[utoipa::path(post, path = "/v1/batches/{id}/cancel", tag = "Batches",
    description = "Its queued items are cancelled at once, its running ones through their workers; what has finished stays (and is billed).",
    params(("id" = BatchId, Path)),
    responses(
        (status = 200, description = "The batch", body = Batch),
        (status = 404, description = "No such batch"),
        (status = 409, description = "`batch_not_cancellable`: it has completed"),
    ))]
async fn cancel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<BatchId>,
) -> Result<Json<Batch>, ApiError> {
    crate::cancelling::batch(&state, caller.tenant_id, id)
        .await
        .map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_items_keep_their_line_numbers_and_blank_lines_are_skipped() {
        let body = Bytes::from_static(
            b"{\"custom_id\":\"a\",\"prompt\":\"x\"}\n\n{\"custom_id\":\"b\",\"prompt\":\"y\"}\n",
        );
        let (items, lines) = parse_jsonl(&body).expect("parsed");
        assert_eq!(items.len(), 2);
        assert_eq!(lines, [1, 3]);
        let bad = Bytes::from_static(
            b"{\"custom_id\":\"a\",\"prompt\":\"x\"}\n{\"custom_id\":\"b\",\"colour\":1}\n",
        );
        let error = parse_jsonl(&bad).expect_err("unknown field");
        assert_eq!(error.field_name().as_deref(), Some("items[1].colour"));
        assert!(
            error
                .detail()
                .starts_with("items[1].colour: line 2: unknown field"),
            "{}",
            error.detail()
        );
        assert!(is_jsonl("application/x-ndjson; charset=utf-8"));
        assert!(!is_jsonl("application/json"));
    }
}
