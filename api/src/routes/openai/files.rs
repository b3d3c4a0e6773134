//! `POST /files` (multipart: `purpose=batch` and the JSONL `file`), `GET /files` (uploads, with
//! `after`, `limit`, `order`, `purpose`), `GET /files/{id}`, `GET /files/{id}/content` and
//! `DELETE /files/{id}`: uploaded batch inputs, and the output and error files of finished
//! batches, written from their items a page at a time whenever they are read.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};

use tollgate_core::db::batches::{self, Batch};
use tollgate_core::db::files::{self, NewFile, Order};
use tollgate_core::domain::openai_batch::Endpoint;

use super::batch_input;
use tollgate_core::domain::{FileId, NUL_REFUSED, TenantId};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::OpenAiFileId;
use super::objects::{self, OpenAiFile, OpenAiList};
use crate::AppState;
use crate::access::auth::Caller;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::{self, QueryParams};
use crate::http::path::{Path, not_found};

/// Most uploads listed at once, and the default (as OpenAI's).
const MAX_LISTED: i64 = 10_000;
/// Longest file name kept.
const MAX_FILENAME_CHARS: usize = 255;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload, list))
        .routes(routes!(show, delete))
        .routes(routes!(content))
}

/// Upload an OpenAI batch input file (multipart: `purpose=batch` and the JSONL `file`)
#[utoipa::path(post,
    path = "/files",
    tag = "OpenAI",
    description = "Each non-blank line must be `{\"custom_id\", \"method\": \"POST\", \"url\", \"body\"}` with `url` one of /v1/chat/completions, /v1/responses, /v1/embeddings; at most 50,000 lines and TOLLGATE_BATCH_BODY_LIMIT_BYTES. The bodies are judged when a batch is made of the file.",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The file", body = OpenAiFile),
        (status = 400, description = "Bad purpose, or a line that is not a request line (the message names it)"),
        (status = 413, description = "Larger than TOLLGATE_BATCH_BODY_LIMIT_BYTES"),
    ))]
async fn upload(
    State(state): State<AppState>,
    Caller(caller): Caller,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Json<OpenAiFile>, ApiError> {
    let mut form = form.map_err(|rejection| {
        ApiError::malformed(format!(
            "send the file as multipart/form-data: {}",
            rejection.body_text()
        ))
    })?;
    let unreadable = |error| multipart_error(error, state.batch_body_limit);
    let (mut purpose, mut file) = (None, None);
    while let Some(field) = form.next_field().await.map_err(unreadable)? {
        match field.name() {
            Some("purpose") => purpose = Some(field.text().await.map_err(unreadable)?),
            Some("file") => {
                let filename = field.file_name().unwrap_or("upload.jsonl").to_owned();
                file = Some((filename, field.bytes().await.map_err(unreadable)?));
            }
            _ => {}
        }
    }
    match purpose.as_deref() {
        Some("batch") => {}
        Some(other) => {
            return Err(ApiError::invalid_field(
                "purpose",
                format!("{other:?} is not supported: Tollgate takes files for \"batch\" only"),
            ));
        }
        None => return Err(ApiError::invalid_field("purpose", "is required")),
    }
    let (filename, content) = file.ok_or_else(|| ApiError::invalid_field("file", "is required"))?;
    if filename.contains('\0') {
        return Err(ApiError::invalid_field(
            "file",
            format!("its name {NUL_REFUSED}"),
        ));
    }
    if filename.chars().count() > MAX_FILENAME_CHARS {
        return Err(ApiError::invalid_field(
            "file",
            format!("its name is longer than {MAX_FILENAME_CHARS} characters"),
        ));
    }
    let text = std::str::from_utf8(&content)
        .map_err(|e| ApiError::invalid_field("file", format!("is not UTF-8 text: {e}")))?;
    let lines =
        batch_input::lines(text).map_err(|e| ApiError::invalid_field("file", e.to_string()))?;
    let stored = files::insert(
        &state.pool,
        &NewFile {
            id: FileId::new(),
            tenant_id: caller.tenant_id,
            filename: &filename,
            content: &content,
            line_count: i32::try_from(lines.len()).unwrap_or(i32::MAX),
        },
    )
    .await?;
    Ok(Json(objects::uploaded_file(&stored)))
}

/// A form that could not be read: too large, too slow, or not multipart.
fn multipart_error(error: MultipartError, limit: usize) -> ApiError {
    use axum::http::StatusCode;
    if extract::timed_out(&error) {
        ApiError::body_timeout()
    } else if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(limit)
    } else {
        ApiError::malformed(format!(
            "send the file as multipart/form-data: {}",
            error.body_text()
        ))
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// A file id: list the files after it.
    after: Option<String>,
    /// 1 to 10,000 (10,000 unless given).
    limit: Option<i64>,
    /// `desc` (newest first, the default) or `asc`.
    order: Option<String>,
    /// Only files of this purpose (`batch`).
    purpose: Option<String>,
}

/// A file upload, `multipart/form-data`.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "describes the form the handler reads field by field"
)]
struct UploadForm {
    /// `batch`.
    purpose: String,
    /// The JSONL file: one request per line.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// A deleted file.
#[derive(Serialize, ToSchema)]
#[schema(as = OpenAiFileDeleted)]
struct Deleted {
    id: String,
    /// `file`.
    object: &'static str,
    deleted: bool,
}

/// The tenant's uploads (output and error files are named by their batches, not listed)
///
/// The tenant's uploads. Output and error files are not listed: each batch names its own.
#[utoipa::path(get,
    path = "/files",
    tag = "OpenAI",
    params(ListQuery),
    responses(
        (status = 200, description = "The tenant's uploads", body = OpenAiList<OpenAiFile>),
        (status = 400, description = "The request cannot be run (`invalid_request_error`), `param` naming the field"),
    ))]
async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<OpenAiList<OpenAiFile>>, ApiError> {
    let limit = query.limit.unwrap_or(MAX_LISTED);
    if !(1..=MAX_LISTED).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be between 1 and {MAX_LISTED}"),
        ));
    }
    let order = match query.order.as_deref() {
        None | Some("desc") => Order::Newest,
        Some("asc") => Order::Oldest,
        Some(_) => return Err(ApiError::invalid_field("order", "must be asc or desc")),
    };
    let after = match query.after.as_deref().map(str::parse) {
        None => None,
        Some(Ok(OpenAiFileId::Upload(id))) => Some(id),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "after",
                "is not an uploaded file's id",
            ));
        }
    };
    // One more than asked tells whether there are more.
    let found = match query.purpose.as_deref() {
        None | Some("batch") => {
            files::list(&state.pool, caller.tenant_id, order, after, limit + 1).await?
        }
        Some(_) => Vec::new(),
    };
    Ok(Json(objects::page(
        found,
        limit,
        |f| OpenAiFileId::Upload(f.id).to_string(),
        objects::uploaded_file,
    )))
}

/// Delete an upload
///
/// Deletes an upload (batches made from it run on). A batch's output and error files go with it
/// and cannot be deleted on their own.
#[utoipa::path(delete,
    path = "/files/{id}",
    tag = "OpenAI",
    description = "Batches made from it run on and still name it",
    params(("id" = String, Path, description = "`file-…`")),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 404, description = "No such batch or file (`not_found`)"),
        (status = 409, description = "generated_file: a batch's output or error file"),
    ))]
async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(file): Path<OpenAiFileId>,
) -> Result<Json<Deleted>, ApiError> {
    let OpenAiFileId::Upload(upload) = file else {
        return Err(ApiError::conflict(
            ErrorCode::GeneratedFile,
            "a batch's output and error files are written from its items and cannot be deleted",
        ));
    };
    if !files::delete(&state.pool, caller.tenant_id, upload).await? {
        return Err(not_found::<OpenAiFileId>());
    }
    Ok(Json(Deleted {
        id: file.to_string(),
        object: "file",
        deleted: true,
    }))
}

/// An uploaded file, or a finished batch's output or error file
#[utoipa::path(get,
    path = "/files/{id}",
    tag = "OpenAI",
    params(("id" = String, Path, description = "`file-…`")),
    responses(
        (status = 200, description = "The file", body = OpenAiFile),
        (status = 404, description = "No such file, or the batch has not ended"),
    ))]
async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<OpenAiFileId>,
) -> Result<Json<OpenAiFile>, ApiError> {
    match id {
        OpenAiFileId::Upload(id) => files::get(&state.pool, caller.tenant_id, id)
            .await?
            .map(|file| Json(objects::uploaded_file(&file)))
            .ok_or_else(not_found::<OpenAiFileId>),
        generated @ (OpenAiFileId::Output(batch_id) | OpenAiFileId::Errors(batch_id)) => {
            let (batch, endpoint) = ended_batch(&state, caller.tenant_id, batch_id).await?;
            // Its size is that of its lines, counted by writing them.
            let bytes = generated_lines(&state, &batch, endpoint, generated)
                .try_fold(
                    0_i64,
                    |sum, line| async move { Ok(sum + line.len() as i64) },
                )
                .await?;
            Ok(Json(objects::generated_file(generated, &batch, bytes)))
        }
    }
}

/// A file's content: the upload as it came, or an output / error file as JSONL
#[utoipa::path(get,
    path = "/files/{id}/content",
    tag = "OpenAI",
    description = "Output lines: `{\"id\", \"custom_id\", \"response\": {\"status_code\": 200, \"request_id\", \"body\"}, \"error\": null}` with the body its endpoint answers (chat.completion, response, or embeddings list). Error lines: `{\"id\", \"custom_id\", \"response\": null, \"error\": {\"code\", \"message\"}}` (code `batch_cancelled` for a cancelled item). In submission order, streamed.",
    params(("id" = String, Path, description = "`file-…`")),
    responses(
        (status = 200, description = "The file's bytes (JSONL)", content_type = "application/octet-stream", body = String),
        (status = 404, description = "No such file, or the batch has not ended"),
    ))]
async fn content(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<OpenAiFileId>,
) -> Result<Response, ApiError> {
    let body = match id {
        OpenAiFileId::Upload(id) => files::content(&state.pool, caller.tenant_id, id)
            .await?
            .map(Body::from)
            .ok_or_else(not_found::<OpenAiFileId>)?,
        generated @ (OpenAiFileId::Output(batch_id) | OpenAiFileId::Errors(batch_id)) => {
            let (batch, endpoint) = ended_batch(&state, caller.tenant_id, batch_id).await?;
            Body::from_stream(generated_lines(&state, &batch, endpoint, generated))
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

/// The tenant's OpenAI-style batch whose output or error file is asked for, once it has ended
/// (before that its files do not exist, as at OpenAI).
async fn ended_batch(
    state: &AppState,
    tenant_id: TenantId,
    id: tollgate_core::domain::BatchId,
) -> Result<(Batch, Endpoint), ApiError> {
    let batch = batches::get(&state.pool, tenant_id, id)
        .await?
        .ok_or_else(not_found::<OpenAiFileId>)?;
    let endpoint = batch
        .openai_endpoint
        .as_deref()
        .and_then(Endpoint::parse)
        .ok_or_else(not_found::<OpenAiFileId>)?;
    if batch.finished_at.is_none() {
        return Err(not_found::<OpenAiFileId>());
    }
    Ok((batch, endpoint))
}

/// The lines of a batch's output or error file, in submission order.
fn generated_lines(
    state: &AppState,
    batch: &Batch,
    endpoint: Endpoint,
    file: OpenAiFileId,
) -> impl Stream<Item = Result<Bytes, sqlx::Error>> + Send + 'static {
    let errors = matches!(file, OpenAiFileId::Errors(_));
    let model = batch.model.clone();
    batches::results(state.pool.clone(), batch.id).filter_map(move |item| {
        let line = match item {
            Ok(item) => objects::result_line(endpoint, &model, &item, errors).map(Ok),
            Err(error) => Some(Err(error)),
        };
        std::future::ready(line)
    })
}
