//! The routes: `POST /v1/messages` (a conversation run as a job, answered whole or streamed as
//! Anthropic's events; `?beta=true`, which Claude Code adds, changes nothing), `POST
//! /v1/messages/count_tokens` (not a job: the gateway's estimate), `GET /v1/models` (the routed
//! models, in Anthropic's pages) and `GET /v1/models/{id}`, and the `HEAD /` a client probes
//! with. A messages body may be as long as a long coding session's (32 MB by default, the
//! image body limit), text or images.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tollgate_core::domain::{CloudKind, JobRequest};
use tollgate_core::provider::AnthropicClient;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::events::MessageEvents;
use super::replies;
use super::requests::MessagesBody;
use crate::AppState;
use crate::access::auth::Caller;
use crate::calls::feed::Started;
use crate::http::client::ClientInfo;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::QueryParams;
use crate::intake::{self, Asked};

pub fn router(body_limit: usize) -> OpenApiRouter<AppState> {
    let long = crate::routes::images_inline;
    OpenApiRouter::new()
        .routes(long(routes!(messages), body_limit))
        .routes(long(routes!(count_tokens), body_limit))
        .routes(routes!(list_models))
        .routes(routes!(show_model))
        .routes(routes!(probe))
}

/// A body of the Messages API: JSON up to the long body limit, text or images alike.
struct LongJson(MessagesBody);

impl FromRequest<AppState> for LongJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        use crate::http::extract::{body_bytes, is_json, parse};
        if !is_json(req.headers().get(axum::http::header::CONTENT_TYPE)) {
            return Err(ApiError::unsupported_media_type());
        }
        let bytes = body_bytes(req, state, state.image_body_limit).await?;
        parse(&bytes).map(Self)
    }
}

/// The `anthropic-beta` header, as sent.
fn beta(headers: &HeaderMap) -> Option<String> {
    let beta = headers.get("anthropic-beta")?.to_str().ok()?;
    Some(beta.to_owned())
}

/// What the job keeps of the client: Claude Code's session and agent, when it says.
fn client_metadata(headers: &HeaderMap) -> Option<Value> {
    let mut metadata = serde_json::Map::new();
    for (header, key) in [
        ("x-claude-code-session-id", "claude_code_session_id"),
        ("x-claude-code-agent-id", "claude_code_agent_id"),
    ] {
        if let Some(value) = headers.get(header).and_then(|v| v.to_str().ok()) {
            let value: String = value.chars().take(200).collect();
            metadata.insert(key.to_owned(), json!(value));
        }
    }
    (!metadata.is_empty()).then_some(Value::Object(metadata))
}

/// Create a message
#[utoipa::path(post,
    path = "/v1/messages",
    tag = "Anthropic",
    description = "A conversation run as a job, in Anthropic's Messages API; `stream: true` answers Anthropic's SSE events.",
    request_body = MessagesBody,
    responses(
        (status = 200, description = "The answer, a `message` in Anthropic's shape, or with `stream: true` its events from `message_start` to `message_stop`", content((Object = "application/json"), (Object = "text/event-stream")), headers(("request-id" = String, description = "The job's id: `/v1/jobs/{id}` has it"))),
        (status = 400, description = "`invalid_request_error`, naming the field", body = super::AnthropicError),
        (status = 401, description = "`authentication_error`", body = super::AnthropicError),
        (status = 404, description = "`not_found_error`: a model not routed", body = super::AnthropicError),
        (status = 429, description = "`rate_limit_error`, with `retry-after`", body = super::AnthropicError),
        (status = 529, description = "`overloaded_error`: Tollgate cannot take work for a moment", body = super::AnthropicError),
    ))]
async fn messages(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    headers: HeaderMap,
    LongJson(body): LongJson,
) -> Result<Response, ApiError> {
    let read = body.read(beta(&headers), false)?;
    let max_tokens = read.request.options.max_tokens;
    let asked = Asked {
        request: JobRequest::Chat(read.request),
        places: read.places,
        body: 0,
        metadata: client_metadata(&headers),
    };
    let call = intake::call(&state, &caller, &client, asked, read.stream).await?;
    let id = call.job.id;
    let mut cache = call.job.cache;
    let response = match Started::of(&state, caller.tenant_id, call) {
        Started::Waiting(waiting) => {
            let job = waiting.answer(&state).await?;
            cache = job.cache;
            Json(replies::message(&job, max_tokens)).into_response()
        }
        Started::Streaming(feed) => {
            let dialect = MessageEvents::new(&feed, max_tokens);
            let events = feed.written_in(dialect).map(Ok::<Event, Infallible>);
            Sse::new(events)
                .keep_alive(KeepAlive::default())
                .into_response()
        }
    };
    let response = crate::calls::answer::with_request_id(response, id);
    Ok(crate::calls::answer::with_cache(response, cache))
}

/// `{"input_tokens"}`.
#[derive(Serialize, ToSchema)]
#[schema(as = AnthropicTokenCount)]
struct TokenCount {
    input_tokens: i64,
}

/// What an image is counted as: Anthropic's count for the largest image it takes without
/// resizing (its bytes alone do not say its size in pixels).
const IMAGE_TOKENS: i64 = 1_600;

/// Count tokens
#[utoipa::path(post,
    path = "/v1/messages/count_tokens",
    tag = "Anthropic",
    description = "The tokens a request's prompt holds, as the gateway's tokenizer estimates them (not a job, not billed).",
    request_body = MessagesBody,
    responses(
        (status = 200, description = "The count", body = TokenCount),
        (status = 400, description = "`invalid_request_error`, naming the field", body = super::AnthropicError),
        (status = 404, description = "`not_found_error`: a model not routed", body = super::AnthropicError),
    ))]
async fn count_tokens(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    LongJson(body): LongJson,
) -> Result<Json<TokenCount>, ApiError> {
    let read = body.read(beta(&headers), true)?;
    intake::served(&state, &caller, &read.request.model).await?;
    let request = JobRequest::Chat(read.request);
    if let Some(counted) = counted_upstream(&state, &request).await {
        return Ok(Json(TokenCount {
            input_tokens: counted,
        }));
    }
    let mut counted = request.input_text();
    if let JobRequest::Chat(chat) = &request {
        for tool in &chat.conversation.tools {
            counted.push_str(&tool.name);
            counted.push_str(tool.description.as_deref().unwrap_or_default());
            counted.push_str(&tool.parameters.to_string());
        }
        for message in &chat.conversation.messages {
            for call in message.tool_calls() {
                counted.push_str(&call.name);
                counted.push_str(call.arguments.as_str());
            }
        }
    }
    let text = i64::from(tollgate_core::billing::estimate_tokens(&counted));
    let images = i64::try_from(request.images().len()).unwrap_or(0) * IMAGE_TOKENS;
    Ok(Json(TokenCount {
        input_tokens: text + images,
    }))
}

/// How long Anthropic is given to count a prompt before the gateway estimates it instead.
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// The count of the Anthropic account the model is routed to, if it is (the first such route);
/// `None` for a model routed elsewhere, or when Anthropic cannot count it now (the gateway's
/// estimate then answers).
async fn counted_upstream(state: &AppState, request: &JobRequest) -> Option<i64> {
    let runtime = state.runtime.current();
    let model = request.model().as_str();
    let (account, upstream) =
        runtime
            .routes
            .routed(model)
            .iter()
            .find_map(|(name, upstream)| {
                let account = runtime.clouds.get(name)?;
                (account.kind == CloudKind::Anthropic && account.is_configured())
                    .then(|| (account.clone(), upstream.clone()))
            })?;
    let sealed = account.api_key.as_ref()?;
    let key = state.secret_key.as_ref()?.open(&sealed.sealed).ok()?;
    let client = AnthropicClient::new(&account.base_url, key, COUNT_TIMEOUT);
    match client.count_tokens(request, &upstream).await {
        Ok(counted) => Some(counted),
        Err(error) => {
            tracing::info!(provider = account.name.as_str(), %error, "Anthropic did not count a prompt; estimating it");
            None
        }
    }
}

/// A page of models, as Anthropic lists them.
#[derive(Serialize, ToSchema)]
#[schema(as = AnthropicModelList)]
struct ModelList {
    data: Vec<ModelInfo>,
    has_more: bool,
    first_id: Option<String>,
    last_id: Option<String>,
}

/// A model, as Anthropic shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = AnthropicModel)]
struct ModelInfo {
    /// `model`.
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    display_name: String,
    /// Always the epoch: the gateway does not know when a model was made.
    created_at: &'static str,
}

fn model_info(id: &str) -> ModelInfo {
    ModelInfo {
        kind: "model",
        id: id.to_owned(),
        display_name: id.to_owned(),
        created_at: "1970-01-01T00:00:00Z",
    }
}

/// `limit` (1 to 1,000, 20 by default), and `after_id` or `before_id`.
#[derive(Deserialize, IntoParams)]
struct Page {
    limit: Option<usize>,
    after_id: Option<String>,
    before_id: Option<String>,
}

/// Every routed model's name, in order.
fn routed(state: &AppState) -> Vec<String> {
    let runtime = state.runtime.current();
    runtime
        .routes
        .all()
        .into_iter()
        .map(|(model, _)| model.to_owned())
        .collect()
}

/// List models
#[utoipa::path(get,
    path = "/v1/models",
    tag = "Anthropic",
    description = "The routed models, in Anthropic's pages. Claude Code lists only ids that start with `claude`: name an alias meant for it so.",
    params(Page),
    responses(
        (status = 200, description = "A page of models", body = ModelList),
    ))]
async fn list_models(
    State(state): State<AppState>,
    Caller(_): Caller,
    QueryParams(page): QueryParams<Page>,
) -> Result<Json<ModelList>, ApiError> {
    let limit = page.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 1000",
        ));
    }
    let models = routed(&state);
    let after = |id: &String| models.iter().position(|m| m == id);
    let (start, end) = match (&page.after_id, &page.before_id) {
        (Some(id), _) => {
            let start = after(id).map_or(models.len(), |i| i + 1);
            (start, (start + limit).min(models.len()))
        }
        (None, Some(id)) => {
            let end = after(id).unwrap_or(0);
            (end.saturating_sub(limit), end)
        }
        (None, None) => (0, limit.min(models.len())),
    };
    let data: Vec<ModelInfo> = models[start..end].iter().map(|m| model_info(m)).collect();
    let has_more = match page.before_id {
        Some(_) => start > 0,
        None => end < models.len(),
    };
    Ok(Json(ModelList {
        first_id: data.first().map(|m| m.id.clone()),
        last_id: data.last().map(|m| m.id.clone()),
        data,
        has_more,
    }))
}

/// Get a model
#[utoipa::path(get,
    path = "/v1/models/{*id}",
    tag = "Anthropic",
    description = "One routed model.",
    params(("id" = String, Path, description = "The model (it may hold `/`)")),
    responses(
        (status = 200, description = "The model", body = ModelInfo),
        (status = 404, description = "`not_found_error`", body = super::AnthropicError),
    ))]
async fn show_model(
    State(state): State<AppState>,
    Caller(_): Caller,
    Path(id): Path<String>,
) -> Result<Json<ModelInfo>, ApiError> {
    routed(&state)
        .iter()
        .find(|model| **model == id)
        .map(|model| Json(model_info(model)))
        .ok_or_else(|| {
            ApiError::not_found(format!("the model {id:?} does not exist"))
                .with_code(ErrorCode::ModelNotFound)
        })
}

/// Probe
#[utoipa::path(head,
    path = "/",
    tag = "Anthropic",
    description = "Answers that the surface is here (Claude Code probes its base URL so); no key needed.",
    responses(
        (status = 200, description = "The surface is here"),
    ))]
async fn probe() -> StatusCode {
    StatusCode::OK
}
