//! The two stream dialects of OpenAI's conversation endpoints: Chat Completions chunks
//! ([`ChunkWriter`]) and the Responses API's events ([`ResponseEvents`]), each written from the
//! job's feed. A reply's tool calls arrive whole with its end (as Ollama gives them) and are
//! written in the dialect's stream shape — a call's opening chunk (`index`, `id`, `type`, `name`)
//! then its arguments; `output_item.added`, the arguments' delta and done, `output_item.done` —
//! never as text.

use axum::response::sse::Event;
use serde_json::{Value, json};
use tollgate_core::domain::conversation::{Reply, ToolCall};
use tollgate_core::domain::{Job, JobStatus};

use super::replies;
use crate::calls::feed::{Dialect, Feed};
use crate::http::error::ApiError;

fn data(value: &Value) -> Event {
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
    type Item = Event;
    const STREAM: &'static str = "openai_chat";

    fn opening(&mut self) -> Vec<Event> {
        vec![self.chunk(json!({ "role": "assistant", "content": "" }), Value::Null)]
    }

    fn text(&mut self, text: &str) -> Vec<Event> {
        vec![self.chunk(json!({ "content": text }), Value::Null)]
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
        events.push(self.chunk(json!({}), json!(finish.as_str())));
        if self.include_usage {
            let (prompt, completion) = crate::calls::answer::tokens(job);
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

/// The Responses API's stream: `response.created`, `response.in_progress`, then — with the first
/// piece of text — the message item and its text part opened and `response.output_text.delta` per
/// piece; at the end the message closed, a function call item per tool call (added, its
/// arguments, done), and `response.completed` (`response.incomplete` when cut short), or an
/// `error` event.
pub(super) struct ResponseEvents {
    hex: String,
    created: i64,
    model: String,
    sequence: u64,
    text: String,
    /// Whether the message item is open.
    opened: bool,
}

impl ResponseEvents {
    pub(super) fn new(feed: &Feed) -> Self {
        Self {
            hex: feed.job_id().0.simple().to_string(),
            created: chrono::Utc::now().timestamp(),
            model: feed.model().to_owned(),
            sequence: 0,
            text: String::new(),
            opened: false,
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
            "incomplete_details": null, "parallel_tool_calls": true, "tool_choice": "auto",
            "tools": [], "usage": usage,
        })
    }

    /// The message item and its text part, opened.
    fn open_message(&mut self) -> Vec<Event> {
        self.opened = true;
        let item = replies::message_item(&self.hex, "in_progress", None);
        let part = json!({ "type": "output_text", "text": "", "annotations": [] });
        let item_id = format!("msg_{}", self.hex);
        vec![
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

    /// The message item and its text part, closed with the whole text.
    fn close_message(&mut self) -> Vec<Event> {
        let text = self.text.clone();
        let item_id = format!("msg_{}", self.hex);
        let part = json!({ "type": "output_text", "text": text, "annotations": [] });
        let item = replies::message_item(&self.hex, "completed", Some(&text));
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
        ]
    }

    /// A function call item's events, at `output_index`.
    fn function_call(&mut self, index: usize, call: &ToolCall, output_index: usize) -> Vec<Event> {
        let added = replies::function_call_item(&self.hex, index, call, "", "in_progress");
        let done = replies::function_call_item(
            &self.hex,
            index,
            call,
            call.arguments.as_str(),
            "completed",
        );
        let item_id = replies::function_call_id(&self.hex, index);
        let arguments = call.arguments.as_str();
        vec![
            self.event(
                "response.output_item.added",
                json!({ "output_index": output_index, "item": added }),
            ),
            self.event(
                "response.function_call_arguments.delta",
                json!({ "item_id": item_id, "output_index": output_index, "delta": arguments }),
            ),
            self.event(
                "response.function_call_arguments.done",
                json!({ "item_id": item_id, "output_index": output_index, "name": call.name,
                        "arguments": arguments }),
            ),
            self.event(
                "response.output_item.done",
                json!({ "output_index": output_index, "item": done }),
            ),
        ]
    }
}

impl Dialect for ResponseEvents {
    type Item = Event;
    const STREAM: &'static str = "openai_responses";

    fn opening(&mut self) -> Vec<Event> {
        let created = self.response("in_progress", json!([]), Value::Null);
        vec![
            self.event("response.created", json!({ "response": created })),
            self.event("response.in_progress", json!({ "response": created })),
        ]
    }

    fn text(&mut self, text: &str) -> Vec<Event> {
        let mut events = if self.opened {
            Vec::new()
        } else {
            self.open_message()
        };
        self.text.push_str(text);
        let item_id = format!("msg_{}", self.hex);
        events.push(self.event(
            "response.output_text.delta",
            json!({ "item_id": item_id, "output_index": 0, "content_index": 0, "delta": text,
                    "logprobs": [] }),
        ));
        events
    }

    fn ended(&mut self, job: &Job) -> Vec<Event> {
        if job.status != JobStatus::Succeeded {
            return self.failed(&crate::calls::answer::failure(job));
        }
        let reply = crate::calls::answer::reply(job);
        let mut events = Vec::new();
        if !self.opened && reply.tool_calls.is_empty() {
            events.extend(self.open_message());
        }
        let messages = usize::from(self.opened);
        if self.opened {
            events.extend(self.close_message());
        }
        for (index, call) in reply.tool_calls.iter().enumerate() {
            events.extend(self.function_call(index, call, messages + index));
        }
        let (input, output) = crate::calls::answer::tokens(job);
        let usage = json!({
            "input_tokens": input, "input_tokens_details": { "cached_tokens": 0 },
            "output_tokens": output, "output_tokens_details": { "reasoning_tokens": 0 },
            "total_tokens": input + output,
        });
        let finish = crate::calls::answer::finish(job, None);
        let (status, incomplete) = replies::response_status(finish);
        let whole = Reply {
            text: self.text.clone(),
            ..reply
        };
        let items = replies::response_output(&self.hex, &whole);
        let mut ended = self.response(status, json!(items), usage);
        ended["incomplete_details"] = incomplete;
        let kind = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        events.push(self.event(kind, json!({ "response": ended })));
        events
    }

    fn failed(&mut self, error: &ApiError) -> Vec<Event> {
        let body = super::openai_error(error);
        let error = self.event(
            "error",
            json!({ "code": body["error"]["code"], "message": body["error"]["message"],
                    "param": null }),
        );
        let failed = self.response("failed", json!([]), Value::Null);
        vec![
            error,
            self.event("response.failed", json!({ "response": failed })),
        ]
    }
}
