//! A conversation in Ollama's dialect, read into Tollgate's conversation model and its reply
//! written back: messages with an assistant's `tool_calls` (arguments as an object, the call id
//! when there is one — a call without one is given one here, once), `role: "tool"` results naming
//! their call by `tool_call_id` and/or the tool by `tool_name` (the official `ollama` package sends
//! only the name), a user's `images` (bare base64, each place noted for intake), an assistant's
//! `thinking`, the tools offered, and `format` as `"json"` or a JSON schema.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tollgate_core::domain::ValidationError;
use tollgate_core::domain::conversation::{
    Arguments, Image, JsonSchemaFormat, Message, OutputFormat, Part, Reply, Role, Thinking, Tool,
    ToolCall, ToolResult, answered_call,
};

use crate::intake::images::{self, ImagePlaces};

/// The name a schema given as Ollama's `format` goes by (Ollama's has none; OpenAI needs one).
const FORMAT_NAME: &str = "response";

/// A message as `/api/chat` takes it.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OllamaMessage)]
#[serde(deny_unknown_fields)]
pub struct OllamaMessage {
    /// `system`, `user`, `assistant` or `tool`.
    role: String,
    #[serde(default)]
    content: String,
    /// An assistant's tool calls.
    tool_calls: Option<Vec<OllamaToolCall>>,
    /// The tool whose result a `tool` message is.
    tool_name: Option<String>,
    /// The call a `tool` message answers.
    tool_call_id: Option<String>,
    /// A user's images, each bare base64 (PNG, JPEG, WebP or GIF).
    #[schema(max_items = 16)]
    images: Option<Vec<String>>,
    /// An assistant's reasoning sent back with its answer.
    thinking: Option<String>,
}

/// A tool call in Ollama's shape: arguments as an object.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OllamaToolCall)]
#[serde(deny_unknown_fields)]
pub struct OllamaToolCall {
    id: Option<String>,
    function: OllamaFunctionCall,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OllamaFunctionCall)]
#[serde(deny_unknown_fields)]
pub struct OllamaFunctionCall {
    #[serde(rename = "index")]
    _index: Option<u32>,
    name: String,
    arguments: Map<String, Value>,
}

/// A tool offered: `{"type": "function", "function": {name, description, parameters}}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OllamaTool)]
#[serde(deny_unknown_fields)]
pub struct OllamaTool {
    #[serde(rename = "type")]
    kind: Option<String>,
    function: OllamaFunction,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OllamaFunction)]
#[serde(deny_unknown_fields)]
pub struct OllamaFunction {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
}

/// The messages as the conversation's.
pub fn messages(
    given: Vec<OllamaMessage>,
    places: &mut ImagePlaces,
) -> Result<Vec<Message>, ValidationError> {
    given
        .into_iter()
        .enumerate()
        .map(|(i, message)| message.into_message(&format!("messages[{i}]"), places))
        .collect()
}

/// Images given as Ollama takes them (bare base64), each place noted under `at`.
pub fn images(given: Vec<String>, at: &str, places: &mut ImagePlaces) -> Vec<Image> {
    given
        .into_iter()
        .enumerate()
        .map(|(k, base64)| {
            places.note(format!("{at}[{k}]"));
            images::bare(base64)
        })
        .collect()
}

/// The tools offered.
pub fn tools(given: Vec<OllamaTool>) -> Result<Vec<Tool>, ValidationError> {
    given
        .into_iter()
        .enumerate()
        .map(|(i, tool)| {
            if tool.kind.as_deref().is_some_and(|k| k != "function") {
                return Err(ValidationError::new(
                    format!("tools[{i}].type"),
                    "only function tools are supported",
                ));
            }
            let function = tool.function;
            Ok(Tool {
                name: function.name,
                description: function.description,
                parameters: function
                    .parameters
                    .unwrap_or_else(|| json!({ "type": "object", "properties": {} })),
                strict: false,
            })
        })
        .collect()
}

/// `format`: nothing, `"json"` (one JSON object) or a JSON schema.
pub fn output(format: Option<Value>) -> Result<OutputFormat, ValidationError> {
    match format {
        None | Some(Value::Null) => Ok(OutputFormat::Text),
        Some(Value::String(f)) if f.is_empty() => Ok(OutputFormat::Text),
        Some(Value::String(f)) if f == "json" => Ok(OutputFormat::JsonObject),
        Some(schema @ Value::Object(_)) => Ok(OutputFormat::JsonSchema(JsonSchemaFormat {
            name: FORMAT_NAME.to_owned(),
            description: None,
            schema,
            strict: false,
        })),
        Some(_) => Err(ValidationError::new(
            "format",
            "must be \"json\" or a JSON schema object",
        )),
    }
}

/// The reply's message in Ollama's shape: its tool calls with their arguments as an object.
pub fn reply_message(reply: &Reply) -> Value {
    let mut message = json!({ "role": "assistant", "content": reply.text });
    if let Some(thinking) = &reply.thinking {
        message["thinking"] = json!(thinking.text);
    }
    if !reply.tool_calls.is_empty() {
        let calls: Vec<Value> = reply
            .tool_calls
            .iter()
            .enumerate()
            .map(|(index, call)| tool_call(index, call))
            .collect();
        message["tool_calls"] = json!(calls);
    }
    message
}

/// A call in Ollama's shape, `index` counting the reply's calls.
pub fn tool_call(index: usize, call: &ToolCall) -> Value {
    json!({ "id": call.id, "function": { "index": index, "name": call.name,
                                          "arguments": call.arguments.to_object() } })
}

impl OllamaMessage {
    fn into_message(self, at: &str, places: &mut ImagePlaces) -> Result<Message, ValidationError> {
        let given = self.images.unwrap_or_default();
        let role = Role::from_name(&self.role).ok_or_else(|| {
            ValidationError::new(
                format!("{at}.role"),
                format!(
                    "{:?} is not supported: use system, user, assistant or tool",
                    self.role
                ),
            )
        })?;
        if !given.is_empty() && role != Role::User {
            return Err(ValidationError::new(
                format!("{at}.images"),
                "images are shown in user messages",
            ));
        }
        if role == Role::Tool {
            if self.tool_call_id.is_none() && self.tool_name.is_none() {
                return Err(ValidationError::new(
                    format!("{at}.tool_name"),
                    "a tool message names its tool (tool_name) or its call (tool_call_id)",
                ));
            }
            return Ok(Message {
                role,
                parts: vec![Part::ToolResult(ToolResult {
                    call_id: self.tool_call_id,
                    name: self.tool_name,
                    content: self.content,
                })],
            });
        }
        let mut parts = Vec::new();
        // Only an assistant's reasoning is the model's to read again; a client that echoes a
        // `thinking` on another message has it left out.
        let thinking = self
            .thinking
            .filter(|t| role == Role::Assistant && !t.is_empty());
        let thought = thinking.is_some();
        if let Some(text) = thinking {
            parts.push(Part::Thinking(Thinking::new(text, None)));
        }
        if !self.content.is_empty() || (self.tool_calls.is_none() && given.is_empty() && !thought) {
            parts.push(Part::Text { text: self.content });
        }
        let shown = images(given, &format!("{at}.images"), places);
        parts.extend(shown.into_iter().map(Part::Image));
        for call in self.tool_calls.into_iter().flatten() {
            // An id is made once here for a call its client kept without one.
            let arguments = Arguments::from_object(&call.function.arguments);
            parts.push(Part::ToolCall(answered_call(
                call.id,
                call.function.name,
                arguments,
            )));
        }
        Ok(Message { role, parts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(messages_json: Value) -> Result<Vec<Message>, ValidationError> {
        messages(
            serde_json::from_value(messages_json).expect("messages"),
            &mut ImagePlaces::default(),
        )
    }

    #[test]
    fn a_history_of_calls_and_results_reads_with_ids_made_once() {
        let read = read(json!([
            { "role": "user", "content": "Weather?" },
            { "role": "assistant", "content": "", "tool_calls": [
                { "function": { "name": "get_weather", "arguments": { "z": 1, "city": "Paris" } } }] },
            { "role": "tool", "tool_name": "get_weather", "content": "18°C" },
        ]))
        .expect("valid");
        let call = read[1].tool_calls().next().expect("a call");
        assert!(call.id.starts_with("call_"));
        assert_eq!(
            call.arguments.as_str(),
            r#"{"z":1,"city":"Paris"}"#,
            "the object's keys in the order written"
        );
        assert!(matches!(&read[2].parts[0],
            Part::ToolResult(r) if r.name.as_deref() == Some("get_weather") && r.call_id.is_none()));
    }

    #[test]
    fn format_is_json_or_a_schema_and_nothing_else() {
        assert_eq!(output(Some(json!("json"))), Ok(OutputFormat::JsonObject));
        assert!(matches!(
            output(Some(json!({ "type": "object" }))),
            Ok(OutputFormat::JsonSchema(f)) if f.name == FORMAT_NAME
        ));
        assert_eq!(
            output(Some(json!("yaml"))).expect_err("refused").field,
            "format"
        );
        assert!(read(json!([{ "role": "tool", "content": "x" }])).is_err());
    }
}
