//! `POST /api/chat` and `/api/generate` (an NDJSON stream unless `"stream": false`), `POST
//! /api/embed` and the older `/api/embeddings`: each a job, answered in Ollama's shapes with the
//! counts Ollama reports (`prompt_eval_count`, `eval_count`) and `x-request-id` naming the job.

use super::conversation;
use super::requests::{ChatBody, EmbedBody, EmbeddingsBody, GenerateBody};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tollgate_core::db::tokens::Principal;
use tollgate_core::domain::conversation::{Finish, Reply};
use tollgate_core::domain::{Job, JobKind, JobRequest, JobStatus};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::access::auth::Caller;
use crate::calls::feed::{self, Dialect, Started};
use crate::http::client::ClientInfo;
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, JsonWithImages};
use crate::intake::{self, Asked};

pub fn router(image_body_limit: usize) -> OpenApiRouter<AppState> {
    let images_inline = crate::routes::images_inline;
    OpenApiRouter::new()
        .routes(images_inline(routes!(chat), image_body_limit))
        .routes(images_inline(routes!(generate), image_body_limit))
        .routes(routes!(embed))
        .routes(routes!(embeddings))
}

/// Chat (Ollama)
#[utoipa::path(post,
    path = "/api/chat",
    tag = "Ollama",
    description = "A conversation run as a job; NDJSON stream unless `stream: false`.",
    request_body = ChatBody,
    responses(
        (status = 200, description = "Ollama's answer: one JSON object with `stream: false`, else NDJSON lines", content((Object = "application/json"), (String = "application/x-ndjson")), headers(("x-request-id" = String, description = "The job's id: `/v1/jobs/{id}` has it"))),
        (status = 400, description = "`{\"error\"}`: the request cannot be run, naming the field"),
        (status = 404, description = "`{\"error\"}`: unknown model"),
        (status = 504, description = "`job_still_running`: the job outlived the sync timeout; it goes on"),
    ))]
async fn chat(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    JsonWithImages { body, size }: JsonWithImages<ChatBody>,
) -> Result<Response, ApiError> {
    let call = body.parse()?;
    let max_tokens = call.request.options.max_tokens;
    let asked = Asked {
        request: JobRequest::Chat(call.request),
        places: call.places,
        body: size,
        metadata: None,
    };
    answer(&state, &caller, &client, asked, call.stream, max_tokens).await
}

/// Generate (Ollama)
#[utoipa::path(post,
    path = "/api/generate",
    tag = "Ollama",
    description = "A prompt run as a job; NDJSON stream unless `stream: false`.",
    request_body = GenerateBody,
    responses(
        (status = 200, description = "Ollama's answer: one JSON object with `stream: false`, else NDJSON lines", content((Object = "application/json"), (String = "application/x-ndjson")), headers(("x-request-id" = String, description = "The job's id: `/v1/jobs/{id}` has it"))),
        (status = 400, description = "`{\"error\"}`: the request cannot be run, naming the field"),
        (status = 404, description = "`{\"error\"}`: unknown model"),
        (status = 504, description = "`job_still_running`: the job outlived the sync timeout; it goes on"),
    ))]
async fn generate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    JsonWithImages { body, size }: JsonWithImages<GenerateBody>,
) -> Result<Response, ApiError> {
    let call = body.parse()?;
    let max_tokens = call.request.options.max_tokens;
    let asked = Asked {
        request: JobRequest::Generate(call.request),
        places: call.places,
        body: size,
        metadata: None,
    };
    answer(&state, &caller, &client, asked, call.stream, max_tokens).await
}

/// Runs a chat or generate call as a job: one object when it ends, or its NDJSON stream.
async fn answer(
    state: &AppState,
    caller: &Principal,
    client: &ClientInfo,
    asked: Asked,
    stream: bool,
    max_tokens: Option<u32>,
) -> Result<Response, ApiError> {
    let kind = asked.request.kind();
    let call = intake::call(state, caller, client, asked, stream).await?;
    let id = call.job.id;
    let mut cache = call.job.cache;
    let response = match Started::of(state, caller.tenant_id, call) {
        Started::Waiting(waiting) => {
            let job = waiting.answer(state).await?;
            cache = job.cache;
            let reply = crate::calls::answer::reply(&job);
            Json(last_line(kind, &job, &reply, max_tokens)).into_response()
        }
        Started::Streaming(feed) => {
            let lines = Lines {
                kind,
                model: feed.model().to_owned(),
                max_tokens,
            };
            let body = feed
                .written_in(lines)
                .map(|line| Ok::<_, std::convert::Infallible>(format!("{line}\n")));
            (
                [(header::CONTENT_TYPE, "application/x-ndjson")],
                Body::from_stream(body),
            )
                .into_response()
        }
    };
    let response = crate::calls::answer::with_request_id(response, id);
    Ok(crate::calls::answer::with_cache(response, cache))
}

/// A piece of text as chat (`message`) or generate (`response`, `thinking`) writes it.
fn content(kind: JobKind, reply: &Reply) -> Value {
    match kind {
        JobKind::Chat => json!({ "message": conversation::reply_message(reply) }),
        JobKind::Generate | JobKind::Embedding => {
            let mut content = json!({ "response": reply.text });
            if let Some(thinking) = &reply.thinking {
                content["thinking"] = json!(thinking.text);
            }
            content
        }
    }
}

fn with(mut line: Value, extra: Value) -> Value {
    if let (Some(line), Value::Object(extra)) = (line.as_object_mut(), extra) {
        line.extend(extra);
    }
    line
}

/// The last line of an answer (the whole answer when it does not stream): `done` with Ollama's
/// counts and durations (nanoseconds; only the total is known), and its reason (`length` or
/// `stop`: Ollama ends a turn of tool calls with `stop` too).
fn last_line(kind: JobKind, job: &Job, reply: &Reply, max_tokens: Option<u32>) -> Value {
    let (prompt, completion) = crate::calls::answer::tokens(job);
    let total_ns = job
        .finished_at
        .zip(job.started_at.or(Some(job.created_at)))
        .and_then(|(end, start)| (end - start).num_nanoseconds())
        .unwrap_or_default();
    let done_reason = match crate::calls::answer::finish(job, max_tokens) {
        Finish::Length => "length",
        Finish::Stop | Finish::ToolCalls | Finish::ContentFilter => "stop",
    };
    let line = json!({
        "model": job.model, "created_at": Utc::now().to_rfc3339(), "done": true,
        "done_reason": done_reason, "total_duration": total_ns, "load_duration": 0,
        "prompt_eval_count": prompt, "prompt_eval_duration": 0, "eval_count": completion,
        "eval_duration": 0,
    });
    let mut line = with(line, content(kind, reply));
    if let Some(logprobs) = &reply.logprobs {
        line["logprobs"] = logprobs.clone();
    }
    line
}

/// An NDJSON stream: a line per piece, then the counts, or an error line.
struct Lines {
    kind: JobKind,
    model: String,
    max_tokens: Option<u32>,
}

impl Lines {
    /// A line that is not the last, holding `content`.
    fn line(&self, content: Value) -> Value {
        let line = json!({ "model": self.model, "created_at": Utc::now().to_rfc3339(),
                           "done": false });
        with(line, content)
    }
}

impl Dialect for Lines {
    type Item = Value;
    const STREAM: &'static str = "ollama";

    fn opening(&mut self) -> Vec<Value> {
        Vec::new()
    }

    fn text(&mut self, text: &str) -> Vec<Value> {
        vec![self.line(content(self.kind, &Reply::text(text, None)))]
    }

    fn thinking(&mut self, text: &str) -> Vec<Value> {
        let thought = Reply::text("", None).with_thinking(text.to_owned(), None);
        vec![self.line(content(self.kind, &thought))]
    }

    /// Each tool call on a line of its own, whole (as Ollama streams them), then the last line.
    fn ended(&mut self, job: &Job) -> Vec<Value> {
        if job.status != JobStatus::Succeeded {
            return self.failed(&crate::calls::answer::failure(job));
        }
        let reply = crate::calls::answer::reply(job);
        let mut lines: Vec<Value> = reply
            .tool_calls
            .iter()
            .enumerate()
            .map(|(index, call)| {
                let calls = json!([conversation::tool_call(index, call)]);
                self.line(json!({ "message": { "role": "assistant", "content": "",
                                               "tool_calls": calls } }))
            })
            .collect();
        // The tokens' log probabilities come whole, with the last line.
        let mut rest = Reply::text("", reply.finish);
        rest.logprobs = reply.logprobs;
        lines.push(last_line(self.kind, job, &rest, self.max_tokens));
        lines
    }

    fn failed(&mut self, error: &ApiError) -> Vec<Value> {
        vec![super::ollama_error(error)]
    }
}

/// Embed (Ollama)
#[utoipa::path(post,
    path = "/api/embed",
    tag = "Ollama",
    description = "Vectors for a text or texts.",
    request_body = EmbedBody,
    responses(
        (status = 200, description = "Ollama's answer", body = Object, headers(("x-request-id" = String, description = "The job's id: `/v1/jobs/{id}` has it"))),
        (status = 400, description = "`{\"error\"}`: the request cannot be run, naming the field"),
        (status = 404, description = "`{\"error\"}`: unknown model"),
        (status = 504, description = "`job_still_running`: the job outlived the sync timeout; it goes on"),
    ))]
async fn embed(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    JsonBody(body): JsonBody<EmbedBody>,
) -> Result<Response, ApiError> {
    let request = JobRequest::Embedding(body.parse()?);
    let job = feed::call_to_end(&state, &caller, &client, request).await?;
    let (prompt, _) = crate::calls::answer::tokens(&job);
    let body = json!({
        "model": job.model, "embeddings": vectors(&job), "total_duration": 0,
        "load_duration": 0, "prompt_eval_count": prompt,
    });
    let response = crate::calls::answer::with_request_id(Json(body).into_response(), job.id);
    Ok(crate::calls::answer::with_cache(response, job.cache))
}

/// Embeddings (Ollama, older)
#[utoipa::path(post,
    path = "/api/embeddings",
    tag = "Ollama",
    description = "One vector for one prompt.",
    request_body = EmbeddingsBody,
    responses(
        (status = 200, description = "Ollama's answer", body = Object, headers(("x-request-id" = String, description = "The job's id: `/v1/jobs/{id}` has it"))),
        (status = 400, description = "`{\"error\"}`: the request cannot be run, naming the field"),
        (status = 404, description = "`{\"error\"}`: unknown model"),
        (status = 504, description = "`job_still_running`: the job outlived the sync timeout; it goes on"),
    ))]
async fn embeddings(
    State(state): State<AppState>,
    Caller(caller): Caller,
    client: ClientInfo,
    JsonBody(body): JsonBody<EmbeddingsBody>,
) -> Result<Response, ApiError> {
    let request = JobRequest::Embedding(body.parse()?);
    let job = feed::call_to_end(&state, &caller, &client, request).await?;
    let first = vectors(&job).into_iter().next().unwrap_or_default();
    let body = Json(json!({ "embedding": first })).into_response();
    let response = crate::calls::answer::with_request_id(body, job.id);
    Ok(crate::calls::answer::with_cache(response, job.cache))
}

fn vectors(job: &Job) -> Vec<Value> {
    job.result
        .as_ref()
        .and_then(|r| r["embeddings"].as_array().cloned())
        .unwrap_or_default()
}
