//! The Responses API's stream dialect ([`ResponseEvents`]), written from the job's feed: the
//! reasoning item and its summary deltas, the message item and its text deltas, a function call
//! item per tool call (which arrive whole with the reply's end: added, the arguments' delta and
//! done, done), never as text.

use axum::response::sse::Event;
use serde_json::{Value, json};
use tollgate_core::domain::conversation::{Reply, Thinking, ToolCall};
use tollgate_core::domain::{Job, JobStatus};

use super::{objects, replies};
use crate::calls::answer::Tokens;
use crate::calls::feed::{Dialect, Feed};
use crate::http::error::ApiError;

/// The Responses API's stream: `response.created`, `response.in_progress`, then — with the first
/// piece of reasoning — the reasoning item and its summary part opened and
/// `response.reasoning_summary_text.delta` per piece (closed when the text begins); with the
/// first piece of text the message item and its text part opened and `response.output_text.delta`
/// per piece; at the end the message closed, a function call item per tool call (added, its
/// arguments, done), and `response.completed` (`response.incomplete` when cut short), or an
/// `error` event.
pub(super) struct ResponseEvents {
    hex: String,
    created: i64,
    model: String,
    sequence: u64,
    text: String,
    /// The reasoning so far, and whether its item is open.
    thinking: String,
    reasoning: Opened,
    /// Whether the message item is open.
    opened: bool,
}

/// Where the reasoning item is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Opened {
    Not,
    Open,
    Closed,
}

impl ResponseEvents {
    pub(super) fn new(feed: &Feed) -> Self {
        Self {
            hex: feed.job_id().0.simple().to_string(),
            created: chrono::Utc::now().timestamp(),
            model: feed.model().to_owned(),
            sequence: 0,
            text: String::new(),
            thinking: String::new(),
            reasoning: Opened::Not,
            opened: false,
        }
    }

    /// The message's place among the output items: after the reasoning item, if there is one.
    fn message_index(&self) -> usize {
        usize::from(self.reasoning != Opened::Not)
    }

    /// The reasoning item and its summary part, opened.
    fn open_reasoning(&mut self) -> Vec<Event> {
        self.reasoning = Opened::Open;
        let item = replies::reasoning_item(&self.hex, None);
        let item_id = replies::reasoning_id(&self.hex);
        let part = json!({ "type": "summary_text", "text": "" });
        vec![
            self.event(
                "response.output_item.added",
                json!({ "output_index": 0, "item": item }),
            ),
            self.event(
                "response.reasoning_summary_part.added",
                json!({ "item_id": item_id, "output_index": 0, "summary_index": 0, "part": part }),
            ),
        ]
    }

    /// The reasoning item closed with the whole reasoning (and its signature, known at the end).
    fn close_reasoning(&mut self, signature: Option<String>) -> Vec<Event> {
        if self.reasoning != Opened::Open {
            return Vec::new();
        }
        self.reasoning = Opened::Closed;
        let text = self.thinking.clone();
        let item_id = replies::reasoning_id(&self.hex);
        let part = json!({ "type": "summary_text", "text": text });
        let thinking = Thinking::new(text.clone(), signature);
        let item = replies::reasoning_item(&self.hex, Some(&thinking));
        vec![
            self.event(
                "response.reasoning_summary_text.done",
                json!({ "item_id": item_id, "output_index": 0, "summary_index": 0,
                        "text": text }),
            ),
            self.event(
                "response.reasoning_summary_part.done",
                json!({ "item_id": item_id, "output_index": 0, "summary_index": 0, "part": part }),
            ),
            self.event(
                "response.output_item.done",
                json!({ "output_index": 0, "item": item }),
            ),
        ]
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

    /// The message item and its text part, opened (the reasoning item closed before it).
    fn open_message(&mut self) -> Vec<Event> {
        let mut events = self.close_reasoning(None);
        self.opened = true;
        let item = replies::message_item(&self.hex, "in_progress", None);
        let part = json!({ "type": "output_text", "text": "", "annotations": [] });
        let item_id = format!("msg_{}", self.hex);
        let index = self.message_index();
        events.push(self.event(
            "response.output_item.added",
            json!({ "output_index": index, "item": item }),
        ));
        events.push(self.event(
            "response.content_part.added",
            json!({ "item_id": item_id, "output_index": index, "content_index": 0,
                    "part": part }),
        ));
        events
    }

    /// The message item and its text part, closed with the whole text.
    fn close_message(&mut self) -> Vec<Event> {
        let text = self.text.clone();
        let item_id = format!("msg_{}", self.hex);
        let part = json!({ "type": "output_text", "text": text, "annotations": [] });
        let item = replies::message_item(&self.hex, "completed", Some(&text));
        let index = self.message_index();
        vec![
            self.event(
                "response.output_text.done",
                json!({ "item_id": item_id, "output_index": index, "content_index": 0,
                        "text": text, "logprobs": [] }),
            ),
            self.event(
                "response.content_part.done",
                json!({ "item_id": item_id, "output_index": index, "content_index": 0,
                        "part": part }),
            ),
            self.event(
                "response.output_item.done",
                json!({ "output_index": index, "item": item }),
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
        let index = self.message_index();
        events.push(self.event(
            "response.output_text.delta",
            json!({ "item_id": item_id, "output_index": index, "content_index": 0,
                    "delta": text, "logprobs": [] }),
        ));
        events
    }

    fn thinking(&mut self, text: &str) -> Vec<Event> {
        if self.reasoning == Opened::Closed {
            return Vec::new();
        }
        let mut events = match self.reasoning {
            Opened::Not => self.open_reasoning(),
            _ => Vec::new(),
        };
        self.thinking.push_str(text);
        let item_id = replies::reasoning_id(&self.hex);
        events.push(self.event(
            "response.reasoning_summary_text.delta",
            json!({ "item_id": item_id, "output_index": 0, "summary_index": 0, "delta": text }),
        ));
        events
    }

    fn ended(&mut self, job: &Job) -> Vec<Event> {
        if job.status != JobStatus::Succeeded {
            return self.failed(&crate::calls::answer::failure(job));
        }
        let reply = crate::calls::answer::reply(job);
        let signature = reply.thinking.as_ref().and_then(|t| t.signature.clone());
        let mut events = self.close_reasoning(signature);
        if !self.opened && reply.tool_calls.is_empty() {
            events.extend(self.open_message());
        }
        let before = self.message_index() + usize::from(self.opened);
        if self.opened {
            events.extend(self.close_message());
        }
        for (index, call) in reply.tool_calls.iter().enumerate() {
            events.extend(self.function_call(index, call, before + index));
        }
        let usage = objects::response_usage(Tokens::of(job));
        let finish = crate::calls::answer::finish(job, None);
        let (status, incomplete) = replies::response_status(finish);
        let streamed = (self.reasoning != Opened::Not).then(|| {
            let signature = reply.thinking.as_ref().and_then(|t| t.signature.clone());
            Thinking::new(self.thinking.clone(), signature)
        });
        let whole = Reply {
            text: self.text.clone(),
            thinking: streamed,
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
