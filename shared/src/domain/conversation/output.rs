//! The answer's format — text, any one JSON object, or a JSON schema — and the check of an answer
//! against it. Tollgate enforces the format rather than hoping for it: the schema is compiled once
//! per job and each answer is checked, naming the first violation.
//!
//! Schemas are compiled offline: a `$ref` to anything outside the schema is refused, never fetched
//! (a client's schema must not make Tollgate read a URL or a file). Apps send the same schemas
//! with every request (and a batch with every item), so a process keeps the schemas it compiled
//! lately, by their text, and compiles each once.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The form the answer must take.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputFormat {
    #[default]
    Text,
    /// One JSON object, of any shape.
    JsonObject,
    JsonSchema(JsonSchemaFormat),
}

/// An answer that must be JSON valid against `schema`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub schema: Value,
    /// The provider is asked to keep to the schema exactly (OpenAI's `strict`); Tollgate checks
    /// the answer either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
}

/// What an answer checked against its format broke: the first violation, where it is in the
/// answer (a JSON pointer; empty for the whole answer) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the answer does not match its format at {}: {message}", if .at.is_empty() { "its root" } else { .at.as_str() })]
pub struct Violation {
    pub at: String,
    pub message: String,
}

/// A format made ready to check answers against: compiled once per job.
pub enum AnswerSchema {
    JsonObject,
    JsonSchema(Arc<jsonschema::Validator>),
}

impl OutputFormat {
    /// Whether any answer will do.
    pub fn is_text(&self) -> bool {
        matches!(self, Self::Text)
    }

    /// The format made ready to check answers (`None` for text, which any answer is); a schema
    /// that does not compile is refused with why.
    pub fn compile(&self) -> Result<Option<AnswerSchema>, String> {
        match self {
            Self::Text => Ok(None),
            Self::JsonObject => Ok(Some(AnswerSchema::JsonObject)),
            Self::JsonSchema(format) => compile_schema(&format.schema)
                .map(|validator| Some(AnswerSchema::JsonSchema(validator))),
        }
    }
}

/// How many compiled schemas a process keeps (emptied when full: a cache, never a store).
const KEPT_SCHEMAS: usize = 1024;

/// The schemas this process compiled lately, by their text.
static COMPILED: LazyLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
    LazyLock::new(Mutex::default);

/// Compiles a JSON Schema (a tool's parameters or an answer's format), offline — or finds it
/// compiled already.
pub(super) fn compile_schema(schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
    if !schema.is_object() {
        return Err("must be a JSON Schema object".to_owned());
    }
    let text = schema.to_string();
    let kept =
        |compiled: &mut HashMap<String, Arc<jsonschema::Validator>>| compiled.get(&text).cloned();
    if let Some(validator) = kept(&mut lock(&COMPILED)) {
        return Ok(validator);
    }
    let validator = jsonschema::options()
        .offline()
        .build(schema)
        .map_err(|error| format!("is not a valid JSON Schema: {error}"))?;
    let validator = Arc::new(validator);
    let mut compiled = lock(&COMPILED);
    if compiled.len() >= KEPT_SCHEMAS {
        compiled.clear();
    }
    compiled.insert(text, validator.clone());
    Ok(validator)
}

/// The cache, even when a thread panicked holding it (what it holds stays whole).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AnswerSchema {
    /// Checks an answer's text: it must parse as JSON and, with a schema, be valid against it.
    pub fn check(&self, answer: &str) -> Result<(), Violation> {
        let value: Value = serde_json::from_str(answer.trim()).map_err(|error| Violation {
            at: String::new(),
            message: format!("not JSON ({error})"),
        })?;
        match self {
            Self::JsonObject if value.is_object() => Ok(()),
            Self::JsonObject => Err(Violation {
                at: String::new(),
                message: "not a JSON object".to_owned(),
            }),
            Self::JsonSchema(validator) => validator.validate(&value).map_err(|error| Violation {
                at: error.instance_path().as_str().to_owned(),
                message: error.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema_format(schema: Value) -> OutputFormat {
        OutputFormat::JsonSchema(JsonSchemaFormat {
            name: "product".into(),
            description: None,
            schema,
            strict: true,
        })
    }

    #[test]
    fn an_answer_is_checked_against_its_schema_naming_the_first_violation() {
        let format = schema_format(json!({
            "type": "object",
            "properties": {
                "title": { "type": "string" },
                "keywords": { "type": "array", "items": { "type": "string" } }
            },
            "required": ["title", "keywords"],
            "additionalProperties": false
        }));
        let schema = format.compile().expect("compiles").expect("a check");
        assert_eq!(
            schema.check(r#" {"title": "Mug", "keywords": ["tea"]} "#),
            Ok(())
        );
        let violation = schema
            .check(r#"{"title": "Mug", "keywords": ["tea", 7]}"#)
            .expect_err("a number among the keywords");
        assert_eq!(violation.at, "/keywords/1");
        assert!(violation.message.contains("string"), "{violation}");
        let prose = schema
            .check("Here is your JSON: {}")
            .expect_err("prose is not JSON");
        assert!(prose.to_string().contains("its root"), "{prose}");
    }

    #[test]
    fn json_object_takes_any_object_and_nothing_else() {
        let schema = OutputFormat::JsonObject
            .compile()
            .expect("compiles")
            .expect("a check");
        assert_eq!(schema.check(r#"{"any": ["shape"]}"#), Ok(()));
        assert!(schema.check("[1, 2]").is_err());
        assert!(OutputFormat::Text.compile().expect("compiles").is_none());
    }

    #[test]
    fn a_schema_that_does_not_compile_or_reaches_outside_is_refused() {
        for schema in [
            json!({ "type": 12 }),
            json!("object"),
            json!({ "$ref": "https://example.com/schema.json" }),
            json!({ "$ref": "file:///etc/passwd" }),
        ] {
            assert!(schema_format(schema.clone()).compile().is_err(), "{schema}");
        }
        let local = json!({
            "$defs": { "tag": { "type": "string" } },
            "type": "array", "items": { "$ref": "#/$defs/tag" }
        });
        assert!(schema_format(local).compile().is_ok());
    }

    #[test]
    fn formats_are_stored_by_type() {
        let format = schema_format(json!({ "type": "object" }));
        let stored = serde_json::to_value(&format).expect("writable");
        assert_eq!(
            stored,
            json!({ "type": "json_schema", "name": "product",
                    "schema": { "type": "object" }, "strict": true })
        );
        assert_eq!(
            serde_json::from_value::<OutputFormat>(stored).expect("readable"),
            format
        );
        assert_eq!(
            serde_json::to_value(OutputFormat::JsonObject).expect("writable"),
            json!({ "type": "json_object" })
        );
    }
}
