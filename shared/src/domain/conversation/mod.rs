//! One conversation, whatever dialect it came in: messages made of parts (text, tool calls, tool
//! results), the tools offered, the tool choice and the answer's format. Every surface translates
//! its request into it and every provider client out of it, so no surface and provider pair has
//! code of its own, and it is what a chat job's `jobs.request` holds.
//!
//! - `image` — an image part: bytes Tollgate keeps (by hash, outside the job's row), or a URL a
//!   batch item's worker fetches;
//! - `tools` — a tool offered, the tool choice, and a call's arguments kept as their exact text;
//! - `output` — the answer's format (text, any JSON object, a JSON schema) and the check of an
//!   answer against it;
//! - `check` — the rules a whole conversation keeps (each tool result answers an earlier call, a
//!   named tool choice names a tool offered), checked at intake;
//! - `reply` — the assistant's answer (text, tool calls, refusal, reasoning, why it stopped) as a
//!   chat job's result holds it.
//!
//! A message is stored as the previous release stored one, `{"role", "content": "<text>"}`, when
//! it is a single text: rows written before tools existed read as they are, and a worker of the
//! previous release still runs a plain conversation written by this one during a rolling upgrade.

mod check;
mod image;
mod output;
mod reply;
mod tools;

use serde::{Deserialize, Serialize};

pub use check::{MAX_IMAGES, MAX_TOOLS};
pub use image::{
    DEFAULT_MAX_IMAGE_BYTES, Image, ImageDetail, ImageRefused, ImageSource, KeptImage, MediaType,
};
pub use output::{AnswerSchema, JsonSchemaFormat, OutputFormat, Violation};
pub use reply::{Finish, Reply, answered_call, choices_result, new_call_id, replies_of};
pub use tools::{Arguments, Tool, ToolChoice, tool_name};

/// A conversation as a provider is asked to continue it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(default, skip_serializing_if = "is_auto")]
    pub tool_choice: ToolChoice,
    /// Whether the model may call several tools in one turn.
    #[serde(default = "allowed", skip_serializing_if = "is_allowed")]
    pub parallel_tool_calls: bool,
    #[serde(default, skip_serializing_if = "OutputFormat::is_text")]
    pub output: OutputFormat,
}

impl Default for Conversation {
    fn default() -> Self {
        Self {
            messages: Vec::new(),
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            output: OutputFormat::Text,
        }
    }
}

impl Conversation {
    /// Every image of every message, in order.
    pub fn images(&self) -> impl Iterator<Item = &Image> {
        self.messages.iter().flat_map(Message::images)
    }

    /// The same, to be read or fetched, or their bytes loaded.
    pub fn images_mut(&mut self) -> impl Iterator<Item = &mut Image> {
        self.messages.iter_mut().flat_map(|message| {
            message.parts.iter_mut().filter_map(|part| match part {
                Part::Image(image) => Some(image),
                _ => None,
            })
        })
    }
}

fn is_auto(choice: &ToolChoice) -> bool {
    *choice == ToolChoice::Auto
}

fn allowed() -> bool {
    true
}

fn is_allowed(parallel: &bool) -> bool {
    *parallel
}

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ConversationRole)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result, answering the assistant's call.
    Tool,
}

impl Role {
    /// The speaker a dialect names (`developer` is OpenAI's newer `system`); `None` for a name
    /// no dialect Tollgate speaks has.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "system" | "developer" => Some(Self::System),
            "user" => Some(Self::User),
            "assistant" => Some(Self::Assistant),
            "tool" => Some(Self::Tool),
            _ => None,
        }
    }

    /// Its name in every dialect that has it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }
}

/// One message: its speaker and what it says, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredMessage", into = "StoredMessage")]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

/// A piece of a message. A stored part of a kind this release does not know is refused when
/// read, never dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ConversationPart)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Part {
    Text {
        text: String,
    },
    Image(Image),
    ToolCall(ToolCall),
    ToolResult(ToolResult),
    /// The assistant's reasoning before it answered (in an assistant message only).
    Thinking(Thinking),
    /// A block of Anthropic's that the model has no form for (a document, a server tool's call
    /// or its result, a search result), as the client sent it: sent to an Anthropic upstream as
    /// it came, left out for any other.
    Anthropic(AnthropicBlock),
}

/// An Anthropic block kept whole (see [`Part::Anthropic`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnthropicBlock {
    #[schema(value_type = Object)]
    pub block: serde_json::Value,
}

/// A model's reasoning, kept verbatim so a tool loop can send it back unchanged: its text (or
/// the summary the provider gave of it) and the provider's signature or encrypted form of it,
/// when it gave one. Reasoning the provider redacted (Anthropic's `redacted_thinking`) has no
/// text: its encrypted data is its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Thinking {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
}

impl Thinking {
    /// Reasoning as the model wrote it (or its summary), with the provider's signature.
    pub fn new(text: String, signature: Option<String>) -> Self {
        Self {
            text,
            signature,
            redacted: false,
        }
    }

    /// Reasoning the provider redacted: only its encrypted data.
    pub fn redacted(data: String) -> Self {
        Self {
            text: String::new(),
            signature: Some(data),
            redacted: true,
        }
    }
}

/// The assistant asking for a tool to be run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// The call's id, which its result names (made once by Tollgate when a provider gives none).
    pub id: String,
    pub name: String,
    /// The arguments: one JSON object, as its text.
    #[schema(value_type = String, example = "{\"city\": \"Paris\"}")]
    pub arguments: Arguments,
}

/// A tool's answer to a call, naming the call by its id, by the tool's name, or both (Ollama's
/// own Python package sends only the name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub content: String,
}

impl Message {
    /// A message of one text.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            parts: vec![Part::Text { text: text.into() }],
        }
    }

    /// Its text parts, joined: what a provider without parts is sent, and what token estimates
    /// count.
    pub fn joined_text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|part| match part {
                Part::Text { text } => Some(text.as_str()),
                Part::ToolResult(result) => Some(result.content.as_str()),
                Part::Image(_) | Part::ToolCall(_) | Part::Thinking(_) | Part::Anthropic(_) => None,
            })
            .collect::<Vec<_>>()
            .join("")
    }

    /// The images it shows.
    pub fn images(&self) -> impl Iterator<Item = &Image> {
        self.parts.iter().filter_map(|part| match part {
            Part::Image(image) => Some(image),
            _ => None,
        })
    }

    /// The reasoning it holds (an assistant's, sent back), its texts joined.
    pub fn thinking(&self) -> Option<String> {
        let mut texts = self.parts.iter().filter_map(|part| match part {
            Part::Thinking(thinking) => Some(thinking.text.as_str()),
            _ => None,
        });
        let first = texts.next()?;
        Some(texts.fold(first.to_owned(), |joined, text| joined + text))
    }

    /// The tool calls it makes.
    pub fn tool_calls(&self) -> impl Iterator<Item = &ToolCall> {
        self.parts.iter().filter_map(|part| match part {
            Part::ToolCall(call) => Some(call),
            _ => None,
        })
    }
}

/// A message as `jobs.request` holds it: a single text as the plain string the previous release
/// wrote, anything else as its list of parts. Also the native API's form of a message.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ConversationMessage)]
#[serde(deny_unknown_fields)]
struct StoredMessage {
    role: Role,
    content: StoredContent,
}

/// A message's text, or its parts in order.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ConversationContent)]
#[serde(untagged)]
enum StoredContent {
    Text(String),
    Parts(Vec<Part>),
}

/// `$type`'s OpenAPI schema is `$form`'s, the form it is written in, under `$name`.
macro_rules! schema_as_written {
    ($type:ty, $form:ty, $name:literal) => {
        impl utoipa::PartialSchema for $type {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                <$form as utoipa::PartialSchema>::schema()
            }
        }

        impl utoipa::ToSchema for $type {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed($name)
            }

            fn schemas(
                schemas: &mut Vec<(
                    String,
                    utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
                )>,
            ) {
                <$form as utoipa::ToSchema>::schemas(schemas);
            }
        }
    };
}
pub(crate) use schema_as_written;

// A message is written as its stored form.
schema_as_written!(Message, StoredMessage, "ConversationMessage");

impl From<StoredMessage> for Message {
    fn from(stored: StoredMessage) -> Self {
        let parts = match stored.content {
            StoredContent::Text(text) => vec![Part::Text { text }],
            StoredContent::Parts(parts) => parts,
        };
        Self {
            role: stored.role,
            parts,
        }
    }
}

impl From<Message> for StoredMessage {
    fn from(message: Message) -> Self {
        let content = match <[Part; 1]>::try_from(message.parts) {
            Ok([Part::Text { text }]) => StoredContent::Text(text),
            Ok([part]) => StoredContent::Parts(vec![part]),
            Err(parts) => StoredContent::Parts(parts),
        };
        Self {
            role: message.role,
            content,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn call(id: &str, name: &str, arguments: &str) -> Part {
        Part::ToolCall(ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: Arguments::parse(arguments).expect("JSON arguments"),
        })
    }

    #[test]
    fn a_message_the_previous_release_stored_reads_as_one_text() {
        let stored = json!({ "role": "user", "content": "Hi" });
        let message: Message = serde_json::from_value(stored.clone()).expect("readable");
        assert_eq!(message, Message::text(Role::User, "Hi"));
        assert_eq!(
            serde_json::to_value(&message).expect("writable"),
            stored,
            "a single text is stored as the previous release stored it"
        );
    }

    #[test]
    fn tool_calls_and_results_round_trip_with_their_exact_arguments() {
        let message = Message {
            role: Role::Assistant,
            parts: vec![
                Part::Text {
                    text: "Checking.".into(),
                },
                call(
                    "call_1",
                    "get_weather",
                    r#"{"city": "Paris",  "units":"c"}"#,
                ),
            ],
        };
        let stored = serde_json::to_value(&message).expect("writable");
        assert_eq!(
            stored["content"][1]["arguments"], r#"{"city": "Paris",  "units":"c"}"#,
            "the arguments' text, spacing and key order as written"
        );
        assert_eq!(
            serde_json::from_value::<Message>(stored).expect("readable"),
            message
        );
        let result = Message {
            role: Role::Tool,
            parts: vec![Part::ToolResult(ToolResult {
                call_id: None,
                name: Some("get_weather".into()),
                content: "18°C".into(),
            })],
        };
        let stored = serde_json::to_value(&result).expect("writable");
        assert_eq!(
            stored,
            json!({ "role": "tool", "content": [
                { "type": "tool_result", "name": "get_weather", "content": "18°C" }] })
        );
        assert_eq!(
            serde_json::from_value::<Message>(stored).expect("readable"),
            result
        );
    }

    #[test]
    fn a_plain_conversation_is_stored_as_its_messages_alone() {
        let stored = json!({ "messages": [{ "role": "user", "content": "Hi" }] });
        let conversation: Conversation = serde_json::from_value(stored.clone()).expect("readable");
        assert_eq!(
            conversation,
            Conversation {
                messages: vec![Message::text(Role::User, "Hi")],
                ..Conversation::default()
            }
        );
        assert!(conversation.parallel_tool_calls);
        assert_eq!(
            serde_json::to_value(&conversation).expect("writable"),
            stored
        );
    }

    #[test]
    fn a_stored_part_of_an_unknown_kind_is_refused_not_dropped() {
        let stored = json!({ "role": "user", "content": [
            { "type": "text", "text": "What is this?" },
            { "type": "hologram", "data": "…" }] });
        assert!(serde_json::from_value::<Message>(stored).is_err());
    }

    #[test]
    fn joined_text_leaves_tool_calls_out() {
        let message = Message {
            role: Role::Assistant,
            parts: vec![
                Part::Text { text: "a".into() },
                call("c", "t", "{}"),
                Part::Text { text: "b".into() },
            ],
        };
        assert_eq!(message.joined_text(), "ab");
        assert_eq!(message.tool_calls().count(), 1);
    }
}
