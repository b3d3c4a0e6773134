//! `POST /chat/completions` and `POST /responses`: a conversation run as a job, answered when it
//! ends — or streamed, OpenAI's SSE chunks (ending `data: [DONE]`) or the Responses API's events,
//! as the worker relays the text. Every answer carries `x-request-id`, the job's id.
//!
//! The streams' two dialects are in [`super::streams`].
//!
//! A streamed answer has committed to `200` before the job runs, so a failure after that is an
//! error event in the stream (which the official SDKs raise), never a clean end with text missing.

use std::convert::Infallible;

use super::requests::{ChatCompletionBody, ResponsesBody};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _};
use tollgate_core::db::tokens::Principal;
use tollgate_core::domain::openai_batch::Endpoint;
use tollgate_core::domain::{ChatRequest, JobRequest};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::objects;
use super::response_events::ResponseEvents;
use super::streams::ChunkWriter;
use crate::AppState;
use crate::access::auth::Caller;
use crate::calls::feed::{Dialect, Feed, Started};
use crate::http::client::ClientInfo;
use crate::http::error::ApiError;
use crate::http::extract::JsonWithImages;
use crate::http::sse::{ChatCompletionStreamEvent, ResponseStreamEvent};
use crate::intake::{self, Asked, images::ImagePlaces};

pub fn router(image_body_limit: usize) -> OpenApiRouter<AppState> {
    let images_inline = crate::routes::images_inline;
    OpenApiRouter::new()
        .routes(images_inline(routes!(chat_completions), image_body_limit))
        .routes(images_inline(routes!(responses), image_body_limit))
}

/// Chat completion
#[utoipa::path(post,
    path = "/chat/completions",
    tag = "OpenAI",
    description = "A conversation run as a job; `stream: true` answers OpenAI's SSE chunks ending `data: [DONE]`.",
    request_body = ChatCompletionBody,
    responses(
        (status = 200, description = "The answer, a `chat.completion` in OpenAI's shape, or with `stream: true` its `chat.completion.chunk`s ending `data: [DONE]`", content((Object = "application/json"), (ChatCompletionStreamEvent = "text/event-stream")), headers(("x-request-id" = String, description = "The job's id: `/v1/jobs/{id}` has it"))),
        (status = 400, description = "invalid request (OpenAI's error shape), naming the parameter"),
        (status = 404, description = "`model_not_found`"),
        (status = 504, description = "`job_still_running`: the job outlived TOLLGATE_SYNC_TIMEOUT_SECS; it goes on"),
    ))]
async fn chat_completions(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    JsonWithImages { body, size }: JsonWithImages<ChatCompletionBody>,
) -> Result<Response, ApiError> {
    let chat = body.parse()?;
    let include_usage = chat.include_usage;
    let call = Conversation {
        request: chat.request,
        places: chat.places,
        body: size,
        stream: chat.stream,
        endpoint: Endpoint::ChatCompletions,
    };
    converse(&state, &caller, &client, call, |feed, max_tokens| {
        ChunkWriter::new(feed, include_usage, max_tokens)
    })
    .await
}

/// Response
#[utoipa::path(post,
    path = "/responses",
    tag = "OpenAI",
    description = "A conversation run as a job; `stream: true` answers the Responses API's events.",
    request_body = ResponsesBody,
    responses(
        (status = 200, description = "The answer, a `response` in OpenAI's shape, or with `stream: true` the Responses API's events", content((Object = "application/json"), (ResponseStreamEvent = "text/event-stream")), headers(("x-request-id" = String, description = "The job's id: `/v1/jobs/{id}` has it"))),
        (status = 400, description = "invalid request (OpenAI's error shape), naming the parameter"),
        (status = 404, description = "`model_not_found`"),
        (status = 504, description = "`job_still_running`: the job outlived TOLLGATE_SYNC_TIMEOUT_SECS; it goes on"),
    ))]
async fn responses(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    JsonWithImages { body, size }: JsonWithImages<ResponsesBody>,
) -> Result<Response, ApiError> {
    let response = body.parse()?;
    let call = Conversation {
        request: response.request,
        places: response.places,
        body: size,
        stream: response.stream,
        endpoint: Endpoint::Responses,
    };
    converse(&state, &caller, &client, call, |feed, _| {
        ResponseEvents::new(feed)
    })
    .await
}

/// A conversation asked for in one of OpenAI's dialects.
struct Conversation {
    request: ChatRequest,
    places: ImagePlaces,
    /// The size of the body it came in.
    body: usize,
    stream: bool,
    /// Whose answer shape it takes.
    endpoint: Endpoint,
}

/// Runs the conversation as a job: answered whole when it ends, or streamed in the dialect
/// `streamed` makes (given the feed and the request's `max_tokens`).
async fn converse<D: Dialect<Item = Event>>(
    state: &AppState,
    caller: &Principal,
    client: &ClientInfo,
    conversation: Conversation,
    streamed: impl FnOnce(&Feed, Option<u32>) -> D,
) -> Result<Response, ApiError> {
    let max_tokens = conversation.request.options.max_tokens;
    let asked = Asked {
        request: JobRequest::Chat(conversation.request),
        places: conversation.places,
        body: conversation.body,
        metadata: None,
    };
    let call = intake::call(state, caller, client, asked, conversation.stream).await?;
    let id = call.job.id;
    let mut cache = call.job.cache;
    let response = match Started::of(state, caller.tenant_id, call) {
        Started::Waiting(waiting) => {
            let job = waiting.answer(state).await?;
            cache = job.cache;
            let body = objects::job_answer(conversation.endpoint, &job, max_tokens);
            axum::Json(body).into_response()
        }
        Started::Streaming(feed) => {
            let dialect = streamed(&feed, max_tokens);
            sse(feed, dialect).into_response()
        }
    };
    let response = crate::calls::answer::with_request_id(response, id);
    Ok(crate::calls::answer::with_cache(response, cache))
}

/// The feed as SSE in `dialect`.
fn sse<D: Dialect<Item = Event>>(
    feed: Box<Feed>,
    dialect: D,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = feed.written_in(dialect).map(Ok);
    Sse::new(events).keep_alive(KeepAlive::default())
}
