//! Job intake and lookup: `POST /v1/generate|chat|embedding` (with `Prefer: wait=N`, or
//! `"stream": true` for the text as it is generated),
//! `GET /v1/jobs[/{id}]`, `POST /v1/jobs/{id}/cancel` (its provider calls and deliveries are in
//! [`super::job_history`]). An admin reads another tenant's with `?tenant_id=`
//! ([`super::tenancy`]).

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_core::db::jobs::{self, CancelOutcome, NewJob};
use tollgate_core::domain::cache::{CacheAsk, JobCache};
use tollgate_core::domain::conversation::{
    Conversation, Image, Message, OutputFormat, Tool, ToolChoice,
};
use tollgate_core::domain::{
    BatchId, ChatRequest, EmbeddingInput, EmbeddingRequest, GenerateRequest, GenerationOptions,
    Job, JobId, JobRequest, JobStatus, SEVERAL_NOT_STREAMED, ValidationError,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::openapi::Submitting;
use super::paging;
use super::tenancy::{self, ForTenant};
use crate::AppState;
use crate::access::auth::Caller;
use crate::calls::answer::with_cache;
use crate::calls::feed::{Dialect, Feed};
use crate::http::client::ClientInfo;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::QueryParams;
use crate::http::path::{Path, missing_job};
use crate::http::prefer;
use crate::http::sse::{JobEventName, JobStreamEvent};
use crate::intake::idempotency::IdempotentJson;
use crate::intake::idempotency::Key;
use crate::intake::images::{self, ImagePlaces};
use crate::intake::{self, Accepted, Intake};
use crate::watching::watch;

/// What a submission carries besides its request.
struct Submission {
    metadata: Option<Value>,
    webhook_url: Option<String>,
    /// What it asks of the response cache (its `Cache-Control` where it asks nothing).
    cache: Option<CacheAsk>,
    stream: bool,
    /// The size of the body it came in.
    size: usize,
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

pub fn router(image_body_limit: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(super::images_inline(routes!(generate), image_body_limit))
        .routes(super::images_inline(routes!(chat), image_body_limit))
        .routes(routes!(embedding))
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(cancel))
}

/// `POST /v1/generate`: a prompt, answered by its completion.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GenerateRequest)]
struct GenerateBody {
    /// A model clients may submit (`GET /v1/models`).
    model: String,
    prompt: String,
    options: Option<GenerationOptions>,
    /// The form the answer must take: `{"type": "json_object"}` or `{"type": "json_schema",
    /// "name", "schema", "strict"}` (checked: an answer that does not match is asked for again,
    /// then the job fails with `invalid_structured_output`).
    output: Option<OutputFormat>,
    /// Images shown with the prompt, each `{"url"}`: a `data:` URL (base64) or an `http(s)` URL
    /// fetched at intake (PNG, JPEG, WebP or GIF).
    images: Option<Vec<Image>>,
    /// Answer with the job's text as it is generated (SSE) rather than 202.
    stream: Option<bool>,
    metadata: Option<Value>,
    webhook_url: Option<String>,
    /// The response cache, for this request: `{"mode": "no-cache" | "no-store", "ttl_secs"}`
    /// (as `Cache-Control` says; this field wins). Used only when the caller's tenant has a cache.
    cache: Option<CacheAsk>,
}

/// `POST /v1/chat`: a conversation, answered by the assistant's next message — its text, or its
/// tool calls (`result.message.tool_calls`, `result.finish_reason: "tool_calls"`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ChatRequest)]
struct ChatBody {
    model: String,
    /// Each `{"role", "content"}`: a text, or parts — `text`, a user's `image` (`url`: a `data:`
    /// URL or an `http(s)` URL fetched at intake; `detail`), an assistant's `tool_call` (`id`,
    /// `name`, `arguments` as a JSON object's text), a `tool` message's `tool_result` (`call_id`
    /// and/or `name`, `content`).
    messages: Vec<Message>,
    /// Tools the model may call.
    tools: Option<Vec<Tool>>,
    /// `auto` (the default), `none`, `required`, or `{"tool": "<name>"}`.
    tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools in one turn (default true).
    parallel_tool_calls: Option<bool>,
    /// The form the answer must take, as in `POST /v1/generate`.
    output: Option<OutputFormat>,
    options: Option<GenerationOptions>,
    stream: Option<bool>,
    metadata: Option<Value>,
    webhook_url: Option<String>,
    /// The response cache, for this request: `{"mode": "no-cache" | "no-store", "ttl_secs"}`
    /// (as `Cache-Control` says; this field wins). Used only when the caller's tenant has a cache.
    cache: Option<CacheAsk>,
}

/// `POST /v1/embedding`: one text or several, answered by their vectors.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EmbeddingRequest)]
struct EmbeddingBody {
    model: String,
    input: EmbeddingInput,
    metadata: Option<Value>,
    webhook_url: Option<String>,
    /// The response cache, for this request: `{"mode": "no-cache" | "no-store", "ttl_secs"}`
    /// (as `Cache-Control` says; this field wins). Used only when the caller's tenant has a cache.
    cache: Option<CacheAsk>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only jobs in this status.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Only this batch's items.
    #[param(value_type = Option<BatchId>)]
    batch_id: Option<String>,
    /// Page size, 1 to 100 (20 unless given).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Admins: this tenant's jobs instead of your own.
    #[param(value_type = Option<tollgate_core::domain::TenantId>)]
    tenant_id: Option<String>,
}

/// A page of jobs, newest first.
#[derive(Serialize, ToSchema)]
struct JobPage {
    data: Vec<Job>,
    /// Pass as `cursor` to get the next (older) page; `null` on the last page.
    next_cursor: Option<JobId>,
}

/// Submit a generation job
///
/// Answers 202 with the job and its `Location`; with `Prefer: wait=N`, 200 with the finished job
/// if it ends within N seconds; with `"stream": true`, an event stream of its text: `event: job`
/// (accepted), `event: delta` (`{"text"}`) per piece, `event: job` with the ended job, or
/// `event: error` (a problem) when the sync timeout passed first.
#[utoipa::path(post, path = "/v1/generate", tag = "Jobs", request_body = GenerateBody, params(Submitting),
    responses(
        (status = 202, description = "Accepted: the queued job", body = Job, headers(("Location" = String, description = "The job's URL"))),
        (status = 200, description = "The finished job (`Prefer: wait`), or its text as it is generated (`stream`)",
            content((Job = "application/json"), (JobStreamEvent = "text/event-stream"))),
        (status = 409, description = "`idempotency_key_in_use`"),
        (status = 422, description = "A field is refused (`invalid_field`, naming it), `model_not_served` (no provider can serve the model for this caller; the detail names it and the reason: `data_policy`, `no_route` or `route_disabled`), or `idempotency_key_reused`"),
    ))]
async fn generate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    headers: HeaderMap,
    IdempotentJson { body, key, size }: IdempotentJson<GenerateBody, true>,
) -> Result<Response, ApiError> {
    let request = GenerateRequest::parse(&body.model, body.prompt, body.options)?
        .with_output(body.output.unwrap_or_default(), "output")?
        .with_images(body.images.unwrap_or_default())?;
    let request = JobRequest::Generate(request);
    let extra = Submission {
        metadata: body.metadata,
        webhook_url: body.webhook_url,
        cache: body.cache,
        stream: body.stream == Some(true),
        size,
    };
    submit(&state, caller, client, &headers, request, extra, key).await
}

/// Submit a chat job
///
/// As `POST /v1/generate`, for a conversation.
#[utoipa::path(post, path = "/v1/chat", tag = "Jobs", request_body = ChatBody, params(Submitting),
    responses(
        (status = 202, description = "Accepted: the queued job", body = Job, headers(("Location" = String, description = "The job's URL"))),
        (status = 200, description = "The finished job (`Prefer: wait`), or its text as it is generated (`stream`)",
            content((Job = "application/json"), (JobStreamEvent = "text/event-stream"))),
        (status = 409, description = "`idempotency_key_in_use`"),
        (status = 422, description = "A field is refused (`invalid_field`, naming it), `model_not_served` (no provider can serve the model for this caller; the detail names it and the reason: `data_policy`, `no_route` or `route_disabled`), or `idempotency_key_reused`"),
    ))]
async fn chat(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    headers: HeaderMap,
    IdempotentJson { body, key, size }: IdempotentJson<ChatBody, true>,
) -> Result<Response, ApiError> {
    let conversation = Conversation {
        messages: body.messages,
        tools: body.tools.unwrap_or_default(),
        tool_choice: body.tool_choice.unwrap_or_default(),
        parallel_tool_calls: body.parallel_tool_calls.unwrap_or(true),
        output: body.output.unwrap_or_default(),
    };
    let request = ChatRequest::new(&body.model, conversation, body.options)?;
    let request = JobRequest::Chat(request);
    let extra = Submission {
        metadata: body.metadata,
        webhook_url: body.webhook_url,
        cache: body.cache,
        stream: body.stream == Some(true),
        size,
    };
    submit(&state, caller, client, &headers, request, extra, key).await
}

/// Submit an embedding job
///
/// As `POST /v1/generate` (without `stream`); the result holds one vector per input text.
#[utoipa::path(post, path = "/v1/embedding", tag = "Jobs", request_body = EmbeddingBody, params(Submitting),
    responses(
        (status = 202, description = "Accepted: the queued job", body = Job, headers(("Location" = String, description = "The job's URL"))),
        (status = 200, description = "The finished job (`Prefer: wait`)", body = Job),
        (status = 409, description = "`idempotency_key_in_use`"),
        (status = 422, description = "A field is refused (`invalid_field`, naming it), `model_not_served` (no provider can serve the model for this caller; the detail names it and the reason: `data_policy`, `no_route` or `route_disabled`), or `idempotency_key_reused`"),
    ))]
async fn embedding(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    headers: HeaderMap,
    IdempotentJson { body, key, size }: IdempotentJson<EmbeddingBody>,
) -> Result<Response, ApiError> {
    let request = EmbeddingRequest::parse(&body.model, body.input)?;
    let request = JobRequest::Embedding(request);
    let extra = Submission {
        metadata: body.metadata,
        webhook_url: body.webhook_url,
        cache: body.cache,
        stream: false,
        size,
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
    mut request: JobRequest,
    extra: Submission,
    key: Option<Key>,
) -> Result<Response, ApiError> {
    let metadata = intake::check_metadata(extra.metadata)?;
    if extra.stream && request.choices() > 1 {
        return Err(ValidationError::new("options.n", SEVERAL_NOT_STREAMED).into());
    }
    let places = ImagePlaces::native(&request);
    intake::served_request(state, &caller, &request, &places).await?;
    let webhook_url = match extra.webhook_url {
        Some(url) => Some(intake::webhook_url(state, caller.tenant_id, &url).await?),
        None => None,
    };
    images::read(state, &mut request, &places, extra.size).await?;
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
        cache: JobCache::default(),
    };
    let ask = extra.cache.unwrap_or_default().or(client.cache);
    if new_job.stream_to.is_some() {
        return streamed(state, caller, key, new_job, ask).await;
    }
    // Watched before it exists, so its end cannot be missed.
    let wait = prefer::wait(headers);
    let watch = wait.map(|_| state.watchers.watch(new_job.id));
    let intake = intake::job(state, &caller, key.as_ref(), new_job, ask, accepted).await?;
    let (job, answer) = match intake {
        Intake::Replayed(first) => return Ok(first),
        Intake::Admitted { work, answer } => (work, answer),
    };
    let (Some(wait), Some(watch)) = (wait, watch) else {
        return Ok(with_cache(answer.into_response()?, job.cache));
    };
    let location = HeaderValue::from_str(&answer.location).map_err(ApiError::internal)?;
    let applied =
        HeaderValue::from_str(&format!("wait={}", wait.as_secs())).map_err(ApiError::internal)?;
    let headers = [(header::LOCATION, location), (PREFERENCE_APPLIED, applied)];
    if job.status.is_terminal() {
        // Answered from the cache: ended before anyone could wait.
        let cache = job.cache;
        return Ok(with_cache(
            (StatusCode::OK, headers, Json(job)).into_response(),
            cache,
        ));
    }
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
    ask: CacheAsk,
) -> Result<Response, ApiError> {
    let watch = state.watchers.watch(new_job.id);
    let following = state.followers.follow(new_job.id).await?;
    let job = match intake::job(state, &caller, key.as_ref(), new_job, ask, accepted).await? {
        Intake::Replayed(first) => return Ok(first),
        Intake::Admitted { work, .. } => work,
    };
    let location = HeaderValue::from_str(&location_of(job.id)).map_err(ApiError::internal)?;
    let cache = job.cache;
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
    Ok(with_cache(
        ([(header::LOCATION, location)], sse).into_response(),
        cache,
    ))
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

    fn thinking(&mut self, text: &str) -> Vec<Event> {
        crate::http::sse::thinking_event(text).into_iter().collect()
    }

    fn ended(&mut self, job: &Job) -> Vec<Event> {
        job_event(job).into_iter().collect()
    }

    fn failed(&mut self, error: &ApiError) -> Vec<Event> {
        Event::default()
            .event(JobEventName::Error.as_str())
            .json_data(error.problem())
            .ok()
            .into_iter()
            .collect()
    }
}

fn job_event(job: &Job) -> Option<Event> {
    Event::default()
        .event(JobEventName::Job.as_str())
        .json_data(job)
        .ok()
}

const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// One of your jobs
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "Jobs", params(("id" = JobId, Path), ForTenant),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "No such job (or not the tenant's)"),
        (status = 410, description = "`job_expired`: the id is older than the jobs kept (`job_retention_days`)"),
        (status = 422, description = "`tenant_id` is not a tenant id"),
    ))]
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
        .ok_or_else(|| missing_job(id, &state.runtime.current().settings.retention))
}

/// Your jobs
///
/// Newest first, a page at a time.
#[utoipa::path(get, path = "/v1/jobs", tag = "Jobs", params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobPage),
        (status = 422, description = "A parameter is refused (`invalid_field`, naming it)"),
    ))]
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

/// Cancel a job
///
/// At once while no worker holds it (200 with the cancelled job), else through the worker
/// running it, which aborts the provider call; the answer waits briefly for that (200 with the
/// ended job, or 202 with the running one when the worker takes longer).
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "Jobs", params(("id" = JobId, Path)),
    responses(
        (status = 200, description = "The cancelled (or otherwise ended) job", body = Job),
        (status = 202, description = "Cancelling: its worker has not ended it yet", body = Job),
        (status = 404, description = "No such job"),
        (status = 410, description = "`job_expired`: the id is older than the jobs kept (`job_retention_days`)"),
        (status = 409, description = "`job_not_cancellable`: it has already ended"),
    ))]
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
        CancelOutcome::NotFound => {
            Err(missing_job(id, &state.runtime.current().settings.retention))
        }
    }
}

/// How long cancelling a running job waits for its worker to end it.
const RUNNING_CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
