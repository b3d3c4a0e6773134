//! A job's request as a Messages API body, and an answer read back into a reply.
//!
//! The conversation is written in Anthropic's form: the system messages as `system` blocks, the
//! rest alternating `user` (a tool's result is the user's `tool_result` block) and `assistant`
//! (its reasoning, text and `tool_use` blocks, in order), images as base64 sources, the tools
//! with `input_schema`, the tool choice, the answer's schema as `output_config.format`, and
//! reasoning as `thinking` with a budget. Reasoning signed by the gateway rather than Anthropic is
//! left out: Anthropic would refuse it.
//!
//! A request that came in Anthropic's dialect is written with everything it carried that the
//! conversation model has no place for ([`AnthropicExtras`]): the fields beside each block's and
//! tool's own, its server tools, and its top-level fields as sent (its `thinking` too, while the
//! step asks for reasoning) — so Anthropic to Anthropic loses nothing.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::ProviderError;
use super::anthropic_wire::{Answer, Block, Usage};
use crate::domain::anthropic::{AnthropicExtras, is_gateway_signature};
use crate::domain::conversation::{
    Arguments, Conversation, Message, OutputFormat, Part, Reply, Role, Thinking, ToolChoice,
    answered_call,
};
use crate::domain::{Effort, GenerationOptions, JobErrorCode, JobRequest, Reasoning};

/// The most an answer may run to when the client said nothing (Anthropic requires a limit).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;
/// The least a thinking budget may be (Anthropic's floor).
const MIN_THINKING_BUDGET: u32 = 1024;

/// The Messages API body for `request` on `model`, asking for `reasoning`; the extras the
/// request kept, and the `anthropic-beta` header to send with it.
pub(super) fn body(
    request: &JobRequest,
    model: &str,
    reasoning: Option<Reasoning>,
) -> Result<(Value, Option<String>), ProviderError> {
    let empty = AnthropicExtras::default();
    // A chat is written from its own conversation; a generate's prompt is made one.
    let (conversation, options, extras) = match request {
        JobRequest::Chat(chat) => (
            Cow::Borrowed(&chat.conversation),
            &chat.options,
            chat.anthropic.as_deref().unwrap_or(&empty),
        ),
        JobRequest::Generate(generate) => {
            let mut parts = vec![Part::Text {
                text: generate.prompt.clone(),
            }];
            parts.extend(generate.images.iter().cloned().map(Part::Image));
            let mut messages = Vec::new();
            if let Some(system) = &generate.options.system {
                messages.push(Message::text(Role::System, system.clone()));
            }
            messages.push(Message {
                role: Role::User,
                parts,
            });
            let conversation = Conversation {
                messages,
                output: generate.output.clone(),
                ..Conversation::default()
            };
            (Cow::Owned(conversation), &generate.options, &empty)
        }
        JobRequest::Embedding(_) => {
            return Err(ProviderError::new(
                JobErrorCode::InvalidRequest,
                "Anthropic makes no embeddings",
            ));
        }
    };
    let max_tokens = options.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let (system, messages) = write_messages(&conversation, extras)?;
    let mut body = json!({ "model": model, "max_tokens": max_tokens, "messages": messages });
    if !system.is_empty() {
        body["system"] = Value::Array(system);
    }
    add_tools(&mut body, &conversation, extras);
    add_sampling(&mut body, options);
    add_output(&mut body, &conversation.output);
    for (field, value) in &extras.fields {
        if field != "thinking" {
            body[field] = value.clone();
        }
    }
    add_thinking(&mut body, reasoning, extras, max_tokens);
    Ok((body, extras.beta.clone()))
}

/// The system blocks and the messages, each block with the extras its part kept.
fn write_messages(
    conversation: &Conversation,
    extras: &AnthropicExtras,
) -> Result<(Vec<Value>, Vec<Value>), ProviderError> {
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    // The latest call of each tool: a result that names only its tool answers that call.
    let mut latest: HashMap<&str, &str> = HashMap::new();
    for (m, message) in conversation.messages.iter().enumerate() {
        let mut blocks = Vec::new();
        for (p, part) in message.parts.iter().enumerate() {
            let Some(mut block) = write_part(part, &mut latest)? else {
                continue;
            };
            if let (Some(kept), Value::Object(block)) = (extras.block(m, p), &mut block) {
                block.extend(kept.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            blocks.push(block);
        }
        let role = match message.role {
            Role::System => {
                system.extend(blocks);
                continue;
            }
            Role::User | Role::Tool => "user",
            Role::Assistant => "assistant",
        };
        match messages.last_mut() {
            // Consecutive turns of one speaker are one (a tool's results and the user's words).
            Some(last) if last["role"] == role => {
                if let Some(content) = last["content"].as_array_mut() {
                    content.extend(blocks);
                }
            }
            _ if blocks.is_empty() => {}
            _ => messages.push(json!({ "role": role, "content": blocks })),
        }
    }
    Ok((system, messages))
}

/// A part as a block; `None` for what is not sent (an empty text, reasoning not Anthropic's).
fn write_part<'a>(
    part: &'a Part,
    latest: &mut HashMap<&'a str, &'a str>,
) -> Result<Option<Value>, ProviderError> {
    Ok(Some(match part {
        Part::Text { text } if text.is_empty() => return Ok(None),
        Part::Text { text } => json!({ "type": "text", "text": text }),
        Part::Image(image) => {
            let (media_type, data) = super::image_base64(image)?;
            json!({ "type": "image",
                    "source": { "type": "base64", "media_type": media_type, "data": data } })
        }
        Part::ToolCall(call) => {
            latest.insert(&call.name, &call.id);
            json!({ "type": "tool_use", "id": call.id, "name": call.name,
                    "input": Value::Object(call.arguments.to_object()) })
        }
        Part::ToolResult(result) => {
            let id = result.call_id.as_deref().or_else(|| {
                let name = result.name.as_deref()?;
                latest.get(name).copied()
            });
            json!({ "type": "tool_result", "tool_use_id": id, "content": result.content })
        }
        Part::Anthropic(kept) => kept.block.clone(),
        Part::Thinking(thinking) => match &thinking.signature {
            Some(data) if thinking.redacted => json!({ "type": "redacted_thinking", "data": data }),
            Some(signature) if !is_gateway_signature(signature) => {
                json!({ "type": "thinking", "thinking": thinking.text, "signature": signature })
            }
            _ => return Ok(None),
        },
    }))
}

/// The tools offered (each with the fields it kept, then the server tools) and the choice.
fn add_tools(body: &mut Value, conversation: &Conversation, extras: &AnthropicExtras) {
    let mut tools: Vec<Value> = conversation
        .tools
        .iter()
        .enumerate()
        .map(|(k, tool)| {
            let mut written = Map::new();
            written.insert("name".into(), json!(tool.name));
            if let Some(description) = &tool.description {
                written.insert("description".into(), json!(description));
            }
            written.insert("input_schema".into(), tool.parameters.clone());
            if tool.strict {
                written.insert("strict".into(), json!(true));
            }
            if let Some(kept) = extras.tool(k) {
                written.extend(kept.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Value::Object(written)
        })
        .collect();
    tools.extend(extras.server_tools.iter().cloned());
    if tools.is_empty() {
        return;
    }
    body["tools"] = Value::Array(tools);
    let mut choice = match &conversation.tool_choice {
        ToolChoice::Auto => json!({ "type": "auto" }),
        ToolChoice::None => json!({ "type": "none" }),
        ToolChoice::Required => json!({ "type": "any" }),
        ToolChoice::Tool(name) => json!({ "type": "tool", "name": name }),
    };
    if !conversation.parallel_tool_calls && conversation.tool_choice != ToolChoice::None {
        choice["disable_parallel_tool_use"] = json!(true);
    }
    body["tool_choice"] = choice;
}

/// Temperature, `top_p` and the stop texts.
fn add_sampling(body: &mut Value, options: &GenerationOptions) {
    if let Some(temperature) = options.temperature {
        // Anthropic's range is 0 to 1 where OpenAI's is 0 to 2.
        body["temperature"] = json!(temperature.min(1.0));
    }
    if let Some(top_p) = options.top_p {
        body["top_p"] = json!(top_p);
    }
    if let Some(stop) = &options.stop {
        body["stop_sequences"] = json!(stop);
    }
}

/// The answer's schema as `output_config.format` (any object, for a JSON object).
fn add_output(body: &mut Value, output: &OutputFormat) {
    let schema = match output {
        OutputFormat::Text => return,
        OutputFormat::JsonObject => json!({ "type": "object" }),
        OutputFormat::JsonSchema(format) => format.schema.clone(),
    };
    body["output_config"] = json!({ "format": { "type": "json_schema", "schema": schema } });
}

/// `thinking` as the step asks: the client's own when it sent one (Anthropic's dialect), else a
/// budget for the level (at least 1,024 and below `max_tokens`, or none when `max_tokens`
/// leaves no room); `disabled` when reasoning is off; nothing when the step sends none. While
/// thinking, Anthropic takes a temperature of 1 only and no `top_p` below 0.95.
fn add_thinking(
    body: &mut Value,
    reasoning: Option<Reasoning>,
    extras: &AnthropicExtras,
    max_tokens: u32,
) {
    let Some(reasoning) = reasoning else {
        return;
    };
    if !reasoning.is_on() {
        body["thinking"] = json!({ "type": "disabled" });
        return;
    }
    if let Some(asked) = extras.fields.get("thinking") {
        body["thinking"] = asked.clone();
        return;
    }
    let wanted = match reasoning.effort() {
        Some(Effort::Minimal | Effort::Low) => 1024,
        None | Some(Effort::Medium) => 4096,
        Some(Effort::High) => 16_384,
        Some(Effort::Max) => 32_000,
    };
    let budget = wanted.min(max_tokens.saturating_sub(1));
    if budget < MIN_THINKING_BUDGET {
        return;
    }
    body["thinking"] = json!({ "type": "enabled", "budget_tokens": budget });
    if let Some(object) = body.as_object_mut() {
        object.remove("temperature");
        if object
            .get("top_p")
            .and_then(Value::as_f64)
            .is_some_and(|p| p < 0.95)
        {
            object.remove("top_p");
        }
    }
}

/// An answer's reply: its text, its tool calls, its reasoning with its signature (the last
/// block's, for an answer that thought more than once) and why it stopped.
pub(super) fn reply(answer: &Answer) -> Reply {
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut thought = String::new();
    let mut signature = None;
    let mut redacted = None;
    for block in &answer.content {
        match block {
            Block::Text { text: more, .. } => text.push_str(more),
            Block::ToolUse {
                id, name, input, ..
            } => {
                let arguments = match input {
                    Value::Object(input) => Arguments::from_object(input),
                    _ => Arguments::from_object(&Map::new()),
                };
                calls.push(answered_call(Some(id.clone()), name.clone(), arguments));
            }
            Block::Thinking {
                thinking,
                signature: signed,
                ..
            } => {
                thought.push_str(thinking);
                signature = Some(signed.clone()).filter(|s| !s.is_empty());
            }
            Block::RedactedThinking { data, .. } => redacted = Some(data.clone()),
            Block::Image { .. } | Block::ToolResult { .. } | Block::Other(_) => {}
        }
    }
    let mut reply = Reply::answered(text, calls, None, None);
    reply.finish = answer
        .stop_reason
        .as_deref()
        .map(super::anthropic_wire::finish_of)
        .or(reply.finish);
    if !reply.tool_calls.is_empty()
        && reply.finish == Some(crate::domain::conversation::Finish::Stop)
    {
        reply.finish = Some(crate::domain::conversation::Finish::ToolCalls);
    }
    reply.thinking = match (thought.is_empty(), redacted) {
        (true, Some(data)) => Some(Thinking::redacted(data)),
        _ if thought.is_empty() && signature.is_none() => None,
        _ => Some(Thinking::new(thought, signature)),
    };
    reply
}

/// The counts of an answer: the prompt's whole count (what was read from the cache and what was
/// written to it are parts of it) and the answer's.
pub(super) fn counts(usage: &Usage) -> (Option<i32>, Option<i32>, super::TokenDetails) {
    let part = |count: Option<i64>| i32::try_from(count.unwrap_or(0)).unwrap_or(i32::MAX);
    let read = part(usage.cache_read_input_tokens);
    let written = part(usage.cache_creation_input_tokens);
    let prompt = usage.input_tokens.map(|input| {
        part(Some(input))
            .saturating_add(read)
            .saturating_add(written)
    });
    let completion = usage.output_tokens.map(|output| part(Some(output)));
    let details = super::TokenDetails {
        reasoning: 0,
        cached: read,
        cache_written: written,
    };
    (prompt, completion, details)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::ChatRequest;
    use crate::domain::anthropic::gateway_signature;

    fn chat(stored: Value) -> JobRequest {
        let chat: ChatRequest = serde_json::from_value(stored).expect("a stored chat");
        JobRequest::Chat(chat)
    }

    #[test]
    fn a_conversation_is_written_in_anthropics_turns() {
        let request = chat(json!({
            "model": "claude", "options": { "max_tokens": 512, "temperature": 1.6 },
            "messages": [
                { "role": "system", "content": "Be terse." },
                { "role": "user", "content": "Weather in Paris and Rome?" },
                { "role": "assistant", "content": [
                    { "type": "thinking", "text": "Two calls.", "signature": "sig-anthropic" },
                    { "type": "thinking", "text": "Mine.", "signature": gateway_signature("Mine.") },
                    { "type": "tool_call", "id": "toolu_1", "name": "get_weather",
                      "arguments": "{\"city\": \"Paris\"}" },
                    { "type": "tool_call", "id": "toolu_2", "name": "get_weather",
                      "arguments": "{\"city\": \"Rome\"}" }] },
                { "role": "tool", "content": [
                    { "type": "tool_result", "call_id": "toolu_1", "content": "18°C" }] },
                { "role": "tool", "content": [
                    { "type": "tool_result", "name": "get_weather", "content": "21°C" }] },
                { "role": "user", "content": "Which is warmer?" }],
            "tools": [{ "name": "get_weather", "parameters": { "type": "object" } }],
            "tool_choice": "required", "parallel_tool_calls": false,
        }));
        let (body, beta) = body(&request, "claude-sonnet-4-6", None).expect("a body");
        assert_eq!(beta, None);
        assert_eq!(
            body["system"],
            json!([{ "type": "text", "text": "Be terse." }])
        );
        assert_eq!(body["max_tokens"], 512);
        assert_eq!(body["temperature"], 1.0, "Anthropic's range ends at 1");
        let messages = body["messages"].as_array().expect("messages");
        assert_eq!(
            messages.len(),
            3,
            "tool results and the user's words are one turn"
        );
        assert_eq!(
            messages[1]["content"][0],
            json!({ "type": "thinking", "thinking": "Two calls.", "signature": "sig-anthropic" })
        );
        assert_eq!(
            messages[1]["content"].as_array().map(Vec::len),
            Some(3),
            "the gateway's own reasoning is not sent to Anthropic"
        );
        assert_eq!(
            messages[1]["content"][1]["input"],
            json!({ "city": "Paris" })
        );
        assert_eq!(
            messages[2]["content"],
            json!([
                { "type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C" },
                { "type": "tool_result", "tool_use_id": "toolu_2", "content": "21°C" },
                { "type": "text", "text": "Which is warmer?" }])
        );
        assert_eq!(
            body["tool_choice"],
            json!({ "type": "any", "disable_parallel_tool_use": true })
        );
        assert_eq!(
            body["tools"][0]["input_schema"],
            json!({ "type": "object" })
        );
    }

    #[test]
    fn what_an_anthropic_client_sent_beyond_the_conversation_goes_back_verbatim() {
        let request = chat(json!({
            "model": "claude", "options": { "max_tokens": 32000, "reasoning": true },
            "messages": [
                { "role": "system", "content": [{ "type": "text", "text": "You are Claude Code." }] },
                { "role": "user", "content": [
                    { "type": "anthropic", "block": { "type": "document", "title": "spec" } },
                    { "type": "text", "text": "Fix the test." }] },
                { "role": "assistant", "content": [
                    { "type": "thinking", "text": "", "signature": "opaque", "redacted": true },
                    { "type": "text", "text": "Done." }] },
                { "role": "user", "content": "Thanks." }],
            "tools": [{ "name": "Bash", "parameters": { "type": "object" } }],
            "anthropic": {
                "beta": "context-management-2025-06-27",
                "fields": { "thinking": { "type": "adaptive" },
                            "context_management": { "edits": [] }, "top_k": 5 },
                "blocks": { "0.0": { "cache_control": { "type": "ephemeral" } },
                            "3.0": { "cache_control": { "type": "ephemeral", "ttl": "1h" } } },
                "tools": { "0": { "defer_loading": true } },
                "server_tools": [{ "type": "web_search_20250305", "name": "web_search" }] },
        }));
        let on = Some(Reasoning::Switch(true));
        let (body, beta) = body(&request, "claude-opus-4-6", on).expect("a body");
        assert_eq!(beta.as_deref(), Some("context-management-2025-06-27"));
        assert_eq!(body["system"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(
            body["messages"][0]["content"][0],
            json!({ "type": "document", "title": "spec" }),
            "a block kept whole goes back as it came"
        );
        assert_eq!(
            body["messages"][2]["content"][0]["cache_control"]["ttl"],
            "1h"
        );
        assert_eq!(
            body["messages"][1]["content"][0],
            json!({ "type": "redacted_thinking", "data": "opaque" })
        );
        assert_eq!(
            body["thinking"],
            json!({ "type": "adaptive" }),
            "the client's own"
        );
        assert_eq!(body["context_management"], json!({ "edits": [] }));
        assert_eq!(body["top_k"], 5);
        assert_eq!(body["tools"][0]["defer_loading"], true);
        assert_eq!(body["tools"][1]["type"], "web_search_20250305");
        // A step that cannot think sends no thinking at all, the client's included.
        let (dropped, _) = super::body(&request, "claude-haiku", None).expect("a body");
        assert!(dropped.get("thinking").is_none(), "{dropped}");
    }

    #[test]
    fn a_reasoning_level_is_a_budget_within_max_tokens() {
        let asked = |max_tokens: u32, effort: Effort| {
            let request = chat(
                json!({ "model": "claude", "options": { "max_tokens": max_tokens,
                                         "temperature": 0.2, "top_p": 0.5 },
                                       "messages": [{ "role": "user", "content": "Hi" }] }),
            );
            let reasoning = Some(Reasoning::Level(effort));
            body(&request, "claude", reasoning).expect("a body").0
        };
        let high = asked(32_000, Effort::High);
        assert_eq!(
            high["thinking"],
            json!({ "type": "enabled", "budget_tokens": 16_384 })
        );
        assert!(
            high.get("temperature").is_none() && high.get("top_p").is_none(),
            "{high}"
        );
        assert_eq!(
            asked(8_000, Effort::Max)["thinking"]["budget_tokens"],
            7_999
        );
        let no_room = asked(1_000, Effort::Low);
        assert!(
            no_room.get("thinking").is_none(),
            "no room to think: {no_room}"
        );
        assert_eq!(no_room["temperature"], 0.2);
        let off = body(
            &chat(json!({ "model": "c", "messages": [{ "role": "user", "content": "Hi" }] })),
            "claude",
            Some(Reasoning::OFF),
        )
        .expect("a body")
        .0;
        assert_eq!(off["thinking"], json!({ "type": "disabled" }));
        assert_eq!(off["max_tokens"], DEFAULT_MAX_TOKENS);
    }

    #[test]
    fn an_answer_reads_as_a_reply_with_its_signed_reasoning_and_cache_counts() {
        let answer: Answer = serde_json::from_value(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
            "content": [
                { "type": "thinking", "thinking": "Paris first.", "signature": "sig-1" },
                { "type": "text", "text": "Checking." },
                { "type": "tool_use", "id": "toolu_9", "name": "get_weather",
                  "input": { "city": "Paris" } }],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": { "input_tokens": 10, "cache_creation_input_tokens": 200,
                       "cache_read_input_tokens": 3000, "output_tokens": 40 } }))
        .expect("an answer");
        let reply = reply(&answer);
        assert_eq!(reply.text, "Checking.");
        assert_eq!(reply.tool_calls[0].id, "toolu_9");
        assert_eq!(
            reply.tool_calls[0].arguments.as_str(),
            r#"{"city":"Paris"}"#
        );
        assert_eq!(
            reply.thinking,
            Some(Thinking::new("Paris first.".into(), Some("sig-1".into())))
        );
        assert_eq!(
            reply.finish,
            Some(crate::domain::conversation::Finish::ToolCalls)
        );
        let (prompt, completion, details) = counts(&answer.usage);
        assert_eq!((prompt, completion), (Some(3210), Some(40)));
        assert_eq!((details.cached, details.cache_written), (3000, 200));
    }
}
