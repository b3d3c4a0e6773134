//! Job intake and lookup: `POST /v1/generate|chat|embedding` (with `Prefer: wait=N`, or
//! `"stream": true` for the text as it is generated),
//! `GET /v1/jobs[/{id}]`, `POST /v1/jobs/{id}/cancel` (its provider calls and deliveries are in
//! [`super::job_history`]). An admin reads another tenant's with `?tenant_id=`
//! ([`super::tenancy`]).

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_core::db::jobs::{self, CancelOutcome, NewJob};
use tollgate_core::domain::{
    BatchId, ChatMessage, ChatRequest, EmbeddingInput, EmbeddingRequest, GenerateRequest,
    GenerationOptions, Job, JobId, JobRequest, JobStatus,
};

use super::paging;
use super::tenancy::{self, ForTenant};
use crate::AppState;
use crate::access::auth::Caller;
use crate::http::client::ClientInfo;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::{IdempotentJson, QueryParams};
use crate::http::path::{Path, not_found};
use crate::http::prefer;
use crate::intake::idempotency::Key;
use crate::intake::{self, Accepted, Intake};
use crate::watching::feed::{Dialect, Feed};
use crate::watching::watch;

/// What a submission carries besides its request.
struct Submission {
    metadata: Option<Value>,
    webhook_url: Option<String>,
    stream: bool,
}

/// How a submitted job is answered (and a retry with its `Idempotency-Key`): 202 with the job.
fn accepted(job: &Job) -> Result<Accepted, ApiError> {
    Ok(Accepted {
        status: StatusCode::ACCEPTED,
        location: location_of(job.id),
        body: serde_json::to_value(job).map_err(ApiError::internal)?,
    })
}

/// A job's URL, for `Location`.
fn location_of(id: JobId) -> String {
    format!("/v1/jobs/{id}")
}

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
    /// Answer with the job's text as it is generated (SSE) rather than 202.
    stream: Option<bool>,
    metadata: Option<Value>,
    webhook_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatBody {
    model: String,
    messages: Vec<ChatMessage>,
    options: Option<GenerationOptions>,
    stream: Option<bool>,
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
    tenant_id: Option<String>,
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
    let request = GenerateRequest::parse(&body.model, body.prompt, body.options)?;
    let request = JobRequest::Generate(request);
    let extra = Submission {
        metadata: body.metadata,
        webhook_url: body.webhook_url,
        stream: body.stream == Some(true),
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
    let request = ChatRequest::parse(&body.model, body.messages, body.options)?;
    let request = JobRequest::Chat(request);
    let extra = Submission {
        metadata: body.metadata,
        webhook_url: body.webhook_url,
        stream: body.stream == Some(true),
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
    let request = EmbeddingRequest::parse(&body.model, body.input)?;
    let request = JobRequest::Embedding(request);
    let extra = Submission {
        metadata: body.metadata,
        webhook_url: body.webhook_url,
        stream: false,
    };
    submit(&state, caller, client, &headers, request, extra, key).await
}

/// Admits the job through the intake ([`crate::intake`]) and answers 202 with the job and its
/// `Location` — or, with `Prefer: wait=N`, 200 with the finished job if it ends within N seconds;
/// or with `"stream": true`, an event stream of its text (see [`streamed`]). With an
/// `Idempotency-Key`, a retry gets the first answer (the job) instead of a second job.
async fn submit(
    state: &AppState,
    caller: tollgate_core::db::tokens::Principal,
    client: ClientInfo,
    headers: &HeaderMap,
    request: JobRequest,
    extra: Submission,
    key: Option<Key>,
) -> Result<Response, ApiError> {
    let metadata = intake::check_metadata(extra.metadata)?;
    intake::served_model(state, request.model().as_str())?;
    let webhook_url = match extra.webhook_url {
        Some(url) => Some(intake::webhook_url(state, caller.tenant_id, &url).await?),
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
        stream_to: extra.stream.then(|| state.followers.key().to_owned()),
        traceparent: client.trace,
    };
    if new_job.stream_to.is_some() {
        return streamed(state, caller, key, new_job).await;
    }
    // Watched before it exists, so its end cannot be missed.
    let wait = prefer::wait(headers);
    let watch = wait.map(|_| state.watchers.watch(new_job.id));
    let (job, answer) = match intake::job(state, &caller, key.as_ref(), new_job, accepted).await? {
        Intake::Replayed(first) => return Ok(first),
        Intake::Admitted { work, answer } => (work, answer),
    };
    let (Some(wait), Some(watch)) = (wait, watch) else {
        return answer.into_response();
    };
    let location = HeaderValue::from_str(&answer.location).map_err(ApiError::internal)?;
    let applied =
        HeaderValue::from_str(&format!("wait={}", wait.as_secs())).map_err(ApiError::internal)?;
    let headers = [(header::LOCATION, location), (PREFERENCE_APPLIED, applied)];
    // The job is accepted whatever happens while waiting: a failed read still answers 202.
    match watch::finished_within(&state.pool, caller.tenant_id, job.id, watch, wait).await {
        Ok(Some(finished)) => Ok((StatusCode::OK, headers, Json(finished)).into_response()),
        Ok(None) => Ok((StatusCode::ACCEPTED, headers, Json(job)).into_response()),
        Err(error) => {
            tracing::warn!(job_id = %job.id, %error, "cannot read the awaited job; answering 202");
            Ok((StatusCode::ACCEPTED, headers, Json(job)).into_response())
        }
    }
}

/// A streaming submission: watched, and its text followed, before it exists; answered with SSE:
/// `event: job` (accepted), `event: delta` (`{"text"}`) per piece, and `event: job` with the
/// ended job (its `error` says why a stream failed), or `event: error` (problem+json) when the
/// sync timeout passed first. The client going away cancels the job.
async fn streamed(
    state: &AppState,
    caller: tollgate_core::db::tokens::Principal,
    key: Option<Key>,
    new_job: NewJob,
) -> Result<Response, ApiError> {
    let watch = state.watchers.watch(new_job.id);
    let following = state.followers.follow(new_job.id).await?;
    let job = match intake::job(state, &caller, key.as_ref(), new_job, accepted).await? {
        Intake::Replayed(first) => return Ok(first),
        Intake::Admitted { work, .. } => work,
    };
    let location = HeaderValue::from_str(&location_of(job.id)).map_err(ApiError::internal)?;
    let feed = Box::new(Feed::following(
        state,
        caller.tenant_id,
        &job,
        following,
        watch,
    ));
    let events = feed
        .written_in(NativeEvents {
            accepted: Some(job),
        })
        .map(Ok::<_, Infallible>);
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(state.sse_heartbeat));
    Ok(([(header::LOCATION, location)], sse).into_response())
}

/// The native stream's events.
struct NativeEvents {
    /// The job as accepted, for the opening event.
    accepted: Option<Job>,
}

impl Dialect for NativeEvents {
    type Item = Event;
    const STREAM: &'static str = "native";

    fn opening(&mut self) -> Vec<Event> {
        self.accepted
            .take()
            .and_then(|job| job_event(&job))
            .into_iter()
            .collect()
    }

    fn text(&mut self, text: &str) -> Vec<Event> {
        crate::http::sse::delta_event(text).into_iter().collect()
    }

    fn ended(&mut self, job: &Job) -> Vec<Event> {
        job_event(job).into_iter().collect()
    }

    fn failed(&mut self, error: &ApiError) -> Vec<Event> {
        Event::default()
            .event("error")
            .json_data(error.problem())
            .ok()
            .into_iter()
            .collect()
    }
}

fn job_event(job: &Job) -> Option<Event> {
    Event::default().event("job").json_data(job).ok()
}

const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<JobId>,
    QueryParams(query): QueryParams<ForTenant>,
) -> Result<Json<Job>, ApiError> {
    let tenant_id = tenancy::tenant(&caller, query.tenant_id.as_deref())?;
    jobs::get(&state.pool, tenant_id, id)
        .await?
        .map(Json)
        .ok_or_else(not_found::<JobId>)
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
        tenancy::tenant(&caller, query.tenant_id.as_deref())?,
        status,
        batch_id,
        cursor,
        limit,
    )
    .await?;
    let next_cursor = paging::next_cursor(&data, limit, |j| j.id);
    Ok(Json(JobPage { data, next_cursor }))
}

/// Cancels a job: at once while no worker holds it (200 with the cancelled job), else through the
/// worker running it, which aborts the provider call; the answer waits briefly for that (200 with
/// the ended job, or 202 with the running one when the worker takes longer).
async fn cancel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<JobId>,
) -> Result<Response, ApiError> {
    let watch = state.watchers.watch(id);
    match crate::cancelling::job(&state, caller.tenant_id, id).await? {
        CancelOutcome::Cancelled { job, .. } => Ok(Json(job).into_response()),
        CancelOutcome::Requested(job) => {
            let ended = watch::finished_within(
                &state.pool,
                caller.tenant_id,
                id,
                watch,
                RUNNING_CANCEL_WAIT,
            )
            .await?;
            Ok(match ended {
                Some(ended) => Json(ended).into_response(),
                None => (StatusCode::ACCEPTED, Json(job)).into_response(),
            })
        }
        CancelOutcome::TooLate(job) => Err(ApiError::conflict(
            ErrorCode::JobNotCancellable,
            format!(
                "the job is {} and can no longer be cancelled",
                job.status.as_str()
            ),
        )),
        CancelOutcome::NotFound => Err(not_found::<JobId>()),
    }
}

/// How long cancelling a running job waits for its worker to end it.
const RUNNING_CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
