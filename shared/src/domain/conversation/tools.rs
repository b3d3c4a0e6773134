//! Tools: one offered to the model (its name, description and parameters schema), the choice of
//! whether and which to call, and a call's arguments.
//!
//! Arguments are kept as the exact text that was written — OpenAI's dialects carry them as a JSON
//! string, Ollama's and Anthropic's as an object — and checked once to be a JSON object, so each
//! translation writes them in its dialect's form without reordering or re-spacing them.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Longest tool name taken.
const MAX_TOOL_NAME: usize = 128;

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ConversationTool)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema for the arguments (an object's).
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// The provider is asked to keep to the schema exactly (OpenAI's `strict`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
}

/// Whether the model calls a tool: as it likes, never, at least one, or the one named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ConversationToolChoice)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    #[default]
    Auto,
    None,
    Required,
    Tool(String),
}

/// A tool call's arguments: the JSON object's text exactly as the model or the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Arguments(String);

impl Arguments {
    /// Arguments written as text (OpenAI's form). An empty text is an empty object, as models
    /// calling a tool without parameters write it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self("{}".to_owned()));
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(_)) => Ok(Self(text.to_owned())),
            Ok(_) => Err("must be a JSON object".to_owned()),
            Err(error) => Err(format!("must be a JSON object: {error}")),
        }
    }

    /// Arguments given as an object (Ollama's and Anthropic's form), written out once.
    pub fn from_object(object: &serde_json::Map<String, Value>) -> Self {
        Self(Value::Object(object.clone()).to_string())
    }

    /// The text, for a dialect that carries arguments as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The object, for a dialect that carries arguments as one.
    pub fn to_object(&self) -> serde_json::Map<String, Value> {
        match serde_json::from_str(&self.0) {
            Ok(Value::Object(object)) => object,
            // Checked to be an object when made.
            _ => serde_json::Map::new(),
        }
    }
}

impl<'de> Deserialize<'de> for Arguments {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Checks a tool's name: 1 to 128 letters, digits, `_`, `-`, `.` or `:` (what the providers'
/// function names take).
pub fn tool_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_-.:".contains(c);
    if name.is_empty() || name.len() > MAX_TOOL_NAME || !name.chars().all(ok_char) {
        return Err(format!(
            "{name:?} must be 1 to {MAX_TOOL_NAME} letters, digits, `_`, `-`, `.` or `:`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn arguments_keep_their_text_and_must_be_one_object() {
        let text = r#"{"b": 1, "a": [true]}"#;
        let arguments = Arguments::parse(text).expect("an object");
        assert_eq!(arguments.as_str(), text);
        assert_eq!(
            Value::Object(arguments.to_object()),
            json!({ "a": [true], "b": 1 })
        );
        assert_eq!(Arguments::parse("  ").expect("empty").as_str(), "{}");
        for bad in ["[1]", "\"x\"", "{\"city\": ", "null"] {
            assert!(Arguments::parse(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_value::<Arguments>(json!("{oops")).is_err());
    }

    #[test]
    fn a_tool_choice_is_stored_by_name() {
        for (choice, stored) in [
            (ToolChoice::Auto, json!("auto")),
            (ToolChoice::None, json!("none")),
            (ToolChoice::Required, json!("required")),
            (
                ToolChoice::Tool("get_weather".into()),
                json!({ "tool": "get_weather" }),
            ),
        ] {
            assert_eq!(serde_json::to_value(&choice).expect("writable"), stored);
            assert_eq!(
                serde_json::from_value::<ToolChoice>(stored).expect("readable"),
                choice
            );
        }
    }

    #[test]
    fn tool_names_are_what_providers_take() {
        assert!(tool_name("mcp__github__create_issue").is_ok());
        assert!(tool_name("get-weather.v2:eu").is_ok());
        assert!(tool_name("").is_err());
        assert!(tool_name("get weather").is_err());
        assert!(tool_name(&"x".repeat(129)).is_err());
    }
}
