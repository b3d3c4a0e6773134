//! The pieces of the api's own event streams: where a reconnecting client resumes, a piece of a
//! streaming job's text, and each stream's events as the OpenAPI document describes them.
//!
//! An event's schema is the event as an SSE parser reads it — an object of `event`, `id` and
//! `data` (a string: JSON, whose shape `contentMediaType` and the description give) — which is
//! what OpenAPI 3.1 prescribes for `text/event-stream` and what generated clients and
//! conformance checkers validate each event against.

use axum::http::HeaderMap;
use axum::response::sse::Event;
use serde::Serialize;
use utoipa::ToSchema;

/// The `Last-Event-ID` a reconnecting client sent, if it is one of this stream's ids.
pub fn last_event_id<T: std::str::FromStr>(headers: &HeaderMap) -> Option<T> {
    headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<T>().ok())
}

/// A piece of a streaming job's text, as native streams send it.
pub fn delta_event(text: &str) -> Option<Event> {
    Event::default()
        .event(JobEventName::Delta.as_str())
        .json_data(serde_json::json!({ "text": text }))
        .ok()
}

/// A piece of a streaming job's reasoning, as native streams send it.
pub fn thinking_event(text: &str) -> Option<Event> {
    Event::default()
        .event(JobEventName::Thinking.as_str())
        .json_data(serde_json::json!({ "text": text }))
        .ok()
}

/// What a job's stream sends: `GET /v1/jobs/{id}/events`, and `POST /v1/generate` or `/v1/chat`
/// with `"stream": true`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum JobEventName {
    /// `data` is a `Job`; `id` is its revision.
    Job,
    /// `data` is `{"text": "…"}`, the next piece of a streaming job's text (no id of its own).
    Delta,
    /// `data` is `{"text": "…"}`, the next piece of the model's reasoning, which comes before
    /// its text (no id of its own).
    Thinking,
    /// `data` is a `Problem`: the stream ended without the job (a streaming call's wait ran out).
    Error,
}

/// One event of a job's stream, as an SSE parser reads it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobStreamEvent {
    pub event: JobEventName,
    /// The job's revision as of the last `job` event: `Last-Event-ID` resumes after it.
    pub id: Option<String>,
    /// JSON: a `Job` (`job`), `{"text": "…"}` (`delta`, `thinking`) or a `Problem` (`error`).
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// What a batch's stream sends (`GET /v1/batches/{id}/events`).
#[derive(Debug, Clone, Copy, Serialize, ToSchema, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum BatchEventName {
    /// `data` is a `Batch`; `id` is how many of its items had ended.
    Batch,
}

/// One event of a batch's stream, as an SSE parser reads it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchStreamEvent {
    pub event: BatchEventName,
    /// How many of the batch's items had ended: `Last-Event-ID` resumes after it.
    pub id: Option<String>,
    /// JSON: a `Batch`.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// One event of an OpenAI Chat Completions stream (`POST /openai/v1/chat/completions` with
/// `stream: true`), as an SSE parser reads it: unnamed events (`message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletionStreamEvent {
    /// Unnamed: an SSE parser calls it `message`.
    pub event: Option<String>,
    /// JSON: a `chat.completion.chunk` (or, after the first byte, `{"error": {…}}` in OpenAI's
    /// shape); the last event's data is `[DONE]`.
    pub data: String,
}

/// One event of an OpenAI Responses stream (`POST /openai/v1/responses` with `stream: true`), as
/// an SSE parser reads it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseStreamEvent {
    /// The event's type, as its data's `type` says: `response.created`,
    /// `response.output_text.delta`, `response.completed`, `error`, …
    pub event: String,
    /// JSON: the event, with its `type` and `sequence_number`.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// What a model pull's progress stream sends (`POST /v1/admin/models/pull` with
/// `Accept: text/event-stream`).
#[derive(Debug, Clone, Copy, Serialize, ToSchema, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum PullEventName {
    /// `data` is one of Ollama's progress lines, with its `host`.
    Progress,
    /// `data` is the outcome: the hosts that pulled the model.
    Done,
    /// `data` is a `Problem`.
    Error,
}

/// One event of a model pull's progress stream, as an SSE parser reads it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PullStreamEvent {
    pub event: PullEventName,
    /// JSON: a progress line (`progress`), the outcome (`done`) or a `Problem` (`error`).
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

impl JobEventName {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl BatchEventName {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl PullEventName {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
