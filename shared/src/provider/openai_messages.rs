//! A conversation in OpenAI's Chat Completions form: each message's text as `content` (its text
//! and image parts in order, an image as a `data:` URL, when it shows any), an
//! assistant's tool calls with their arguments as the exact JSON text, a tool's result joined to
//! its call by `tool_call_id` (found from the tool's name when the result named only that), the
//! tools offered with the tool choice, and the answer's format as `response_format` (Chat
//! Completions) or `text.format` (Responses); and the tool calls of an answer read back, whole or
//! gathered from a stream's fragments.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use serde::Deserialize;

use crate::domain::conversation::{
    Arguments, Conversation, Image, ImageDetail, OutputFormat, Part, ToolCall, ToolChoice,
    answered_call,
};
use crate::provider::ProviderError;

/// The conversation's messages as Chat Completions takes them.
pub(super) fn messages(conversation: &Conversation) -> Result<Vec<Value>, ProviderError> {
    // The latest call of each tool: a result that names only its tool answers that call.
    let mut latest: HashMap<&str, &str> = HashMap::new();
    let mut written = Vec::with_capacity(conversation.messages.len());
    for message in &conversation.messages {
        let text = message.joined_text();
        let calls: Vec<Value> = message
            .tool_calls()
            .map(|call| {
                latest.insert(&call.name, &call.id);
                json!({ "id": call.id, "type": "function",
                        "function": { "name": call.name, "arguments": call.arguments.as_str() } })
            })
            .collect();
        let mut out = json!({ "role": message.role.as_str(), "content": text });
        if message.images().next().is_some() {
            out["content"] = content_parts(&message.parts)?;
        }
        if !calls.is_empty() {
            if text.is_empty() {
                out["content"] = Value::Null;
            }
            out["tool_calls"] = json!(calls);
        }
        for part in &message.parts {
            if let Part::ToolResult(result) = part {
                let id = result.call_id.as_deref().or_else(|| {
                    let name = result.name.as_deref()?;
                    latest.get(name).copied()
                });
                out["tool_call_id"] = json!(id);
            }
        }
        written.push(out);
    }
    Ok(written)
}

/// A message's text and images as Chat Completions content parts, in order.
pub(super) fn content_parts(parts: &[Part]) -> Result<Value, ProviderError> {
    let mut written = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            Part::Text { text } => written.push(json!({ "type": "text", "text": text })),
            Part::Image(image) => written.push(image_part(image)?),
            Part::ToolCall(_) | Part::ToolResult(_) | Part::Thinking(_) | Part::Anthropic(_) => {}
        }
    }
    Ok(Value::Array(written))
}

/// An image as a content part: its bytes as a `data:` URL, moved into the part rather than
/// copied (it is the image's megabytes), and its `detail`.
fn image_part(image: &Image) -> Result<Value, ProviderError> {
    let media_type = image.kept().map_or("", |kept| kept.media_type.as_str());
    let (_, url) = super::image_text(image, &format!("data:{media_type};base64,"))?;
    let mut image_url = Map::new();
    image_url.insert("url".into(), Value::String(url));
    if let Some(detail) = image.detail {
        // Chat Completions knows no `original`: the closest is the finest look.
        let detail = match detail {
            ImageDetail::Original => ImageDetail::High,
            other => other,
        };
        image_url.insert("detail".into(), json!(detail.as_str()));
    }
    let mut part = Map::new();
    part.insert("type".into(), json!("image_url"));
    part.insert("image_url".into(), Value::Object(image_url));
    Ok(Value::Object(part))
}

/// Whether the conversation needs Chat Completions: it offers tools, or holds tool calls, results
/// or images (which the Responses API's input takes in other forms).
pub(super) fn has_tools(conversation: &Conversation) -> bool {
    !conversation.tools.is_empty()
        || conversation
            .messages
            .iter()
            .flat_map(|message| &message.parts)
            .any(|part| !matches!(part, Part::Text { .. } | Part::Thinking(_)))
}

/// Adds the tools offered, the tool choice and whether calls may come in parallel to a Chat
/// Completions body.
pub(super) fn add_tools(body: &mut Value, conversation: &Conversation) {
    if conversation.tools.is_empty() {
        return;
    }
    let tools: Vec<Value> = conversation
        .tools
        .iter()
        .map(|tool| {
            let mut written = super::function_tool(tool);
            if tool.strict {
                written["function"]["strict"] = json!(true);
            }
            written
        })
        .collect();
    body["tools"] = json!(tools);
    body["tool_choice"] = match &conversation.tool_choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool(name) => json!({ "type": "function", "function": { "name": name } }),
    };
    if !conversation.parallel_tool_calls {
        body["parallel_tool_calls"] = json!(false);
    }
}

/// A tool call of a Chat Completion, whole, or a fragment of one in a streamed chunk (the first
/// with its id and name, then pieces of its arguments, all under its `index`).
#[derive(Deserialize)]
pub(super) struct CallFragment {
    /// Its place among the answer's calls: in every stream fragment; a whole answer's calls may
    /// leave it out, their order saying it.
    index: Option<usize>,
    id: Option<String>,
    function: Option<FunctionFragment>,
}

#[derive(Deserialize)]
struct FunctionFragment {
    name: Option<String>,
    arguments: Option<String>,
}

/// The tool calls of an answer, gathered by index from whole calls or a stream's fragments.
#[derive(Default)]
pub(super) struct CallsGathered {
    calls: Vec<(Option<String>, String, String)>,
}

impl CallsGathered {
    pub(super) fn add(&mut self, fragments: Vec<CallFragment>) {
        for (position, fragment) in fragments.into_iter().enumerate() {
            let index = fragment.index.unwrap_or(position);
            while self.calls.len() <= index {
                self.calls.push((None, String::new(), String::new()));
            }
            let (id, name, arguments) = &mut self.calls[index];
            if let Some(given) = fragment.id.filter(|i| !i.is_empty()) {
                *id = Some(given);
            }
            if let Some(function) = fragment.function {
                if let Some(given) = function.name {
                    name.push_str(&given);
                }
                if let Some(piece) = function.arguments {
                    arguments.push_str(&piece);
                }
            }
        }
    }

    /// The calls, each checked to be named with arguments that are one JSON object.
    pub(super) fn into_calls(self) -> Result<Vec<ToolCall>, ProviderError> {
        self.calls
            .into_iter()
            .map(|(id, name, arguments)| {
                let arguments = Arguments::parse(&arguments).map_err(|e| {
                    super::http::unreadable(&format!("tool call arguments of {name}: {e}"))
                })?;
                if name.is_empty() {
                    return Err(super::http::unreadable(&"a tool call without a name"));
                }
                Ok(answered_call(id, name, arguments))
            })
            .collect()
    }
}

/// The answer's format as Chat Completions' `response_format`, if it has one.
pub(super) fn response_format(output: &OutputFormat) -> Option<Value> {
    match output {
        OutputFormat::Text => None,
        OutputFormat::JsonObject => Some(json!({ "type": "json_object" })),
        OutputFormat::JsonSchema(format) => {
            let mut schema = json!({ "name": format.name, "schema": format.schema,
                                     "strict": format.strict });
            if let Some(description) = &format.description {
                schema["description"] = json!(description);
            }
            Some(json!({ "type": "json_schema", "json_schema": schema }))
        }
    }
}

/// The answer's format as the Responses API's `text.format` (flat, where Chat Completions nests
/// the schema), if it has one.
pub(super) fn text_format(output: &OutputFormat) -> Option<Value> {
    let mut format = response_format(output)?;
    if let Some(Value::Object(schema)) = format.get_mut("json_schema").map(Value::take) {
        let mut flat = serde_json::Map::from_iter([("type".to_owned(), json!("json_schema"))]);
        flat.extend(schema);
        format = Value::Object(flat);
    }
    Some(format)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::conversation::{
        Arguments, JsonSchemaFormat, Message, Role, ToolCall, ToolResult,
    };

    #[test]
    fn tool_calls_keep_their_text_and_a_result_named_by_its_tool_finds_its_call() {
        let arguments = r#"{"city": "Paris", "units": "c"}"#;
        let conversation = Conversation {
            messages: vec![
                Message::text(Role::User, "Weather in Paris?"),
                Message {
                    role: Role::Assistant,
                    parts: vec![Part::ToolCall(ToolCall {
                        id: "call_1".into(),
                        name: "get_weather".into(),
                        arguments: Arguments::parse(arguments).expect("JSON"),
                    })],
                },
                Message {
                    role: Role::Tool,
                    parts: vec![Part::ToolResult(ToolResult {
                        call_id: None,
                        name: Some("get_weather".into()),
                        content: "18°C".into(),
                    })],
                },
            ],
            ..Conversation::default()
        };
        assert!(has_tools(&conversation));
        assert_eq!(
            messages(&conversation).expect("no images to load")[1..],
            [
                json!({ "role": "assistant", "content": null, "tool_calls": [
                    { "id": "call_1", "type": "function",
                      "function": { "name": "get_weather", "arguments": arguments } }] }),
                json!({ "role": "tool", "content": "18°C", "tool_call_id": "call_1" }),
            ]
        );
    }

    #[test]
    fn a_schema_nests_in_chat_completions_and_is_flat_in_responses() {
        let output = OutputFormat::JsonSchema(JsonSchemaFormat {
            name: "product".into(),
            description: None,
            schema: json!({ "type": "object" }),
            strict: true,
        });
        assert_eq!(
            response_format(&output),
            Some(json!({ "type": "json_schema", "json_schema": {
                "name": "product", "schema": { "type": "object" }, "strict": true } }))
        );
        assert_eq!(
            text_format(&output),
            Some(json!({ "type": "json_schema", "name": "product",
                         "schema": { "type": "object" }, "strict": true }))
        );
        assert_eq!(
            text_format(&OutputFormat::JsonObject),
            Some(json!({ "type": "json_object" }))
        );
    }
}
