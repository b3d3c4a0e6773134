//! `POST /chat/completions` and `POST /responses`: a conversation run as a job, answered when it
//! ends — or streamed, OpenAI's SSE chunks (ending `data: [DONE]`) or the Responses API's events,
//! as the worker relays the text. Every answer carries `x-request-id`, the job's id.
//!
//! A streamed answer has committed to `200` before the job runs, so a failure after that is an
//! error event in the stream (which the official SDKs raise), never a clean end with text missing.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::Stream;
use serde_json::{Value, json};
use shared::domain::openai::{ChatCompletionBody, ResponsesBody};
use shared::domain::openai_batch::Endpoint;
use shared::domain::{Job, JobRequest, JobStatus};

use super::objects;
use crate::AppState;
use crate::auth::Caller;
use crate::client::ClientInfo;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::feed::{self, Fed, Feed, Started};
use crate::intake;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chat/completions", post(chat_completions))
        .route("/responses", post(responses))
}

async fn chat_completions(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    JsonBody(body): JsonBody<ChatCompletionBody>,
) -> Result<Response, ApiError> {
    let chat = body.parse()?;
    let max_tokens = chat.request.options.max_tokens;
    let request = JobRequest::Chat(chat.request);
    let call = intake::call(&state, &caller, &client, request, chat.stream).await?;
    let id = call.job.id;
    match Started::of(&state, caller.tenant_id, call) {
        Started::Waiting(waiting) => {
            let job = waiting.answer(&state).await?;
            let body = objects::job_answer(Endpoint::ChatCompletions, &job, max_tokens);
            Ok(feed::with_request_id(axum::Json(body).into_response(), id))
        }
        Started::Streaming(feed) => {
            let chunks = ChunkWriter::new(&feed, chat.include_usage, max_tokens);
            Ok(feed::with_request_id(sse(feed, chunks).into_response(), id))
        }
    }
}

async fn responses(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    JsonBody(body): JsonBody<ResponsesBody>,
) -> Result<Response, ApiError> {
    let response = body.parse()?;
    let max_tokens = response.request.options.max_tokens;
    let request = JobRequest::Chat(response.request);
    let call = intake::call(&state, &caller, &client, request, response.stream).await?;
    let id = call.job.id;
    match Started::of(&state, caller.tenant_id, call) {
        Started::Waiting(waiting) => {
            let job = waiting.answer(&state).await?;
            let body = objects::job_answer(Endpoint::Responses, &job, max_tokens);
            Ok(feed::with_request_id(axum::Json(body).into_response(), id))
        }
        Started::Streaming(feed) => {
            let events = ResponseEvents::new(&feed);
            Ok(feed::with_request_id(sse(feed, events).into_response(), id))
        }
    }
}

/// Writes a streamed answer's SSE events in one dialect.
trait Dialect: Send + 'static {
    /// What opens the stream, before any text.
    fn opening(&mut self) -> Vec<Event>;
    fn text(&mut self, text: &str) -> Vec<Event>;
    /// What closes the stream after the job ended.
    fn ended(&mut self, job: &Job) -> Vec<Event>;
    /// What closes the stream when the job cannot be waited for any longer (it goes on).
    fn failed(&mut self, error: &ApiError) -> Vec<Event>;
}

/// The feed as SSE in `dialect`.
fn sse<D: Dialect>(
    feed: Box<Feed>,
    mut dialect: D,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let queued: VecDeque<Event> = dialect.opening().into();
    let stream = futures::stream::unfold(
        (feed, dialect, queued),
        |(mut feed, mut dialect, mut queued)| async move {
            loop {
                if let Some(event) = queued.pop_front() {
                    return Some((Ok(event), (feed, dialect, queued)));
                }
                let more = match feed.next().await? {
                    Ok(Fed::Text(text)) => dialect.text(&text),
                    Ok(Fed::Ended(job)) => dialect.ended(&job),
                    Ok(Fed::StillRunning) => {
                        dialect.failed(&ApiError::still_running(feed.job_id()))
                    }
                    Err(error) => dialect.failed(&ApiError::from(error)),
                };
                queued.extend(more);
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn data(value: &Value) -> Event {
    Event::default().data(value.to_string())
}

/// Chat Completions chunks: the role first, a chunk per piece, the finish reason, the usage
/// chunk when asked for, then `[DONE]`.
struct ChunkWriter {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    max_tokens: Option<u32>,
}

impl ChunkWriter {
    fn new(feed: &Feed, include_usage: bool, max_tokens: Option<u32>) -> Self {
        Self {
            id: format!("chatcmpl-{}", feed.job_id().0.simple()),
            created: chrono::Utc::now().timestamp(),
            model: feed.model().to_owned(),
            include_usage,
            max_tokens,
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Value) -> Event {
        let mut chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "system_fingerprint": null,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null,
                          "finish_reason": finish_reason }],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        data(&chunk)
    }
}

impl Dialect for ChunkWriter {
    fn opening(&mut self) -> Vec<Event> {
        vec![self.chunk(json!({ "role": "assistant", "content": "" }), Value::Null)]
    }

    fn text(&mut self, text: &str) -> Vec<Event> {
        vec![self.chunk(json!({ "content": text }), Value::Null)]
    }

    fn ended(&mut self, job: &Job) -> Vec<Event> {
        if job.status != JobStatus::Succeeded {
            return self.failed(&feed::failure(job));
        }
        let mut events = vec![self.chunk(
            json!({}),
            json!(objects::finish_reason(job, self.max_tokens)),
        )];
        if self.include_usage {
            let (prompt, completion) = feed::tokens(job);
            events.push(data(&json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": null, "choices": [],
                "usage": { "prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion },
            })));
        }
        events.push(Event::default().data("[DONE]"));
        events
    }

    fn failed(&mut self, error: &ApiError) -> Vec<Event> {
        vec![data(&super::openai_error(error))]
    }
}

/// The Responses API's stream: `response.created`, `response.in_progress`, the output item and
/// its text part opened, `response.output_text.delta` per piece, then everything closed and
/// `response.completed` (or `response.failed` / an `error` event).
struct ResponseEvents {
    hex: String,
    created: i64,
    model: String,
    sequence: u64,
    text: String,
}

impl ResponseEvents {
    fn new(feed: &Feed) -> Self {
        Self {
            hex: feed.job_id().0.simple().to_string(),
            created: chrono::Utc::now().timestamp(),
            model: feed.model().to_owned(),
            sequence: 0,
            text: String::new(),
        }
    }

    fn event(&mut self, kind: &str, mut body: Value) -> Event {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        Event::default().event(kind).data(body.to_string())
    }

    fn response(&self, status: &str, output: Value, usage: Value) -> Value {
        json!({
            "id": format!("resp_{}", self.hex), "object": "response", "created_at": self.created,
            "status": status, "model": self.model, "output": output, "error": null,
            "incomplete_details": null, "parallel_tool_calls": false, "tool_choice": "none",
            "tools": [], "usage": usage,
        })
    }

    fn message(&self, status: &str, text: Option<&str>) -> Value {
        let content = match text {
            Some(text) => json!([{ "type": "output_text", "text": text, "annotations": [] }]),
            None => json!([]),
        };
        json!({ "type": "message", "id": format!("msg_{}", self.hex), "status": status,
                "role": "assistant", "content": content })
    }
}

impl Dialect for ResponseEvents {
    fn opening(&mut self) -> Vec<Event> {
        let created = self.response("in_progress", json!([]), Value::Null);
        let item = self.message("in_progress", None);
        let part = json!({ "type": "output_text", "text": "", "annotations": [] });
        let item_id = format!("msg_{}", self.hex);
        vec![
            self.event("response.created", json!({ "response": created })),
            self.event("response.in_progress", json!({ "response": created })),
            self.event(
                "response.output_item.added",
                json!({ "output_index": 0, "item": item }),
            ),
            self.event(
                "response.content_part.added",
                json!({ "item_id": item_id, "output_index": 0, "content_index": 0, "part": part }),
            ),
        ]
    }

    fn text(&mut self, text: &str) -> Vec<Event> {
        self.text.push_str(text);
        let item_id = format!("msg_{}", self.hex);
        vec![self.event(
            "response.output_text.delta",
            json!({ "item_id": item_id, "output_index": 0, "content_index": 0, "delta": text,
                    "logprobs": [] }),
        )]
    }

    fn ended(&mut self, job: &Job) -> Vec<Event> {
        if job.status != JobStatus::Succeeded {
            return self.failed(&feed::failure(job));
        }
        let text = self.text.clone();
        let item_id = format!("msg_{}", self.hex);
        let part = json!({ "type": "output_text", "text": text, "annotations": [] });
        let item = self.message("completed", Some(&text));
        let (input, output) = feed::tokens(job);
        let usage = json!({
            "input_tokens": input, "input_tokens_details": { "cached_tokens": 0 },
            "output_tokens": output, "output_tokens_details": { "reasoning_tokens": 0 },
            "total_tokens": input + output,
        });
        let completed = self.response("completed", json!([item]), usage);
        vec![
            self.event(
                "response.output_text.done",
                json!({ "item_id": item_id, "output_index": 0, "content_index": 0, "text": text,
                        "logprobs": [] }),
            ),
            self.event(
                "response.content_part.done",
                json!({ "item_id": item_id, "output_index": 0, "content_index": 0, "part": part }),
            ),
            self.event(
                "response.output_item.done",
                json!({ "output_index": 0, "item": item }),
            ),
            self.event("response.completed", json!({ "response": completed })),
        ]
    }

    fn failed(&mut self, error: &ApiError) -> Vec<Event> {
        let body = super::openai_error(error);
        vec![self.event(
            "error",
            json!({ "code": body["error"]["code"], "message": body["error"]["message"],
                    "param": null }),
        )]
    }
}
