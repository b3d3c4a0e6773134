//! A conversation in OpenAI's two request dialects, read into Tollgate's conversation model:
//! Chat Completions messages (an assistant's `tool_calls` with arguments as a JSON string, `role:
//! "tool"` results joined by `tool_call_id`, an assistant's `reasoning_content`), Responses input
//! items (`function_call` and `function_call_output` joined by `call_id`, `reasoning` items kept
//! with their encrypted content), text and image parts (`image_url`, `input_image`)
//! in order, each image's place noted for intake to name it, the tools offered (nested under `function` in Chat
//! Completions, flat in Responses), the tool choice, and the answer's format (`response_format`,
//! `text.format`). Each refusal names the field as the client wrote it.

use serde::Deserialize;
use serde_json::Value;
use tollgate_core::domain::ValidationError;
use tollgate_core::domain::conversation::{
    Arguments, Image, ImageDetail, ImageSource, JsonSchemaFormat, Message, OutputFormat, Part,
    Role, Thinking, Tool, ToolCall, ToolChoice, ToolResult,
};

use crate::intake::images::ImagePlaces;

/// A Chat Completions message (or a Responses message item): text content or text parts, an
/// assistant's tool calls, a tool's result.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAiMessage {
    role: String,
    /// Text or text parts; `null` on an assistant message that only calls tools.
    #[serde(default)]
    content: Option<Content>,
    /// Responses input items may say `"type": "message"`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// A participant's name: Tollgate's providers take none, and it changes nothing asked.
    #[serde(rename = "name")]
    _name: Option<String>,
    /// An assistant's calls (Chat Completions).
    tool_calls: Option<Vec<OpenAiToolCall>>,
    /// The call a `tool` message answers.
    tool_call_id: Option<String>,
    /// An assistant's reasoning sent back, as OpenAI-compatible servers write it
    /// (`reasoning_content`, or `reasoning` in Ollama's and OpenRouter's layers).
    reasoning_content: Option<String>,
    reasoning: Option<String>,
    /// What an answer echoed back into the history carries besides: kept out of the request.
    #[serde(rename = "refusal")]
    _refusal: Option<Value>,
    #[serde(rename = "annotations")]
    _annotations: Option<Value>,
    #[serde(rename = "audio")]
    _audio: Option<Value>,
    #[serde(rename = "function_call")]
    _function_call: Option<Value>,
    /// A Responses output item's id and status, echoed back.
    #[serde(rename = "id")]
    _id: Option<String>,
    #[serde(rename = "status")]
    _status: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OpenAiContent)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OpenAiContentPart)]
pub struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    /// An image: Chat Completions' `{"url", "detail"}`, or the Responses API's URL itself (a
    /// `data:` URL, or an `http(s)` URL Tollgate fetches).
    image_url: Option<ImageUrl>,
    /// The Responses API's `detail`, beside its `image_url`.
    detail: Option<ImageDetail>,
    /// The Responses API's image by an uploaded file's id: not taken.
    file_id: Option<String>,
}

/// Where an image part's image is.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OpenAiImageUrl)]
#[serde(untagged)]
pub enum ImageUrl {
    Url(String),
    Object {
        url: String,
        detail: Option<ImageDetail>,
    },
}

/// An assistant's tool call in Chat Completions' history.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAiToolCall {
    id: String,
    /// `function`.
    #[serde(rename = "type")]
    kind: Option<String>,
    function: OpenAiFunctionCall,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAiFunctionCall {
    name: String,
    /// The arguments as a JSON object's text.
    arguments: String,
}

/// A Responses input item: a message, a function call echoed back, or a function's output.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ResponsesItem {
    FunctionCall(FunctionCallItem),
    FunctionCallOutput(FunctionCallOutputItem),
    Reasoning(ReasoningItem),
    Message(Box<OpenAiMessage>),
}

/// `{"type": "reasoning", "id", "summary": [{"type": "summary_text", "text"}],
/// "encrypted_content"?}`: a reasoning item sent back, kept with its encrypted content verbatim.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasoningItem {
    #[serde(rename = "type")]
    _kind: ReasoningKind,
    #[serde(default)]
    summary: Vec<SummaryText>,
    encrypted_content: Option<String>,
    #[serde(rename = "id")]
    _id: Option<String>,
    #[serde(rename = "status")]
    _status: Option<String>,
    /// The reasoning's own text, which some servers give besides the summary.
    #[serde(rename = "content")]
    _content: Option<Value>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum ReasoningKind {
    Reasoning,
}

/// A piece of a reasoning item's summary.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SummaryText {
    text: String,
}

/// `{"type": "function_call", "call_id", "name", "arguments"}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionCallItem {
    #[serde(rename = "type")]
    _kind: FunctionCallKind,
    call_id: String,
    name: String,
    arguments: String,
    #[serde(rename = "id")]
    _id: Option<String>,
    #[serde(rename = "status")]
    _status: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum FunctionCallKind {
    FunctionCall,
}

/// `{"type": "function_call_output", "call_id", "output"}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionCallOutputItem {
    #[serde(rename = "type")]
    _kind: FunctionCallOutputKind,
    call_id: String,
    output: Content,
    #[serde(rename = "id")]
    _id: Option<String>,
    #[serde(rename = "status")]
    _status: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum FunctionCallOutputKind {
    FunctionCallOutput,
}

/// A tool offered in Chat Completions: `{"type": "function", "function": {…}}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatTool {
    #[serde(rename = "type")]
    kind: String,
    function: FunctionTool,
}

/// A function tool: nested in Chat Completions, flat (with `type`) in Responses.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionTool {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: String,
    description: Option<String>,
    /// A JSON Schema for the arguments; none means no arguments.
    parameters: Option<Value>,
    strict: Option<bool>,
}

/// `tool_choice`: `"auto"`, `"none"`, `"required"`, or a named function (`{"type": "function",
/// "function": {"name"}}` in Chat Completions, `{"type": "function", "name"}` in Responses).
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OpenAiToolChoice)]
#[serde(untagged)]
pub enum ToolChoiceBody {
    Mode(String),
    Function {
        #[serde(rename = "type")]
        kind: String,
        function: Option<NamedFunction>,
        name: Option<String>,
    },
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct NamedFunction {
    name: String,
}

/// `response_format` (Chat Completions) or `text.format` (Responses, where the schema's fields
/// sit beside `type`): `text`, `json_object`, or `json_schema`.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OpenAiResponseFormat)]
#[serde(deny_unknown_fields)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    /// Chat Completions' schema.
    json_schema: Option<SchemaFormat>,
    /// Responses' schema, flat.
    name: Option<String>,
    description: Option<String>,
    schema: Option<Value>,
    strict: Option<bool>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaFormat {
    name: String,
    description: Option<String>,
    schema: Option<Value>,
    strict: Option<bool>,
}

/// Chat Completions' messages as the conversation's.
pub fn chat_messages(
    messages: Vec<OpenAiMessage>,
    places: &mut ImagePlaces,
) -> Result<Vec<Message>, ValidationError> {
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| m.into_message(&format!("messages[{i}]"), places))
        .collect()
}

/// Responses input items as the conversation's messages: a function call joins the assistant's
/// turn before it (parallel calls are one turn), its output is a tool's message.
pub fn response_items(
    items: Vec<ResponsesItem>,
    messages: &mut Vec<Message>,
    places: &mut ImagePlaces,
) -> Result<(), ValidationError> {
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("input[{i}]");
        match item {
            ResponsesItem::Message(message) => {
                let message = message.into_message(&at, places)?;
                match messages.last_mut() {
                    // A reasoning item and the message after it are one turn.
                    Some(turn) if thought_only(turn) && message.role == Role::Assistant => {
                        turn.parts.extend(message.parts);
                    }
                    _ => messages.push(message),
                }
            }
            ResponsesItem::Reasoning(reasoning) => {
                let text = reasoning.summary.into_iter().map(|s| s.text).collect();
                let thinking = Part::Thinking(Thinking::new(text, reasoning.encrypted_content));
                messages.push(Message {
                    role: Role::Assistant,
                    parts: vec![thinking],
                });
            }
            ResponsesItem::FunctionCall(call) => {
                let call = tool_call(call.call_id, call.name, &call.arguments, &at)?;
                match messages.last_mut() {
                    Some(turn) if turn.role == Role::Assistant => turn.parts.push(call),
                    _ => messages.push(Message {
                        role: Role::Assistant,
                        parts: vec![call],
                    }),
                }
            }
            ResponsesItem::FunctionCallOutput(output) => {
                let content = output.output.into_text(&format!("{at}.output"))?;
                messages.push(tool_result(output.call_id, content));
            }
        }
    }
    Ok(())
}

/// Whether a message holds only reasoning (a reasoning item, waiting for its turn's message).
fn thought_only(message: &Message) -> bool {
    message.role == Role::Assistant
        && message
            .parts
            .iter()
            .all(|part| matches!(part, Part::Thinking(_)))
}

/// Chat Completions' tools.
pub fn chat_tools(tools: Vec<ChatTool>) -> Result<Vec<Tool>, ValidationError> {
    function_tools(
        tools
            .into_iter()
            .map(|t| (t.kind == "function", t.function)),
    )
}

/// Responses' flat function tools.
pub fn response_tools(tools: Vec<FunctionTool>) -> Result<Vec<Tool>, ValidationError> {
    function_tools(
        tools
            .into_iter()
            .map(|t| (t.kind.as_deref() == Some("function"), t)),
    )
}

/// Tools given with whether each says it is a function, the only kind taken.
fn function_tools(
    tools: impl Iterator<Item = (bool, FunctionTool)>,
) -> Result<Vec<Tool>, ValidationError> {
    tools
        .enumerate()
        .map(|(i, (function, tool))| {
            if !function {
                return Err(ValidationError::new(
                    format!("tools[{i}].type"),
                    "only function tools are supported",
                ));
            }
            Ok(tool.into_tool())
        })
        .collect()
}

impl FunctionTool {
    fn into_tool(self) -> Tool {
        Tool {
            name: self.name,
            description: self.description,
            parameters: self
                .parameters
                .unwrap_or_else(|| serde_json::json!({ "type": "object", "properties": {} })),
            strict: self.strict.unwrap_or(false),
        }
    }
}

impl ToolChoiceBody {
    /// The choice given, or `auto`.
    pub fn read(given: Option<Self>) -> Result<ToolChoice, ValidationError> {
        given.map_or(Ok(ToolChoice::Auto), Self::into_choice)
    }

    fn into_choice(self) -> Result<ToolChoice, ValidationError> {
        let refused = || {
            ValidationError::new(
                "tool_choice",
                "must be \"auto\", \"none\", \"required\" or a function named by \
                 {\"type\": \"function\", …}",
            )
        };
        match self {
            Self::Mode(mode) => match mode.as_str() {
                "auto" => Ok(ToolChoice::Auto),
                "none" => Ok(ToolChoice::None),
                "required" => Ok(ToolChoice::Required),
                _ => Err(refused()),
            },
            Self::Function {
                kind,
                function,
                name,
            } if kind == "function" => function
                .map(|f| f.name)
                .or(name)
                .map(ToolChoice::Tool)
                .ok_or_else(refused),
            Self::Function { .. } => Err(refused()),
        }
    }
}

impl ResponseFormat {
    /// The answer's format; `field` names where it was given.
    pub fn into_output(self, field: &str) -> Result<OutputFormat, ValidationError> {
        match self.kind.as_str() {
            "text" => Ok(OutputFormat::Text),
            "json_object" => Ok(OutputFormat::JsonObject),
            "json_schema" => {
                let format = match self.json_schema {
                    Some(nested) => nested,
                    None => SchemaFormat {
                        name: self.name.ok_or_else(|| {
                            ValidationError::new(format!("{field}.name"), "is required")
                        })?,
                        description: self.description,
                        schema: self.schema,
                        strict: self.strict,
                    },
                };
                let schema = format.schema.ok_or_else(|| {
                    ValidationError::new(format!("{field}.schema"), "is required")
                })?;
                Ok(OutputFormat::JsonSchema(JsonSchemaFormat {
                    name: format.name,
                    description: format.description,
                    schema,
                    strict: format.strict.unwrap_or(false),
                }))
            }
            _ => Err(ValidationError::new(
                format!("{field}.type"),
                "must be \"text\", \"json_object\" or \"json_schema\"",
            )),
        }
    }
}

impl OpenAiMessage {
    fn into_message(self, at: &str, places: &mut ImagePlaces) -> Result<Message, ValidationError> {
        if self.kind.as_deref().is_some_and(|k| k != "message") {
            return Err(ValidationError::new(
                format!("{at}.type"),
                "must be a message, reasoning, function_call or function_call_output item",
            ));
        }
        let role = Role::from_name(&self.role).ok_or_else(|| {
            ValidationError::new(
                format!("{at}.role"),
                format!(
                    "{:?} is not supported: use system, developer, user, assistant or tool",
                    self.role
                ),
            )
        })?;
        let content_at = format!("{at}.content");
        if role == Role::Tool {
            let text = match self.content {
                Some(content) => content.into_text(&content_at)?,
                None => String::new(),
            };
            let id = self.tool_call_id.ok_or_else(|| {
                ValidationError::new(
                    format!("{at}.tool_call_id"),
                    "is required on a tool message",
                )
            })?;
            return Ok(tool_result(id, text));
        }
        if self.tool_call_id.is_some() {
            return Err(ValidationError::new(
                format!("{at}.tool_call_id"),
                "belongs on a message with role `tool`",
            ));
        }
        let mut parts = Vec::new();
        if let Some(text) = self.reasoning_content.or(self.reasoning) {
            if role != Role::Assistant {
                return Err(ValidationError::new(
                    format!("{at}.reasoning_content"),
                    "only an assistant's reasoning is sent back",
                ));
            }
            parts.push(Part::Thinking(Thinking::new(text, None)));
        }
        let thought = !parts.is_empty();
        if let Some(content) = self.content {
            parts.extend(content.into_parts(&content_at, places)?);
        }
        match &self.tool_calls {
            // An assistant that only calls tools says no text.
            Some(_) => parts.retain(|part| !matches!(part, Part::Text { text } if text.is_empty())),
            None if parts.len() == usize::from(thought) => parts.push(Part::Text {
                text: String::new(),
            }),
            None => {}
        }
        for (j, call) in self.tool_calls.into_iter().flatten().enumerate() {
            let at = format!("{at}.tool_calls[{j}]");
            if call.kind.as_deref().is_some_and(|k| k != "function") {
                return Err(ValidationError::new(
                    format!("{at}.type"),
                    "only function calls are supported",
                ));
            }
            let name = call.function.name;
            parts.push(tool_call(call.id, name, &call.function.arguments, &at)?);
        }
        Ok(Message { role, parts })
    }
}

impl Content {
    /// The text, its parts joined: a tool's result, which takes text only.
    fn into_text(self, at: &str) -> Result<String, ValidationError> {
        match self {
            Self::Text(text) => Ok(text),
            Self::Parts(parts) => {
                let mut text = String::new();
                for (i, part) in parts.into_iter().enumerate() {
                    match (part.kind.as_str(), part.text) {
                        ("text" | "input_text" | "output_text", Some(t)) => text.push_str(&t),
                        _ => {
                            return Err(ValidationError::new(
                                format!("{at}[{i}]"),
                                "only text parts are supported here",
                            ));
                        }
                    }
                }
                Ok(text)
            }
        }
    }

    /// Its text and image parts, in order (a text given as a string is one part).
    fn into_parts(self, at: &str, places: &mut ImagePlaces) -> Result<Vec<Part>, ValidationError> {
        let parts = match self {
            Self::Text(text) => return Ok(vec![Part::Text { text }]),
            Self::Parts(parts) => parts,
        };
        let mut read = Vec::with_capacity(parts.len());
        for (i, part) in parts.into_iter().enumerate() {
            let at = format!("{at}[{i}]");
            read.push(part.into_part(&at)?);
            if matches!(read.last(), Some(Part::Image(_))) {
                places.note(at);
            }
        }
        Ok(read)
    }
}

impl ContentPart {
    fn into_part(self, at: &str) -> Result<Part, ValidationError> {
        match self.kind.as_str() {
            "text" | "input_text" | "output_text" => {
                let text = self.text.ok_or_else(|| {
                    ValidationError::new(format!("{at}.text"), "is required on a text part")
                })?;
                Ok(Part::Text { text })
            }
            "image_url" | "input_image" => {
                if self.file_id.is_some() {
                    return Err(ValidationError::new(
                        format!("{at}.file_id"),
                        "images by file id are not supported: give the image_url",
                    ));
                }
                let (url, detail) = match self.image_url {
                    Some(ImageUrl::Url(url)) => (url, self.detail),
                    Some(ImageUrl::Object { url, detail }) => (url, detail.or(self.detail)),
                    None => {
                        return Err(ValidationError::new(
                            format!("{at}.image_url"),
                            "is required on an image part",
                        ));
                    }
                };
                Ok(Part::Image(Image {
                    source: ImageSource::Url(url),
                    detail,
                }))
            }
            _ => Err(ValidationError::new(
                format!("{at}.type"),
                "only text and image parts are supported",
            )),
        }
    }
}

/// A call in the history, its arguments checked to be one JSON object.
fn tool_call(id: String, name: String, arguments: &str, at: &str) -> Result<Part, ValidationError> {
    let arguments = Arguments::parse(arguments).map_err(|message| {
        let field = if at.starts_with("input") {
            format!("{at}.arguments")
        } else {
            format!("{at}.function.arguments")
        };
        ValidationError::new(field, message)
    })?;
    Ok(Part::ToolCall(ToolCall {
        id,
        name,
        arguments,
    }))
}

fn tool_result(call_id: String, content: String) -> Message {
    Message {
        role: Role::Tool,
        parts: vec![Part::ToolResult(ToolResult {
            call_id: Some(call_id),
            name: None,
            content,
        })],
    }
}
