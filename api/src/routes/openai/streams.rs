//! Chat Completions' stream dialect ([`ChunkWriter`]), written from the job's feed (the Responses
//! API's is [`super::response_events`]). A reply's tool calls arrive whole with its end (as Ollama
//! gives them) and are written as a call's opening chunk (`index`, `id`, `type`, `name`) then its
//! arguments, never as text; its reasoning as `reasoning_content` deltas before the text.

use axum::response::sse::Event;
use serde_json::{Value, json};
use tollgate_core::domain::{Job, JobStatus};

use super::{objects, replies};
use crate::calls::answer::Tokens;
use crate::calls::feed::{Dialect, Feed};
use crate::http::error::ApiError;

pub(super) fn data(value: &Value) -> Event {
    Event::default().data(value.to_string())
}

/// Chat Completions chunks: the role first, a chunk per piece, the finish reason, the usage
/// chunk when asked for, then `[DONE]`.
pub(super) struct ChunkWriter {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    max_tokens: Option<u32>,
}

impl ChunkWriter {
    pub(super) fn new(feed: &Feed, include_usage: bool, max_tokens: Option<u32>) -> Self {
        Self {
            id: format!("chatcmpl-{}", feed.job_id().0.simple()),
            created: chrono::Utc::now().timestamp(),
            model: feed.model().to_owned(),
            include_usage,
            max_tokens,
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Value) -> Event {
        data(&self.chunk_value(delta, finish_reason))
    }

    fn chunk_value(&self, delta: Value, finish_reason: Value) -> Value {
        let mut chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "system_fingerprint": null,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null,
                          "finish_reason": finish_reason }],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }
}

impl Dialect for ChunkWriter {
    type Item = Event;
    const STREAM: &'static str = "openai_chat";

    fn opening(&mut self) -> Vec<Event> {
        vec![self.chunk(json!({ "role": "assistant", "content": "" }), Value::Null)]
    }

    fn text(&mut self, text: &str) -> Vec<Event> {
        vec![self.chunk(json!({ "content": text }), Value::Null)]
    }

    fn thinking(&mut self, text: &str) -> Vec<Event> {
        vec![self.chunk(json!({ "reasoning_content": text }), Value::Null)]
    }

    fn ended(&mut self, job: &Job) -> Vec<Event> {
        if job.status != JobStatus::Succeeded {
            return self.failed(&crate::calls::answer::failure(job));
        }
        let reply = crate::calls::answer::reply(job);
        let mut events = Vec::new();
        if let Some(refusal) = &reply.refusal {
            events.push(self.chunk(json!({ "refusal": refusal }), Value::Null));
        }
        for (index, call) in reply.tool_calls.iter().enumerate() {
            let mut opening = replies::chat_tool_call(call);
            opening["index"] = json!(index);
            opening["function"]["arguments"] = json!("");
            events.push(self.chunk(json!({ "tool_calls": [opening] }), Value::Null));
            let arguments = json!({ "index": index,
                                    "function": { "arguments": call.arguments.as_str() } });
            events.push(self.chunk(json!({ "tool_calls": [arguments] }), Value::Null));
        }
        let finish = crate::calls::answer::finish(job, self.max_tokens);
        let mut last = self.chunk_value(json!({}), json!(finish.as_str()));
        // The tokens' log probabilities come whole, with the end: a client adding up each
        // chunk's gets them all.
        last["choices"][0]["logprobs"] = replies::chat_logprobs(&reply);
        events.push(data(&last));
        if self.include_usage {
            let usage = objects::chat_usage(Tokens::of(job));
            events.push(data(&json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": null, "choices": [],
                "usage": usage,
            })));
        }
        events.push(Event::default().data("[DONE]"));
        events
    }

    fn failed(&mut self, error: &ApiError) -> Vec<Event> {
        vec![data(&super::openai_error(error))]
    }
}
