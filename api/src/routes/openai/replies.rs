//! The assistant's reply in OpenAI's two answer dialects: a Chat Completions `message` (tool calls
//! with their arguments as a JSON string, `content: null` when it only calls tools, the model's
//! reasoning as `reasoning_content`, as OpenAI-compatible servers write it) and `finish_reason`,
//! and the Responses API's output items (a `reasoning` item when the model reasoned, a `message`
//! item, then a `function_call` item per call, joined to its output by `call_id`) and status.
//! Shared by whole answers, streams and batch output lines.

use serde_json::{Value, json};
use tollgate_core::domain::conversation::{Finish, Reply, Thinking, ToolCall};

/// Chat Completions' `message` for the reply.
pub fn chat_message(reply: &Reply) -> Value {
    let content =
        if reply.text.is_empty() && (!reply.tool_calls.is_empty() || reply.refusal.is_some()) {
            Value::Null
        } else {
            json!(reply.text)
        };
    let mut message = json!({ "role": "assistant", "content": content, "refusal": reply.refusal });
    if let Some(thinking) = &reply.thinking {
        message["reasoning_content"] = json!(thinking.text);
    }
    if !reply.tool_calls.is_empty() {
        let calls: Vec<Value> = reply.tool_calls.iter().map(chat_tool_call).collect();
        message["tool_calls"] = json!(calls);
    }
    message
}

/// A choice's `logprobs` as Chat Completions writes them: `{"content": [...], "refusal": null}`,
/// or `null` when none were asked for or given.
pub fn chat_logprobs(reply: &Reply) -> Value {
    match &reply.logprobs {
        Some(content) => json!({ "content": content, "refusal": null }),
        None => Value::Null,
    }
}

/// A call as Chat Completions writes it.
pub fn chat_tool_call(call: &ToolCall) -> Value {
    json!({ "id": call.id, "type": "function",
            "function": { "name": call.name, "arguments": call.arguments.as_str() } })
}

/// The Responses API's message item (`text` `None` while it is still being written).
pub fn message_item(hex: &str, status: &str, text: Option<&str>) -> Value {
    let content = match text {
        Some(text) => json!([{ "type": "output_text", "text": text, "annotations": [] }]),
        None => json!([]),
    };
    json!({ "type": "message", "id": format!("msg_{hex}"), "status": status,
            "role": "assistant", "content": content })
}

/// The Responses API's reasoning item: the reasoning as its summary (none while it is still being
/// written) and the provider's signature as its encrypted content.
pub fn reasoning_item(hex: &str, thinking: Option<&Thinking>) -> Value {
    let summary = match thinking {
        Some(thinking) => json!([{ "type": "summary_text", "text": thinking.text }]),
        None => json!([]),
    };
    let mut item = json!({ "type": "reasoning", "id": reasoning_id(hex), "summary": summary });
    if let Some(signature) = thinking.and_then(|t| t.signature.as_ref()) {
        item["encrypted_content"] = json!(signature);
    }
    item
}

/// The id of the reply's reasoning item.
pub fn reasoning_id(hex: &str) -> String {
    format!("rs_{hex}")
}

/// The Responses API's item for the reply's `index`th call (`arguments` as far as written).
pub fn function_call_item(
    hex: &str,
    index: usize,
    call: &ToolCall,
    arguments: &str,
    status: &str,
) -> Value {
    json!({ "type": "function_call", "id": function_call_id(hex, index), "call_id": call.id,
            "name": call.name, "arguments": arguments, "status": status })
}

/// The id of the reply's `index`th function call item.
pub fn function_call_id(hex: &str, index: usize) -> String {
    format!("fc_{hex}_{index}")
}

/// The Responses API's output for the reply: its reasoning, its message (when it says
/// something, or says nothing at all), then its calls.
pub fn response_output(hex: &str, reply: &Reply) -> Vec<Value> {
    let mut output = Vec::new();
    if let Some(thinking) = &reply.thinking {
        output.push(reasoning_item(hex, Some(thinking)));
    }
    if !reply.text.is_empty() || reply.tool_calls.is_empty() {
        let mut message = message_item(hex, "completed", Some(&reply.text));
        if let Some(refusal) = &reply.refusal {
            message["content"] = json!([{ "type": "refusal", "refusal": refusal }]);
        }
        output.push(message);
    }
    for (index, call) in reply.tool_calls.iter().enumerate() {
        output.push(function_call_item(
            hex,
            index,
            call,
            call.arguments.as_str(),
            "completed",
        ));
    }
    output
}

/// The Responses API's `status` and `incomplete_details` for a reply that ended so.
pub fn response_status(finish: Finish) -> (&'static str, Value) {
    match finish {
        Finish::Length => ("incomplete", json!({ "reason": "max_output_tokens" })),
        Finish::ContentFilter => ("incomplete", json!({ "reason": "content_filter" })),
        Finish::Stop | Finish::ToolCalls => ("completed", Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::domain::conversation::{Arguments, answered_call};

    use super::*;

    fn calling() -> Reply {
        let call = answered_call(
            Some("call_1".into()),
            "get_weather".into(),
            Arguments::parse(r#"{"city": "Paris"}"#).expect("JSON"),
        );
        Reply::answered(String::new(), vec![call], None, Some("stop"))
    }

    #[test]
    fn a_reply_of_calls_has_no_content_and_its_arguments_as_text() {
        let message = chat_message(&calling());
        assert_eq!(message["content"], Value::Null);
        assert_eq!(
            message["tool_calls"],
            json!([{ "id": "call_1", "type": "function",
                     "function": { "name": "get_weather", "arguments": r#"{"city": "Paris"}"# } }])
        );
        assert_eq!(chat_message(&Reply::text("", None))["content"], "");
    }

    #[test]
    fn responses_output_holds_a_function_call_item_per_call_joined_by_call_id() {
        let output = response_output("ab", &calling());
        assert_eq!(output.len(), 1, "no empty message beside the calls");
        assert_eq!(output[0]["type"], "function_call");
        assert_eq!(output[0]["call_id"], "call_1");
        assert_eq!(output[0]["id"], "fc_ab_0");
        let text = response_output("ab", &Reply::text("Hi", None));
        assert_eq!(text[0]["content"][0]["text"], "Hi");
        assert_eq!(response_status(Finish::Length).0, "incomplete");
    }
}
