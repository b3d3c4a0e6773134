//! A finished job as Anthropic's `message`: its reasoning as a `thinking` block (signed by the
//! provider, or by the gateway when the provider signs none), its text, its tool calls as
//! `tool_use` blocks (`input` the arguments' object), why it stopped and its usage (the prompt
//! split into what was read from the provider's cache and the rest).

use serde_json::{Value, json};
use tollgate_core::domain::Job;
use tollgate_core::domain::anthropic::gateway_signature;
use tollgate_core::domain::conversation::{Reply, Thinking, ToolCall};
use tollgate_core::provider::ANTHROPIC_CONTENT;
use tollgate_core::provider::anthropic_wire::stop_reason;

use crate::calls::answer::Tokens;

/// An answer's id: `msg_` and its job's id.
pub fn message_id(job: tollgate_core::domain::JobId) -> String {
    format!("msg_{}", job.0.simple())
}

/// The job's answer as a `message`: as Anthropic wrote it when it came from Anthropic and
/// reasoned (its blocks kept in the result), else made from its reply.
pub fn message(job: &Job, max_tokens: Option<u32>) -> Value {
    let finish = crate::calls::answer::finish(job, max_tokens);
    let kept = job.result.as_ref().and_then(|r| r.get(ANTHROPIC_CONTENT));
    let content = match kept {
        Some(blocks) => blocks.clone(),
        None => Value::Array(content(&crate::calls::answer::reply(job))),
    };
    json!({
        "id": message_id(job.id), "type": "message", "role": "assistant", "model": job.model,
        "content": content, "stop_reason": stop_reason(finish), "stop_sequence": null,
        "usage": usage(Tokens::of(job)),
    })
}

/// A reply's blocks: its reasoning, its text, its tool calls.
fn content(reply: &Reply) -> Vec<Value> {
    let mut content = Vec::new();
    if let Some(thinking) = &reply.thinking {
        content.push(thinking_block(thinking));
    }
    if !reply.text.is_empty() || (reply.tool_calls.is_empty() && content.is_empty()) {
        content.push(json!({ "type": "text", "text": reply.text }));
    }
    content.extend(reply.tool_calls.iter().map(tool_use_block));
    content
}

/// A reasoning part as a `thinking` block (`redacted_thinking` with its data, when redacted).
fn thinking_block(thinking: &Thinking) -> Value {
    if thinking.redacted {
        return json!({ "type": "redacted_thinking", "data": signature(thinking) });
    }
    json!({ "type": "thinking", "thinking": thinking.text, "signature": signature(thinking) })
}

/// The reasoning's signature: the provider's, or the gateway's own.
pub fn signature(thinking: &Thinking) -> String {
    thinking
        .signature
        .clone()
        .unwrap_or_else(|| gateway_signature(&thinking.text))
}

/// A tool call as a `tool_use` block.
pub fn tool_use_block(call: &ToolCall) -> Value {
    json!({ "type": "tool_use", "id": call.id, "name": call.name,
            "input": Value::Object(call.arguments.to_object()) })
}

/// Anthropic's `usage`: the prompt's tokens neither read from the provider's cache nor written
/// to it, those written, those read, and the answer's.
pub fn usage(tokens: Tokens) -> Value {
    json!({
        "input_tokens": (tokens.prompt - tokens.cached - tokens.cache_written).max(0),
        "cache_creation_input_tokens": tokens.cache_written,
        "cache_read_input_tokens": tokens.cached,
        "output_tokens": tokens.completion,
    })
}
