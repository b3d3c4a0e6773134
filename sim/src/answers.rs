//! What the sim answers a chat that offers tools or asks for JSON, the way each vendor documents
//! it: tool calls with arguments made from each tool's parameters schema (every tool at once when
//! the last message says "parallel" and parallel calls are allowed), a text after a tool's result,
//! and JSON made from the answer's schema — or, while `invalid_structured` lasts or when the
//! prompt says `[invalid]`, JSON that deliberately does not match it.

use serde_json::{Map, Value, json};

use crate::{Sim, lock, text};

/// A chat's request as far as the answer depends on it, read from either dialect.
#[derive(Default)]
pub struct Asked {
    /// The tools offered: name and parameters schema.
    pub tools: Vec<(String, Value)>,
    /// `None`: as the model likes; `Some("")`: none; `Some(name)`: that tool.
    pub choice: Option<String>,
    pub parallel: bool,
    /// The last message's role and text.
    pub last_role: String,
    pub last_text: String,
    pub format: Format,
    /// What the sim says of the images it was shown, if any.
    pub seen: Option<String>,
}

/// The tools a request offers, as both vendors write them (`{"type": "function", "function":
/// {name, parameters}}`): each one's name and parameters schema.
pub fn offered(tools: &[Value]) -> Vec<(String, Value)> {
    tools
        .iter()
        .filter_map(|tool| {
            let function = &tool["function"];
            Some((
                function["name"].as_str()?.to_owned(),
                function["parameters"].clone(),
            ))
        })
        .collect()
}

/// The answer's form.
#[derive(Default)]
pub enum Format {
    #[default]
    Text,
    JsonObject,
    Schema(Value),
}

/// A tool call the sim makes.
pub struct Call {
    pub name: String,
    /// The arguments, one JSON object.
    pub arguments: Value,
}

/// What the sim answers.
pub enum Answer {
    /// Words, or JSON's text; streamed a piece at a time.
    Text(String),
    Calls(Vec<Call>),
}

impl Answer {
    /// The answer to `asked`: tool calls, JSON, or `None` for the sim's usual words.
    pub fn to(sim: &Sim, asked: &Asked, input: &str) -> Option<Self> {
        let calling = !asked.tools.is_empty()
            && asked.choice.as_deref() != Some("")
            && asked.last_role != "tool";
        if calling {
            return Some(Self::Calls(calls(asked)));
        }
        if asked.last_role == "tool" {
            return Some(Self::Text(format!(
                "The tool answered: {}",
                asked.last_text
            )));
        }
        let invalid = input.contains("[invalid]") || take_invalid(sim);
        match &asked.format {
            Format::Text => asked.seen.clone().map(Self::Text),
            Format::JsonObject if invalid => Some(Self::Text(PROSE.to_owned())),
            Format::JsonObject => {
                let words = text::reply(input, None, Some(6)).join(" ");
                Some(Self::Text(json!({ "answer": words }).to_string()))
            }
            Format::Schema(schema) if invalid => Some(Self::Text(mismatch(schema).to_string())),
            Format::Schema(schema) => {
                Some(Self::Text(instance(schema, schema, input, 0).to_string()))
            }
        }
    }
}

/// What a model writes when it forgets it was asked for JSON.
const PROSE: &str = "Sure! Here is what you asked for.";

/// Takes one of the answers `invalid_structured` says to spoil.
fn take_invalid(sim: &Sim) -> bool {
    let mut knobs = lock(&sim.inner.knobs);
    if knobs.invalid_structured == 0 {
        return false;
    }
    knobs.invalid_structured -= 1;
    true
}

fn calls(asked: &Asked) -> Vec<Call> {
    let named = asked.choice.as_deref().filter(|name| !name.is_empty());
    let every = named.is_none() && asked.parallel && asked.last_text.contains("parallel");
    asked
        .tools
        .iter()
        .filter(|(name, _)| named.is_none_or(|n| n == name))
        .take(if every { 3 } else { 1 })
        .map(|(name, parameters)| Call {
            name: name.clone(),
            arguments: instance(parameters, parameters, &asked.last_text, 0),
        })
        .collect()
}

/// A value that matches `schema` (a `$ref` resolved against `root`), its strings taken from the
/// sim's words for `seed`.
fn instance(schema: &Value, root: &Value, seed: &str, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
            .unwrap_or(&Value::Null);
        return instance(target, root, seed, depth + 1);
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema["enum"].as_array().and_then(|values| values.first()) {
        return first.clone();
    }
    for any in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema[any].as_array().and_then(|options| options.first()) {
            return instance(first, root, seed, depth + 1);
        }
    }
    match kind(schema) {
        "object" => {
            let mut object = Map::new();
            if let Some(properties) = schema["properties"].as_object() {
                for (name, property) in properties {
                    let seed = format!("{seed}{name}");
                    object.insert(name.clone(), instance(property, root, &seed, depth + 1));
                }
            }
            Value::Object(object)
        }
        "array" => {
            let least = schema["minItems"].as_u64().unwrap_or(1).max(1);
            let items = (0..least)
                .map(|i| instance(&schema["items"], root, &format!("{seed}{i}"), depth + 1))
                .collect();
            Value::Array(items)
        }
        "integer" => json!(schema["minimum"].as_i64().unwrap_or(0).max(1)),
        "number" => json!(schema["minimum"].as_f64().unwrap_or(0.0).max(1.5)),
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => json!(text::reply(seed, None, Some(3)).join(" ")),
    }
}

/// The schema's type: the first of a list that is not `null`; an object when it has properties.
fn kind(schema: &Value) -> &str {
    match &schema["type"] {
        Value::String(kind) => kind,
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|kind| *kind != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    }
}

/// JSON that does not match `schema`: an object's properties each of the wrong type, else prose.
fn mismatch(schema: &Value) -> Value {
    match schema["properties"].as_object() {
        Some(properties) if !properties.is_empty() => {
            let wrong = properties
                .iter()
                .map(|(name, property)| {
                    let value = match kind(property) {
                        "string" => json!(42),
                        _ => json!("not what was asked"),
                    };
                    (name.clone(), value)
                })
                .collect();
            Value::Object(wrong)
        }
        _ => json!(PROSE),
    }
}

/// An id for the `index`th call of an answer to `input` (OpenAI's `call_…`).
pub fn call_id(input: &str, index: usize) -> String {
    let hash = text::hex_id(&format!("{input}{index}"));
    format!("call_{hash}")
}

/// `text` cut into the pieces a stream sends it in (JSON is streamed a few characters at a time).
pub fn pieces_of(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(8)
        .map(|chunk| chunk.iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_matches_a_pydantic_schema_with_refs_and_a_mismatch_does_not() {
        let schema = json!({
            "$defs": { "Tag": { "type": "object", "properties": { "label": { "type": "string" } },
                                "required": ["label"] } },
            "type": "object",
            "properties": {
                "title": { "type": "string" },
                "price": { "type": "number", "minimum": 2 },
                "tags": { "type": "array", "items": { "$ref": "#/$defs/Tag" } },
                "kind": { "enum": ["mug", "cup"] },
                "note": { "anyOf": [{ "type": "string" }, { "type": "null" }] },
            },
            "required": ["title", "price", "tags", "kind", "note"],
        });
        let made = instance(&schema, &schema, "seed", 0);
        assert!(made["title"].is_string());
        assert_eq!(made["price"], json!(2.0));
        assert!(made["tags"][0]["label"].is_string());
        assert_eq!(made["kind"], "mug");
        assert_eq!(mismatch(&schema)["title"], 42);
    }

    #[test]
    fn pieces_join_back_to_the_text() {
        let text = r#"{"answer": "the gateway answers"}"#;
        assert_eq!(pieces_of(text).concat(), text);
    }
}
