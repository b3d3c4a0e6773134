//! The requests `tollgate-bench` submits: a plain generate (the default), a plain chat, a chat
//! whose answer must match a 20-field JSON schema, and a chat offering 5 tools besides the schema
//! (what issue 33's performance target compares with a plain chat).

use serde_json::{Map, Value, json};

/// What each submitted job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    Generate,
    Chat,
    /// A chat whose answer is checked against a 20-field schema.
    Schema,
    /// A chat offering 5 tools, with the 20-field schema.
    Tools,
}

impl Shape {
    /// The route and body of the `n`th job of `client`.
    pub fn request(self, model: &str, client: usize, n: u64) -> (&'static str, Value) {
        let text = format!("Describe product {client}-{n} in one sentence");
        if self == Self::Generate {
            return ("/v1/generate", json!({ "model": model, "prompt": text }));
        }
        let mut body = json!({ "model": model,
                               "messages": [{ "role": "user", "content": text }] });
        if matches!(self, Self::Schema | Self::Tools) {
            body["output"] = json!({ "type": "json_schema", "name": "product",
                                     "schema": schema(20), "strict": true });
        }
        if self == Self::Tools {
            body["tools"] = json!(tools(5));
        }
        ("/v1/chat", body)
    }
}

/// An object schema of `fields` required fields, of every kind a catalogue uses.
fn schema(fields: usize) -> Value {
    let kinds = [
        json!({ "type": "string" }),
        json!({ "type": "number", "minimum": 0 }),
        json!({ "type": "integer", "minimum": 0 }),
        json!({ "type": "boolean" }),
        json!({ "type": "array", "items": { "type": "string" } }),
        json!({ "type": "string", "enum": ["new", "used", "refurbished"] }),
    ];
    let properties: Map<String, Value> = (0..fields)
        .map(|i| (format!("field_{i}"), kinds[i % kinds.len()].clone()))
        .collect();
    let required: Vec<String> = properties.keys().cloned().collect();
    json!({ "type": "object", "properties": properties, "required": required,
            "additionalProperties": false })
}

/// `count` tools, each taking a few parameters.
fn tools(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            json!({ "name": format!("lookup_{i}"), "description": "Looks a product up.",
                    "parameters": { "type": "object",
                        "properties": { "sku": { "type": "string" },
                                        "quantity": { "type": "integer", "minimum": 1 } },
                        "required": ["sku"] } })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_has_its_fields_and_the_tools_their_names() {
        let (path, body) = Shape::Tools.request("m", 1, 2);
        assert_eq!(path, "/v1/chat");
        assert_eq!(
            body["output"]["schema"]["required"]
                .as_array()
                .map(Vec::len),
            Some(20)
        );
        assert_eq!(body["tools"].as_array().map(Vec::len), Some(5));
        assert_eq!(Shape::Generate.request("m", 1, 2).0, "/v1/generate");
    }
}
