//! The Messages API's stream, written from the job's feed: `message_start` and a `ping`, then
//! each block in turn — the reasoning (`thinking_delta`s, closed by its `signature_delta`), the
//! text (`text_delta`s) — as the pieces arrive, then at the end the tool calls (each a `tool_use`
//! block whose whole `input` is one `input_json_delta`, as Ollama gives calls whole), the
//! `message_delta` with the stop reason and usage, and `message_stop`. Blocks never overlap,
//! their indexes count from 0 and every start has its stop. A failure after the first byte is an
//! `error` event (which the SDK raises), never a clean end.

use axum::response::sse::Event;
use serde_json::{Value, json};
use tollgate_core::domain::anthropic::gateway_signature;
use tollgate_core::domain::{Job, JobStatus};
use tollgate_core::provider::anthropic_wire::stop_reason;

use super::replies;
use crate::calls::answer::Tokens;
use crate::calls::feed::{Dialect, Feed};
use crate::http::error::ApiError;

/// The block being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Thinking,
    Text,
    ToolUse,
    /// A block passed on whole (Anthropic's redacted reasoning, a server tool's call or result).
    Whole,
}

pub struct MessageEvents {
    id: String,
    model: String,
    max_tokens: Option<u32>,
    /// The next block's index.
    next: usize,
    open: Open,
    /// The reasoning written so far (what the gateway signs when the provider does not).
    thought: String,
    /// The provider's signature, once it came.
    signed: bool,
}

impl MessageEvents {
    pub fn new(feed: &Feed, max_tokens: Option<u32>) -> Self {
        Self {
            id: replies::message_id(feed.job_id()),
            model: feed.model().to_owned(),
            max_tokens,
            next: 0,
            open: Open::None,
            thought: String::new(),
            signed: false,
        }
    }

    /// Opens a block of `kind`, closing the one open.
    fn open(&mut self, kind: Open, block: Value) -> Vec<Event> {
        let mut events = self.close();
        events.push(event(
            "content_block_start",
            json!({ "type": "content_block_start", "index": self.next, "content_block": block }),
        ));
        self.open = kind;
        events
    }

    /// Closes the open block: reasoning with its signature first (the gateway's when the
    /// provider gave none).
    fn close(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        match self.open {
            Open::None => return events,
            Open::Thinking if !self.signed => {
                let signature = gateway_signature(&self.thought);
                events
                    .push(self.delta(json!({ "type": "signature_delta", "signature": signature })));
            }
            Open::Thinking | Open::Text | Open::ToolUse | Open::Whole => {}
        }
        events.push(event(
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": self.next }),
        ));
        self.next += 1;
        self.open = Open::None;
        events
    }

    fn delta(&self, delta: Value) -> Event {
        event(
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": self.next, "delta": delta }),
        )
    }
}

/// An SSE event named as its data's `type`.
fn event(name: &'static str, data: Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

impl Dialect for MessageEvents {
    type Item = Event;
    const STREAM: &'static str = "anthropic_messages";

    fn opening(&mut self) -> Vec<Event> {
        let message = json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": replies::usage(Tokens::default()),
        });
        vec![
            event(
                "message_start",
                json!({ "type": "message_start", "message": message }),
            ),
            event("ping", json!({ "type": "ping" })),
        ]
    }

    fn text(&mut self, text: &str) -> Vec<Event> {
        let mut events = Vec::new();
        if self.open != Open::Text {
            events = self.open(Open::Text, json!({ "type": "text", "text": "" }));
        }
        events.push(self.delta(json!({ "type": "text_delta", "text": text })));
        events
    }

    fn thinking(&mut self, text: &str) -> Vec<Event> {
        let mut events = Vec::new();
        if self.open != Open::Thinking {
            let block = json!({ "type": "thinking", "thinking": "", "signature": "" });
            events = self.open(Open::Thinking, block);
        }
        self.thought.push_str(text);
        events.push(self.delta(json!({ "type": "thinking_delta", "thinking": text })));
        events
    }

    fn signature(&mut self, signature: &str) -> Vec<Event> {
        if self.open != Open::Thinking {
            return Vec::new();
        }
        self.signed = true;
        vec![self.delta(json!({ "type": "signature_delta", "signature": signature }))]
    }

    fn block(&mut self, block: &Value) -> Vec<Event> {
        let mut events = self.open(Open::Whole, block.clone());
        events.extend(self.close());
        events
    }

    fn ended(&mut self, job: &Job) -> Vec<Event> {
        if job.status != JobStatus::Succeeded {
            return self.failed(&crate::calls::answer::failure(job));
        }
        let reply = crate::calls::answer::reply(job);
        if self.open == Open::Thinking
            && !self.signed
            && let Some(signature) = reply.thinking.as_ref().and_then(|t| t.signature.clone())
        {
            self.signed = true;
            let mut events =
                vec![self.delta(json!({ "type": "signature_delta", "signature": signature }))];
            events.extend(self.end(job, &reply));
            return events;
        }
        self.end(job, &reply)
    }

    fn failed(&mut self, error: &ApiError) -> Vec<Event> {
        vec![event(
            "error",
            super::error_body(error.status(), &error.problem()),
        )]
    }
}

impl MessageEvents {
    /// The tool calls, then the stop reason and usage, then the end.
    fn end(&mut self, job: &Job, reply: &tollgate_core::domain::conversation::Reply) -> Vec<Event> {
        let mut events = Vec::new();
        if self.next == 0 && self.open == Open::None && reply.tool_calls.is_empty() {
            events.extend(self.open(Open::Text, json!({ "type": "text", "text": "" })));
        }
        for call in &reply.tool_calls {
            let mut opening = replies::tool_use_block(call);
            opening["input"] = json!({});
            events.extend(self.open(Open::ToolUse, opening));
            let arguments = call.arguments.as_str();
            events
                .push(self.delta(json!({ "type": "input_json_delta", "partial_json": arguments })));
        }
        events.extend(self.close());
        let finish = crate::calls::answer::finish(job, self.max_tokens);
        let usage = replies::usage(Tokens::of(job));
        events.push(event(
            "message_delta",
            json!({ "type": "message_delta",
                    "delta": { "stop_reason": stop_reason(finish), "stop_sequence": null },
                    "usage": usage }),
        ));
        events.push(event("message_stop", json!({ "type": "message_stop" })));
        events
    }
}
