//! A Messages API request read into Tollgate's conversation model, with what the model has no
//! place for kept beside it ([`AnthropicExtras`]) for an Anthropic upstream:
//!
//! - `system` (a text or text blocks) is the first message, a block a part;
//! - a user message's `tool_result` blocks are each a tool's message, in order with the user's
//!   own text and images (a result's images follow it as the user's);
//! - an assistant's `thinking` and `redacted_thinking` are reasoning parts, kept with their
//!   signature or data verbatim, `tool_use` its calls (arguments written once from `input`);
//! - a tool of a kind other than `custom` (Anthropic's server tools) is kept whole for Anthropic;
//! - `thinking` and `output_config.effort` are the request's reasoning (`adaptive` a preference,
//!   dropped on a model that cannot reason), `output_config.format` its answer's schema;
//! - every top-level field the model does not hold is kept as sent.
//!
//! Each refusal names the field as the client wrote it.

use serde::Deserialize;
use serde_json::{Map, Value};
use tollgate_core::domain::anthropic::AnthropicExtras;
use tollgate_core::domain::conversation::{
    AnthropicBlock, Arguments, Conversation, Image, ImageSource, JsonSchemaFormat, Message,
    OutputFormat, Part, Role, Thinking, Tool, ToolCall, ToolChoice, ToolResult,
};
use tollgate_core::domain::{ChatRequest, Effort, GenerationOptions, Reasoning, ValidationError};
use tollgate_core::provider::anthropic_wire::{self as wire, Block, Content};

use crate::intake::images::ImagePlaces;

/// `POST /v1/messages` (and `count_tokens`, which has no `max_tokens`).
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = AnthropicMessagesBody)]
pub struct MessagesBody {
    model: String,
    /// Required by `/v1/messages`.
    max_tokens: Option<u32>,
    #[schema(value_type = Vec<Object>)]
    messages: Vec<wire::Message>,
    /// A text, or text blocks.
    #[schema(value_type = Option<Object>)]
    system: Option<Content>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    tools: Vec<Map<String, Value>>,
    #[schema(value_type = Option<Object>)]
    tool_choice: Option<WireToolChoice>,
    stop_sequences: Option<Vec<String>>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    #[serde(default)]
    stream: bool,
    /// Everything else (`thinking`, `output_config`, `top_k`, `metadata`, `cache_control`,
    /// `context_management`, `service_tier`, …): acted on where the model can, and kept as sent
    /// for an Anthropic upstream.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    rest: Map<String, Value>,
}

/// `{"type": "auto" | "any" | "tool" | "none", "name"?, "disable_parallel_tool_use"?}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireToolChoice {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    #[serde(default)]
    disable_parallel_tool_use: bool,
}

/// A request read: the chat, where its images were given, whether it streams.
pub struct Read {
    pub request: ChatRequest,
    pub places: ImagePlaces,
    pub stream: bool,
}

impl MessagesBody {
    /// The request as a chat; `beta` is its `anthropic-beta` header. `max_tokens` is required
    /// unless `counting` (`count_tokens` takes none).
    pub fn read(self, beta: Option<String>, counting: bool) -> Result<Read, ValidationError> {
        if self.max_tokens.is_none() && !counting {
            return Err(ValidationError::new("max_tokens", "is required"));
        }
        let mut places = ImagePlaces::default();
        let mut reader = Reader::default();
        if let Some(system) = self.system {
            reader.system(system)?;
        }
        for (i, message) in self.messages.into_iter().enumerate() {
            reader.message(message, i, &mut places)?;
        }
        let (tools, server_tools) = reader.tools(self.tools)?;
        let mut extras = std::mem::take(&mut reader.extras);
        extras.server_tools = server_tools;
        extras.beta = beta;
        let reasoning = reasoning(&self.rest)?;
        let output = output(&self.rest)?;
        extras.fields = self.rest;
        let mut conversation = Conversation {
            messages: reader.messages,
            tools,
            output,
            ..Conversation::default()
        };
        if let Some(choice) = self.tool_choice {
            conversation.parallel_tool_calls = !choice.disable_parallel_tool_use;
            conversation.tool_choice = choice.into_choice()?;
        }
        let options = GenerationOptions {
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_tokens,
            stop: self.stop_sequences,
            reasoning,
            ..GenerationOptions::default()
        };
        let origins = reader.origins;
        let mut request = ChatRequest::new(&self.model, conversation, Some(options))
            .map_err(|e| anthropic_field(e, &origins))?;
        request.anthropic = (!extras.is_empty()).then(|| Box::new(extras));
        Ok(Read {
            request,
            places,
            stream: self.stream,
        })
    }
}

/// A field of the chat as the client named it: the options are top-level fields, the answer's
/// schema is `output_config.format`'s, a tool's schema its `input_schema`, and a message is
/// named by the message (or `system`) it was read from, whose blocks it may have split.
fn anthropic_field(mut error: ValidationError, origins: &[String]) -> ValidationError {
    let renamed = [
        ("options.stop", "stop_sequences"),
        ("options.", ""),
        ("output.", "output_config.format."),
    ];
    if let Some((rest, theirs)) = renamed
        .iter()
        .find_map(|(ours, theirs)| Some((error.field.strip_prefix(ours)?, theirs)))
    {
        error.field = format!("{theirs}{rest}");
    } else if let Some(schema) = error.field.strip_suffix(".parameters") {
        error.field = format!("{schema}.input_schema");
    } else if let Some(origin) = error
        .field
        .strip_prefix("messages[")
        .and_then(|rest| rest.split(']').next())
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| origins.get(m))
    {
        error.field = origin.clone();
    }
    error
}

/// The conversation being read, and the extras of its blocks.
#[derive(Default)]
struct Reader {
    messages: Vec<Message>,
    extras: AnthropicExtras,
    /// Whether the last message takes the next block of the message being read (a block after a
    /// tool result, or the first of a message, starts a new one).
    open: bool,
    /// Where each message was read from (`system`, `messages[2]`), for refusals.
    origins: Vec<String>,
    /// The message being read.
    at: String,
}

impl Reader {
    /// `system`: the first message, each block a part.
    fn system(&mut self, system: Content) -> Result<(), ValidationError> {
        let mut parts = Vec::new();
        for (j, block) in system.into_blocks().into_iter().enumerate() {
            let Block::Text { text, extra } = block else {
                return Err(ValidationError::new(
                    format!("system[{j}]"),
                    "must be a text block",
                ));
            };
            self.extras
                .keep_block(self.messages.len(), parts.len(), extra);
            parts.push(Part::Text { text });
        }
        self.messages.push(Message {
            role: Role::System,
            parts,
        });
        self.origins.push("system".to_owned());
        Ok(())
    }

    fn message(
        &mut self,
        message: wire::Message,
        i: usize,
        places: &mut ImagePlaces,
    ) -> Result<(), ValidationError> {
        let at = format!("messages[{i}]");
        let role = match message.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => {
                return Err(ValidationError::new(
                    format!("{at}.role"),
                    "must be \"user\" or \"assistant\"",
                ));
            }
        };
        self.open = false;
        self.at.clone_from(&at);
        for (j, block) in message.content.into_blocks().into_iter().enumerate() {
            let at = format!("{at}.content[{j}]");
            match (role, block) {
                (_, Block::Text { text, extra }) => self.push(role, Part::Text { text }, extra),
                (Role::User, Block::Image { source, extra }) => {
                    places.note(at);
                    self.push(role, Part::Image(image(source)), extra);
                }
                (
                    Role::User,
                    Block::ToolResult {
                        tool_use_id,
                        content,
                        extra,
                    },
                ) => self.tool_result(tool_use_id, content, extra, &at, places)?,
                (
                    Role::Assistant,
                    Block::ToolUse {
                        id,
                        name,
                        input,
                        extra,
                    },
                ) => {
                    let Value::Object(input) = input else {
                        return Err(ValidationError::new(
                            format!("{at}.input"),
                            "must be an object",
                        ));
                    };
                    let arguments = Arguments::from_object(&input);
                    let call = Part::ToolCall(ToolCall {
                        id,
                        name,
                        arguments,
                    });
                    self.push(role, call, extra);
                }
                (
                    Role::Assistant,
                    Block::Thinking {
                        thinking,
                        signature,
                        extra,
                    },
                ) => {
                    let signature = (!signature.is_empty()).then_some(signature);
                    let thought = Part::Thinking(Thinking::new(thinking, signature));
                    self.push(role, thought, extra);
                }
                (Role::Assistant, Block::RedactedThinking { data, extra }) => {
                    self.push(role, Part::Thinking(Thinking::redacted(data)), extra);
                }
                (_, Block::Other(other)) => {
                    let block = Value::Object(other.0);
                    self.push(role, Part::Anthropic(AnthropicBlock { block }), Map::new());
                }
                (role, block) => {
                    let role = role.as_str();
                    return Err(ValidationError::new(
                        at,
                        format!(
                            "a message from the {role} cannot hold a {} block",
                            kind(&block)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Adds a part to the message `role` is speaking, or to a new one.
    fn push(&mut self, role: Role, part: Part, extra: Map<String, Value>) {
        match self.messages.last_mut() {
            Some(last) if self.open && last.role == role => last.parts.push(part),
            _ => self.start(role, part),
        }
        self.open = true;
        let m = self.messages.len() - 1;
        let p = self.messages[m].parts.len() - 1;
        self.extras.keep_block(m, p, extra);
    }

    /// A tool result: a tool's message of its text, then its images as the user's.
    fn tool_result(
        &mut self,
        call_id: String,
        content: Option<Content>,
        extra: Map<String, Value>,
        at: &str,
        places: &mut ImagePlaces,
    ) -> Result<(), ValidationError> {
        let mut text = String::new();
        let mut images = Vec::new();
        let blocks = content.map(Content::into_blocks).unwrap_or_default();
        for (k, block) in blocks.into_iter().enumerate() {
            match block {
                Block::Text { text: more, .. } => text.push_str(&more),
                Block::Image { source, .. } => {
                    places.note(format!("{at}.content[{k}]"));
                    images.push(Part::Image(image(source)));
                }
                other => {
                    return Err(ValidationError::new(
                        format!("{at}.content[{k}]"),
                        format!(
                            "a tool result holds text and images, not a {} block",
                            kind(&other)
                        ),
                    ));
                }
            }
        }
        let result = ToolResult {
            call_id: Some(call_id),
            name: None,
            content: text,
        };
        self.start(Role::Tool, Part::ToolResult(result));
        let m = self.messages.len() - 1;
        self.extras.keep_block(m, 0, extra);
        let mut images = images.into_iter();
        self.open = false;
        if let Some(first) = images.next() {
            self.start(Role::User, first);
            if let Some(last) = self.messages.last_mut() {
                last.parts.extend(images);
            }
            self.open = true;
        }
        Ok(())
    }

    /// A new message of one part, read from the message being read.
    fn start(&mut self, role: Role, part: Part) {
        self.messages.push(Message {
            role,
            parts: vec![part],
        });
        self.origins.push(self.at.clone());
    }
}

/// A block's `type`, for a refusal.
fn kind(block: &Block) -> &str {
    match block {
        Block::Other(other) => other.kind(),
        Block::Text { .. } => "text",
        Block::Image { .. } => "image",
        Block::ToolUse { .. } => "tool_use",
        Block::ToolResult { .. } => "tool_result",
        Block::Thinking { .. } => "thinking",
        Block::RedactedThinking { .. } => "redacted_thinking",
    }
}

/// An image block's image, read (or fetched) by intake.
fn image(source: wire::ImageSource) -> Image {
    let url = match source {
        wire::ImageSource::Base64 { media_type, data } => {
            format!("data:{media_type};base64,{data}")
        }
        wire::ImageSource::Url { url } => url,
    };
    Image {
        source: ImageSource::Url(url),
        detail: None,
    }
}

impl Reader {
    /// The tools offered: a custom tool (`type` left out or `custom`) as the model's, the fields
    /// beside its own kept; any other kind kept whole for Anthropic.
    fn tools(
        &mut self,
        given: Vec<Map<String, Value>>,
    ) -> Result<(Vec<Tool>, Vec<Value>), ValidationError> {
        let mut tools = Vec::new();
        let mut server_tools = Vec::new();
        for (k, mut tool) in given.into_iter().enumerate() {
            let custom = match tool.get("type") {
                None | Some(Value::Null) => true,
                Some(kind) => kind == "custom",
            };
            if !custom {
                server_tools.push(Value::Object(tool));
                continue;
            }
            let field = |name: &str| format!("tools[{k}].{name}");
            tool.remove("type");
            let name = match tool.remove("name") {
                Some(Value::String(name)) => name,
                _ => {
                    return Err(ValidationError::new(
                        field("name"),
                        "is required (a string)",
                    ));
                }
            };
            let parameters = tool
                .remove("input_schema")
                .ok_or_else(|| ValidationError::new(field("input_schema"), "is required"))?;
            let description = match tool.remove("description") {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) => Some(text),
                Some(_) => {
                    return Err(ValidationError::new(
                        field("description"),
                        "must be a string",
                    ));
                }
            };
            // Everything else (`strict`, `cache_control`, `defer_loading`, …) is Anthropic's
            // alone: kept for it, and not asked of another upstream (OpenAI's strict mode
            // refuses schemas Anthropic's takes).
            self.extras.keep_tool(tools.len(), tool);
            tools.push(Tool {
                name,
                description,
                parameters,
                strict: false,
            });
        }
        Ok((tools, server_tools))
    }
}

impl WireToolChoice {
    fn into_choice(self) -> Result<ToolChoice, ValidationError> {
        match (self.kind.as_str(), self.name) {
            ("auto", _) => Ok(ToolChoice::Auto),
            ("any", _) => Ok(ToolChoice::Required),
            ("none", _) => Ok(ToolChoice::None),
            ("tool", Some(name)) => Ok(ToolChoice::Tool(name)),
            ("tool", None) => Err(ValidationError::new("tool_choice.name", "is required")),
            _ => Err(ValidationError::new(
                "tool_choice.type",
                "must be \"auto\", \"any\", \"tool\" or \"none\"",
            )),
        }
    }
}

/// The reasoning asked: `thinking` (`enabled`, `adaptive` or `disabled`) and
/// `output_config.effort`, the level when both are given.
fn reasoning(rest: &Map<String, Value>) -> Result<Option<Reasoning>, ValidationError> {
    let effort = match rest.get("output_config").and_then(|c| c.get("effort")) {
        None | Some(Value::Null) => None,
        Some(Value::String(effort)) => Some(match effort.as_str() {
            "low" => Effort::Low,
            "medium" => Effort::Medium,
            "high" => Effort::High,
            "xhigh" | "max" => Effort::Max,
            _ => return Err(effort_refused()),
        }),
        Some(_) => return Err(effort_refused()),
    };
    let on = |effort: Option<Effort>| effort.map_or(Reasoning::Switch(true), Reasoning::Level);
    match rest.get("thinking") {
        None | Some(Value::Null) => Ok(effort.map(Reasoning::Level)),
        Some(thinking) => match thinking.get("type").and_then(Value::as_str) {
            Some("enabled" | "adaptive") => Ok(Some(on(effort))),
            Some("disabled") => Ok(Some(Reasoning::OFF)),
            _ => Err(ValidationError::new(
                "thinking.type",
                "must be \"enabled\", \"adaptive\" or \"disabled\"",
            )),
        },
    }
}

fn effort_refused() -> ValidationError {
    ValidationError::new(
        "output_config.effort",
        "must be \"low\", \"medium\", \"high\", \"xhigh\" or \"max\"",
    )
}

/// The answer's format: `output_config.format`'s JSON schema, or text.
fn output(rest: &Map<String, Value>) -> Result<OutputFormat, ValidationError> {
    let Some(format) = rest.get("output_config").and_then(|c| c.get("format")) else {
        return Ok(OutputFormat::Text);
    };
    if format.is_null() {
        return Ok(OutputFormat::Text);
    }
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return Err(ValidationError::new(
            "output_config.format.type",
            "must be \"json_schema\"",
        ));
    }
    let schema = format
        .get("schema")
        .cloned()
        .ok_or_else(|| ValidationError::new("output_config.format.schema", "is required"))?;
    Ok(OutputFormat::JsonSchema(JsonSchemaFormat {
        name: "output".to_owned(),
        description: None,
        schema,
        strict: true,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tollgate_core::domain::conversation::Part;

    use super::*;

    fn read(body: Value) -> Result<Read, ValidationError> {
        let body: MessagesBody = serde_json::from_value(body).expect("a body");
        body.read(Some("context-management-2025-06-27".into()), false)
    }

    #[test]
    fn a_claude_code_body_reads_into_the_conversation_with_its_extras_kept() {
        let read = read(json!({
            "model": "claude-sonnet-4-6", "max_tokens": 32000, "stream": true,
            "system": [{ "type": "text", "text": "You are Claude Code." },
                       { "type": "text", "text": "Be terse.", "cache_control": { "type": "ephemeral" } }],
            "messages": [
                { "role": "user", "content": [
                    { "type": "document", "source": { "type": "text", "media_type": "text/plain",
                                                      "data": "spec" } },
                    { "type": "text", "text": "Why does the test fail?" }] },
                { "role": "assistant", "content": [
                    { "type": "thinking", "thinking": "Look first.", "signature": "sig" },
                    { "type": "tool_use", "id": "toolu_1", "name": "Grep", "input": { "pattern": "x" } }] },
                { "role": "user", "content": [
                    { "type": "tool_result", "tool_use_id": "toolu_1", "is_error": true,
                      "content": [{ "type": "text", "text": "no match" }] },
                    { "type": "text", "text": "Go on.", "cache_control": { "type": "ephemeral" } }] }],
            "tools": [{ "name": "Grep", "input_schema": { "type": "object" }, "strict": true,
                        "defer_loading": true },
                      { "type": "web_search_20250305", "name": "web_search" }],
            "thinking": { "type": "adaptive" }, "output_config": { "effort": "high" },
            "context_management": { "edits": [] },
        }))
        .expect("read");
        assert!(read.stream);
        let chat = &read.request;
        let roles: Vec<Role> = chat.conversation.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::User
            ],
            "a tool's result and the user's words that follow are two messages"
        );
        assert_eq!(chat.options.reasoning, Some(Reasoning::Level(Effort::High)));
        let tool = &chat.conversation.tools[0];
        assert!(!tool.strict, "`strict` is Anthropic's alone");
        let extras = chat.anthropic.as_deref().expect("extras");
        assert_eq!(
            extras.beta.as_deref(),
            Some("context-management-2025-06-27")
        );
        assert_eq!(
            extras.block(0, 1).map(|e| e["cache_control"].clone()),
            Some(json!({ "type": "ephemeral" }))
        );
        assert_eq!(
            extras.block(3, 0).map(|e| e["is_error"].clone()),
            Some(json!(true))
        );
        assert_eq!(
            extras.block(4, 0).map(|e| e["cache_control"].clone()),
            Some(json!({ "type": "ephemeral" }))
        );
        assert_eq!(
            extras.tool(0).map(|e| e["strict"].clone()),
            Some(json!(true))
        );
        assert_eq!(extras.server_tools.len(), 1);
        for field in ["thinking", "output_config", "context_management"] {
            assert!(extras.fields.contains_key(field), "{field} kept as sent");
        }
        assert!(!extras.fields.contains_key("stream") && !extras.fields.contains_key("model"));
        let Part::Thinking(thinking) = &chat.conversation.messages[2].parts[0] else {
            panic!("reasoning first");
        };
        let Part::Anthropic(document) = &chat.conversation.messages[1].parts[0] else {
            panic!("the document kept whole");
        };
        assert_eq!(document.block["type"], "document");
        assert_eq!(thinking.signature.as_deref(), Some("sig"));
    }

    #[test]
    fn a_refusal_names_the_field_as_the_client_wrote_it() {
        let refused = |body: Value| match read(body) {
            Ok(_) => panic!("taken"),
            Err(error) => error.field,
        };
        let message = |content: Value| {
            json!({ "model": "m", "max_tokens": 10,
            "messages": [{ "role": "user", "content": "Hi" },
                         { "role": "assistant", "content": "Hello" }, content] })
        };
        assert_eq!(
            refused(message(json!({ "role": "user", "content": [
                { "type": "tool_result", "tool_use_id": "toolu_none", "content": "?" }] }))),
            "messages[2]",
            "a result answering no call is named by the message it was in"
        );
        assert_eq!(
            refused(json!({ "model": "m", "messages": [{ "role": "user", "content": "Hi" }] })),
            "max_tokens"
        );
        assert_eq!(
            refused(json!({ "model": "m", "max_tokens": 10, "temperature": 7,
                            "messages": [{ "role": "user", "content": "Hi" }] })),
            "temperature"
        );
        assert_eq!(
            refused(message(json!({ "role": "user", "content": [
                { "type": "tool_use", "id": "t", "name": "x", "input": {} }] }))),
            "messages[2].content[0]"
        );
        assert_eq!(
            refused(
                json!({ "model": "m", "max_tokens": 10, "tool_choice": { "type": "every" },
                            "messages": [{ "role": "user", "content": "Hi" }] })
            ),
            "tool_choice.type"
        );
    }
}
