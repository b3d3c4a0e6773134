//! A conversation in Ollama's `/api/chat` form: each message's text as `content` and its images
//! as `images` (bare base64, no `data:` prefix), an assistant's reasoning as `thinking`, its
//! tool calls with their arguments as an object and their call id, a tool's result with the call
//! id and the tool's name (filled in from the call when the result named only the id), the tools
//! offered, and the answer's format as `"json"` or the schema itself; and the tool calls of
//! Ollama's answer read back, with their arguments' exact text and a call id made for each call
//! an Ollama before 0.12.10 sent without one.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::domain::conversation::{
    Arguments, Conversation, Image, OutputFormat, Part, ToolCall, ToolChoice, answered_call,
};
use crate::provider::ProviderError;

/// The conversation's messages as `/api/chat` takes them.
pub(super) fn messages(conversation: &Conversation) -> Result<Vec<Value>, ProviderError> {
    // Each call's tool, by call id: a result that names only its call still names its tool.
    let mut tools: HashMap<&str, &str> = HashMap::new();
    let mut written = Vec::with_capacity(conversation.messages.len());
    for message in &conversation.messages {
        let mut out = json!({ "role": message.role.as_str(), "content": message.joined_text() });
        let calls: Vec<Value> = message
            .tool_calls()
            .map(|call| {
                tools.insert(&call.id, &call.name);
                // An object, as Ollama takes arguments (a string there breaks its parser); its
                // keys come out sorted, which changes nothing the tool reads.
                json!({ "id": call.id,
                        "function": { "name": call.name, "arguments": call.arguments.to_object() } })
            })
            .collect();
        if !calls.is_empty() {
            out["tool_calls"] = json!(calls);
        }
        if let Some(thinking) = message.thinking() {
            out["thinking"] = json!(thinking);
        }
        let images = images(message.images())?;
        if !images.is_empty() {
            out["images"] = Value::Array(images);
        }
        for part in &message.parts {
            if let Part::ToolResult(result) = part {
                if let Some(id) = &result.call_id {
                    out["tool_call_id"] = json!(id);
                }
                let name = result.name.as_deref().or_else(|| {
                    let id = result.call_id.as_deref()?;
                    tools.get(id).copied()
                });
                if let Some(name) = name {
                    out["tool_name"] = json!(name);
                }
            }
        }
        written.push(out);
    }
    Ok(written)
}

/// Images as `/api/chat` and `/api/generate` take them: bare base64 each (moved into the body,
/// never copied: an image's text is megabytes).
pub(super) fn images<'a>(
    images: impl Iterator<Item = &'a Image>,
) -> Result<Vec<Value>, ProviderError> {
    images
        .map(|image| super::image_base64(image).map(|(_, base64)| Value::String(base64)))
        .collect()
}

/// The tools offered, as `/api/chat` takes them. Ollama has no tool choice, so it is kept by
/// what is offered: no tools for `none`, only the named one for a named choice (`required` cannot
/// be kept: the model may still answer in text).
pub(super) fn tools(conversation: &Conversation) -> Option<Value> {
    if conversation.tools.is_empty() || conversation.tool_choice == ToolChoice::None {
        return None;
    }
    let named = match &conversation.tool_choice {
        ToolChoice::Tool(name) => Some(name.as_str()),
        _ => None,
    };
    let tools: Vec<Value> = conversation
        .tools
        .iter()
        .filter(|tool| named.is_none_or(|name| name == tool.name))
        .map(super::function_tool)
        .collect();
    Some(json!(tools))
}

/// A tool call in Ollama's answer (whole, in one stream line when streamed).
#[derive(Deserialize)]
pub(super) struct AnsweredCall {
    id: Option<String>,
    function: AnsweredFunction,
}

#[derive(Deserialize)]
struct AnsweredFunction {
    name: String,
    /// Read as its exact text, so the call keeps the key order Ollama wrote.
    arguments: Box<RawValue>,
}

impl AnsweredCall {
    /// The call as the conversation keeps it.
    pub(super) fn into_call(self) -> Result<ToolCall, ProviderError> {
        let arguments = Arguments::parse(self.function.arguments.get()).map_err(|e| {
            super::http::unreadable(&format!(
                "tool call arguments of {}: {e}",
                self.function.name
            ))
        })?;
        Ok(answered_call(self.id, self.function.name, arguments))
    }
}

/// The answer's format as `/api/chat`'s and `/api/generate`'s `format`, if it has one.
pub(super) fn format(output: &OutputFormat) -> Option<Value> {
    match output {
        OutputFormat::Text => None,
        OutputFormat::JsonObject => Some(json!("json")),
        OutputFormat::JsonSchema(format) => Some(format.schema.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::conversation::{Arguments, Message, Role, ToolCall, ToolResult};

    #[test]
    fn tool_calls_go_as_objects_and_results_name_their_call_and_tool() {
        let conversation = Conversation {
            messages: vec![
                Message::text(Role::User, "Weather in Paris?"),
                Message {
                    role: Role::Assistant,
                    parts: vec![Part::ToolCall(ToolCall {
                        id: "call_1".into(),
                        name: "get_weather".into(),
                        arguments: Arguments::parse(r#"{"city":"Paris"}"#).expect("JSON"),
                    })],
                },
                Message {
                    role: Role::Tool,
                    parts: vec![Part::ToolResult(ToolResult {
                        call_id: Some("call_1".into()),
                        name: None,
                        content: "18°C".into(),
                    })],
                },
            ],
            ..Conversation::default()
        };
        assert_eq!(
            messages(&conversation).expect("no images to load"),
            [
                json!({ "role": "user", "content": "Weather in Paris?" }),
                json!({ "role": "assistant", "content": "", "tool_calls": [
                    { "id": "call_1",
                      "function": { "name": "get_weather", "arguments": { "city": "Paris" } } }] }),
                json!({ "role": "tool", "content": "18°C",
                        "tool_call_id": "call_1", "tool_name": "get_weather" }),
            ]
        );
    }

    #[test]
    fn formats_are_json_or_the_schema() {
        assert_eq!(format(&OutputFormat::Text), None);
        assert_eq!(format(&OutputFormat::JsonObject), Some(json!("json")));
    }
}
