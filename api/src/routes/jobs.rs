//! Job intake and lookup: `POST /v1/generate|chat|embedding` (with `Prefer: wait=N`),
//! `GET /v1/jobs[/{id}]`, `POST /v1/jobs/{id}/cancel`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::db::jobs::{self, CancelOutcome, NewJob};
use shared::domain::{
    BatchId, ChatMessage, ChatRequest, EmbeddingInput, EmbeddingRequest, GenerateRequest,
    GenerationOptions, Job, JobId, JobRequest, JobStatus, NUL_REFUSED, ValidationError,
    nul_in_value,
};
use shared::queue::JobEvent;

use super::paging;
use crate::auth::Caller;
use crate::client::ClientInfo;
use crate::error::ApiError;
use crate::extract::{IdempotentJson, QueryParams};
use crate::idempotency::{self, Begun, Key};
use crate::{AppState, admission, prefer};

/// What a submission carries besides its request.
struct Submission {
    metadata: Option<Value>,
    webhook_url: Option<String>,
}

/// A job's URL, for `Location`.
fn location_of(id: JobId) -> String {
    format!("/v1/jobs/{id}")
}

/// Largest `metadata` object accepted, in bytes of JSON.
const MAX_METADATA_BYTES: usize = 16 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/generate", post(generate))
        .route("/v1/chat", post(chat))
        .route("/v1/embedding", post(embedding))
        .route("/v1/jobs", get(list))
        .route("/v1/jobs/{id}", get(show))
        .route("/v1/jobs/{id}/cancel", post(cancel))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateBody {
    model: String,
    prompt: String,
    options: Option<GenerationOptions>,
    metadata: Option<Value>,
    webhook_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatBody {
    model: String,
    messages: Vec<ChatMessage>,
    options: Option<GenerationOptions>,
    metadata: Option<Value>,
    webhook_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingBody {
    model: String,
    input: EmbeddingInput,
    metadata: Option<Value>,
    webhook_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    batch_id: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct JobPage {
    data: Vec<Job>,
    /// Pass as `cursor` to get the next (older) page; `null` on the last page.
    next_cursor: Option<JobId>,
}

async fn generate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    headers: HeaderMap,
    IdempotentJson { body, key }: IdempotentJson<GenerateBody>,
) -> Result<Response, ApiError> {
    let request =
        GenerateRequest::parse(&body.model, body.prompt, body.options).map_err(invalid)?;
    let request = JobRequest::Generate(request);
    let extra = Submission {
        metadata: body.metadata,
        webhook_url: body.webhook_url,
    };
    submit(&state, caller, client, &headers, request, extra, key).await
}

async fn chat(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    headers: HeaderMap,
    IdempotentJson { body, key }: IdempotentJson<ChatBody>,
) -> Result<Response, ApiError> {
    let request = ChatRequest::parse(&body.model, body.messages, body.options).map_err(invalid)?;
    let request = JobRequest::Chat(request);
    let extra = Submission {
        metadata: body.metadata,
        webhook_url: body.webhook_url,
    };
    submit(&state, caller, client, &headers, request, extra, key).await
}

async fn embedding(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    headers: HeaderMap,
    IdempotentJson { body, key }: IdempotentJson<EmbeddingBody>,
) -> Result<Response, ApiError> {
    let request = EmbeddingRequest::parse(&body.model, body.input).map_err(invalid)?;
    let request = JobRequest::Embedding(request);
    let extra = Submission {
        metadata: body.metadata,
        webhook_url: body.webhook_url,
    };
    submit(&state, caller, client, &headers, request, extra, key).await
}

/// Admits the job (against the tenant's quota, if any), then publishes its id; answers 202 with
/// the job and its `Location` — or, with `Prefer: wait=N`, 200 with the finished job if it ends
/// within N seconds. With an `Idempotency-Key`, the answer is recorded with the job, and a retry
/// gets that first answer instead of a second job.
///
/// The broker's state is checked first so that, while it is down, nothing is written and the
/// client is told to come back (503). If the publish fails after the commit the job is still
/// accepted: it is durable in Postgres and the worker's sweeper publishes it.
async fn submit(
    state: &AppState,
    caller: shared::db::tokens::Principal,
    client: ClientInfo,
    headers: &HeaderMap,
    request: JobRequest,
    extra: Submission,
    key: Option<Key>,
) -> Result<Response, ApiError> {
    let metadata = check_metadata(extra.metadata)?;
    let model = request.model().as_str();
    if !state.runtime.current().routes.serves(model) {
        return Err(ApiError::invalid_field(
            "model",
            format!("no provider serves {model:?}: ask an admin to add a route for it"),
        ));
    }
    if !state.broker.is_connected() {
        return Err(ApiError::unavailable(
            "the message broker is unavailable",
            5,
        ));
    }
    let webhook_url = match extra.webhook_url {
        Some(url) => Some(super::webhooks::accept_url(state, caller.tenant_id, &url).await?),
        None => None,
    };
    let new_job = NewJob {
        id: JobId::new(),
        tenant_id: caller.tenant_id,
        token_id: Some(caller.token_id),
        request,
        metadata,
        origin: client.origin,
        client_ip: client.ip,
        reservation: None,
        webhook_url,
    };
    // Watched before it exists, so its end cannot be missed.
    let wait = prefer::wait(headers);
    let watch = wait.map(|_| state.watchers.watch(new_job.id));
    let job = match &key {
        None => admission::admit(&state.pool, &caller.limits, new_job).await?,
        Some(key) => {
            let mut tx = match idempotency::begin(&state.pool, caller.tenant_id, key).await? {
                Begun::Replay(first) => return Ok(first),
                Begun::Fresh(tx) => tx,
            };
            let admitted = async {
                let job = admission::admit_in(&mut tx, &caller.limits, new_job).await?;
                let body = serde_json::to_value(&job).map_err(ApiError::internal)?;
                let location = location_of(job.id);
                let status = StatusCode::ACCEPTED;
                idempotency::record(&mut tx, caller.tenant_id, key, status, &location, &body)
                    .await?;
                Ok::<_, ApiError>(job)
            }
            .await;
            match admitted {
                Ok(job) => {
                    tx.commit().await?;
                    job
                }
                Err(error) => return Err(idempotency::abandon(tx, error).await),
            }
        }
    };
    match state.broker.publish_job(job.id).await {
        Ok(()) => state.published.confirmed(job.id),
        Err(error) => {
            tracing::warn!(job_id = %job.id, %error, "publish failed; the sweeper will resend")
        }
    }
    let location = HeaderValue::from_str(&location_of(job.id)).map_err(ApiError::internal)?;
    let (Some(wait), Some(watch)) = (wait, watch) else {
        return Ok((
            StatusCode::ACCEPTED,
            [(header::LOCATION, location)],
            Json(job),
        )
            .into_response());
    };
    let applied =
        HeaderValue::from_str(&format!("wait={}", wait.as_secs())).map_err(ApiError::internal)?;
    let headers = [(header::LOCATION, location), (PREFERENCE_APPLIED, applied)];
    // The job is accepted whatever happens while waiting: a failed read still answers 202.
    match super::events::finished_within(state, caller.tenant_id, job.id, watch, wait).await {
        Ok(Some(finished)) => Ok((StatusCode::OK, headers, Json(finished)).into_response()),
        Ok(None) => Ok((StatusCode::ACCEPTED, headers, Json(job)).into_response()),
        Err(error) => {
            tracing::warn!(job_id = %job.id, %error, "cannot read the awaited job; answering 202");
            Ok((StatusCode::ACCEPTED, headers, Json(job)).into_response())
        }
    }
}

const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let id = parse_job_id(&id)?;
    jobs::get(&state.pool, caller.tenant_id, id)
        .await?
        .map(Json)
        .ok_or_else(job_not_found)
}

async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let status = query
        .status
        .map(|s| {
            JobStatus::parse(&s)
                .ok_or_else(|| ApiError::invalid_field("status", "is not a job status"))
        })
        .transpose()?;
    let limit = paging::limit(query.limit)?;
    let cursor = paging::cursor::<JobId>(query.cursor)?;
    let batch_id = query
        .batch_id
        .map(|b| {
            b.parse::<BatchId>()
                .map_err(|_| ApiError::invalid_field("batch_id", "is not a batch id"))
        })
        .transpose()?;
    let data = jobs::list(
        &state.pool,
        caller.tenant_id,
        status,
        batch_id,
        cursor,
        limit,
    )
    .await?;
    let next_cursor = paging::next_cursor(&data, limit, |j| j.id);
    Ok(Json(JobPage { data, next_cursor }))
}

async fn cancel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let id = parse_job_id(&id)?;
    match jobs::cancel(&state.pool, caller.tenant_id, id).await? {
        CancelOutcome::Cancelled {
            job,
            revision,
            delivery,
        } => {
            let event = JobEvent::new(job.id, revision, JobStatus::Cancelled);
            state.broker.publish_event(event).await;
            if let Some(delivery) = delivery
                && let Err(error) = state.broker.publish_webhooks(&[delivery]).await
            {
                tracing::warn!(%error, "webhook publish failed; the sweeper will resend");
            }
            Ok(Json(job))
        }
        CancelOutcome::TooLate(job) => Err(ApiError::conflict(
            "job_not_cancellable",
            format!(
                "the job is {} and can no longer be cancelled",
                job.status.as_str()
            ),
        )),
        CancelOutcome::NotFound => Err(job_not_found()),
    }
}

pub(super) fn invalid(error: ValidationError) -> ApiError {
    ApiError::invalid_field(error.field, error.message)
}

pub(super) fn check_metadata(metadata: Option<Value>) -> Result<Option<Value>, ApiError> {
    match metadata {
        None | Some(Value::Null) => Ok(None),
        Some(metadata @ Value::Object(_)) => {
            // A body's metadata was checked with the body; a batch's from its query string was not.
            if let Some(path) = nul_in_value(&metadata) {
                let field = match path.as_str() {
                    "body" => "metadata".to_owned(),
                    path => format!("metadata.{path}"),
                };
                return Err(ApiError::invalid_field(field, NUL_REFUSED));
            }
            let size = serde_json::to_vec(&metadata)
                .map_err(ApiError::internal)?
                .len();
            if size > MAX_METADATA_BYTES {
                return Err(ApiError::invalid_field(
                    "metadata",
                    format!("must be at most {MAX_METADATA_BYTES} bytes of JSON"),
                ));
            }
            Ok(Some(metadata))
        }
        Some(_) => Err(ApiError::invalid_field("metadata", "must be a JSON object")),
    }
}

/// A malformed id is answered like an unknown one: there is no such job.
pub(super) fn parse_job_id(id: &str) -> Result<JobId, ApiError> {
    id.parse().map_err(|_| job_not_found())
}

pub(super) fn job_not_found() -> ApiError {
    ApiError::not_found("no such job")
}
