//! Anthropic's Messages API on the wire — one set of types for both directions: the `/anthropic`
//! surface reads clients' requests and writes answers and stream events with them, the Anthropic
//! upstream writes requests and reads answers and stream events with them.
//!
//! A block keeps the fields beside its own (`cache_control`, `citations`, a tool result's
//! `is_error`, …) in `extra`, so nothing a client sent is lost on its way to Anthropic.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::conversation::Finish;

/// A content block of a message or an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    Image {
        source: ImageSource,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<Content>,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    Thinking {
        thinking: String,
        #[serde(default)]
        signature: String,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    RedactedThinking {
        data: String,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A block of another type (a document, a server tool's call or result, a search result),
    /// whole: only Anthropic reads it.
    #[serde(untagged)]
    Other(OtherBlock),
}

/// A block of a type the gateway does not read, whole. A block of a type it reads that does not
/// read (a field missing or mistyped) is refused, never taken for another type.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct OtherBlock(pub Map<String, Value>);

/// The types of block the gateway reads.
const READ: [&str; 6] = [
    "text",
    "image",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
];

impl<'de> Deserialize<'de> for OtherBlock {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let block = Map::<String, Value>::deserialize(deserializer)?;
        match block.get("type").and_then(Value::as_str) {
            Some(kind) if READ.contains(&kind) => Err(serde::de::Error::custom(format!(
                "a `{kind}` block without its fields (as Anthropic's Messages API gives them)"
            ))),
            Some(_) => Ok(Self(block)),
            None => Err(serde::de::Error::custom("a block needs its `type`")),
        }
    }
}

impl OtherBlock {
    /// Its `type`.
    pub fn kind(&self) -> &str {
        self.0
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// Where an image block's image is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

/// A message's (or a tool result's) content: a text, or blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

impl Content {
    /// Its blocks (a text is one text block).
    pub fn into_blocks(self) -> Vec<Block> {
        match self {
            Self::Text(text) => vec![Block::text(text)],
            Self::Blocks(blocks) => blocks,
        }
    }
}

impl Block {
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text {
            text: text.into(),
            extra: Map::new(),
        }
    }
}

/// A message of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: String,
    pub content: Content,
}

/// An answer, whole (`"type": "message"`), or as `message_start` opens a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub id: String,
    #[serde(rename = "type", default = "message_type")]
    pub kind: String,
    #[serde(default = "assistant")]
    pub role: String,
    pub model: String,
    #[serde(default)]
    pub content: Vec<Block>,
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    #[serde(default)]
    pub usage: Usage,
}

fn message_type() -> String {
    "message".to_owned()
}

fn assistant() -> String {
    "assistant".to_owned()
}

/// An answer's token counts. The prompt's whole count is the sum of the three input counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: Option<i64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<i64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<i64>,
    #[serde(default)]
    pub output_tokens: Option<i64>,
}

impl Usage {
    /// What a later count (a stream's `message_delta`, which is cumulative) says, over this.
    pub fn updated(self, later: Self) -> Self {
        Self {
            input_tokens: later.input_tokens.or(self.input_tokens),
            cache_creation_input_tokens: later
                .cache_creation_input_tokens
                .or(self.cache_creation_input_tokens),
            cache_read_input_tokens: later
                .cache_read_input_tokens
                .or(self.cache_read_input_tokens),
            output_tokens: later.output_tokens.or(self.output_tokens),
        }
    }
}

/// One event of a streamed answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: Answer,
    },
    ContentBlockStart {
        index: usize,
        content_block: Block,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDelta,
        #[serde(default)]
        usage: Usage,
    },
    MessageStop,
    Error {
        error: ErrorDetail,
    },
    /// `ping`, and whatever Anthropic adds (clients must tolerate unknown events).
    #[serde(other)]
    Other,
}

/// A piece of a block.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    #[serde(other)]
    Other,
}

/// The end of an answer, in `message_delta`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MessageDelta {
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
}

/// Anthropic's `{"type": "error", "error": {"type", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

/// Why an answer stopped, in Anthropic's words.
pub fn stop_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::ContentFilter => "refusal",
    }
}

/// An Anthropic stop reason as the conversation model's (`stop_sequence` and `pause_turn` are
/// stops; a context window filled is a cut).
pub fn finish_of(stop_reason: &str) -> Finish {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => Finish::Length,
        "tool_use" => Finish::ToolCalls,
        "refusal" => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

/// The error type Anthropic names for an answer's HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// The HTTP status Anthropic answers with an error of type `kind` (the inverse of
/// [`error_type`]); `None` for a type it does not name.
pub fn error_status(kind: &str) -> Option<u16> {
    Some(match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "api_error" => 500,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_blocks_fields_beside_its_own_are_kept() {
        let sent = json!({ "type": "text", "text": "Hi",
                           "cache_control": { "type": "ephemeral", "ttl": "1h" } });
        let block: Block = serde_json::from_value(sent.clone()).expect("a block");
        let Block::Text { text, extra } = &block else {
            panic!("a text block: {block:?}");
        };
        assert_eq!(text, "Hi");
        assert_eq!(extra["cache_control"]["ttl"], "1h");
        assert_eq!(serde_json::to_value(&block).expect("writable"), sent);
    }

    #[test]
    fn a_block_of_another_type_is_kept_whole_and_a_known_one_must_be_whole() {
        let document = json!({ "type": "document", "title": "spec.pdf",
            "source": { "type": "base64", "media_type": "application/pdf", "data": "JVBERi0=" } });
        let block: Block = serde_json::from_value(document.clone()).expect("a block");
        assert!(matches!(block, Block::Other(_)), "{block:?}");
        assert_eq!(serde_json::to_value(&block).expect("writable"), document);
        let broken = json!({ "type": "text", "txt": "typo" });
        assert!(
            serde_json::from_value::<Block>(broken).is_err(),
            "not taken as another type"
        );
    }

    #[test]
    fn stream_events_read_as_anthropic_writes_them_and_unknown_ones_are_tolerated() {
        let start: StreamEvent = serde_json::from_value(json!({
            "type": "content_block_start", "index": 1,
            "content_block": { "type": "tool_use", "id": "toolu_1", "name": "get_weather",
                               "caller": { "type": "direct" }, "input": {} } }))
        .expect("an event");
        assert!(matches!(
            start,
            StreamEvent::ContentBlockStart {
                index: 1,
                content_block: Block::ToolUse { .. }
            }
        ));
        let delta: StreamEvent = serde_json::from_value(json!({
            "type": "content_block_delta", "index": 1,
            "delta": { "type": "input_json_delta", "partial_json": "{\"ci" } }))
        .expect("an event");
        assert_eq!(
            delta,
            StreamEvent::ContentBlockDelta {
                index: 1,
                delta: BlockDelta::InputJsonDelta {
                    partial_json: "{\"ci".into()
                }
            }
        );
        for other in [
            json!({ "type": "ping" }),
            json!({ "type": "novel_event", "x": 1 }),
        ] {
            assert_eq!(
                serde_json::from_value::<StreamEvent>(other).expect("tolerated"),
                StreamEvent::Other
            );
        }
    }

    #[test]
    fn stop_reasons_map_both_ways() {
        for finish in [
            Finish::Stop,
            Finish::Length,
            Finish::ToolCalls,
            Finish::ContentFilter,
        ] {
            assert_eq!(finish_of(stop_reason(finish)), finish);
        }
        assert_eq!(finish_of("stop_sequence"), Finish::Stop);
        assert_eq!(finish_of("pause_turn"), Finish::Stop);
        assert_eq!(error_type(529), "overloaded_error");
        assert_eq!(error_type(422), "invalid_request_error");
        for status in [400, 401, 402, 403, 404, 413, 429, 500, 504, 529] {
            assert_eq!(error_status(error_type(status)), Some(status));
        }
        assert_eq!(error_status("novel_error"), None);
    }
}
