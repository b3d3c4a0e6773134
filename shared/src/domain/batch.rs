//! Batches: many items of one kind and model, validated as a whole so that an error names its item,
//! with an optional template whose `{{field}}` placeholders each item's `fields` fill.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::JobKind;
use super::conversation::{Conversation, Message, OutputFormat, Role, Tool, ToolChoice};
use super::request::{
    ChatRequest, EmbeddingInput, EmbeddingRequest, GenerateRequest, GenerationOptions, JobRequest,
    ModelName, ValidationError,
};

/// Most items in one batch.
pub const MAX_BATCH_ITEMS: usize = 50_000;
/// Longest `custom_id`, in characters.
const MAX_CUSTOM_ID_CHARS: usize = 200;

/// One item as a client sends it: its `custom_id` and either its own prompt, messages or input,
/// or the `fields` the batch's template is filled from.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    pub custom_id: String,
    pub prompt: Option<String>,
    /// A chat item's conversation, each message as `POST /v1/chat` takes it.
    pub messages: Option<Vec<Message>>,
    /// A chat already translated from another dialect (an OpenAI Batch API line), in place of
    /// `messages`.
    #[serde(skip)]
    pub conversation: Option<Conversation>,
    pub input: Option<EmbeddingInput>,
    /// Replaces the batch's options for this item.
    pub options: Option<GenerationOptions>,
    /// Replaces the batch's answer format for this item.
    pub output: Option<OutputFormat>,
    pub fields: Option<Map<String, Value>>,
}

/// What every item of a batch shares.
pub struct BatchSpec {
    pub kind: JobKind,
    pub model: ModelName,
    pub options: Option<GenerationOptions>,
    pub template: Option<Template>,
    /// The tools every chat item offers, and the choice among them.
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    /// The form every item's answer takes, unless the item says otherwise.
    pub output: OutputFormat,
}

/// An item once validated: its `custom_id` and the request a worker will send.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidItem {
    pub custom_id: String,
    pub request: JobRequest,
}

/// A text with `{{field}}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

impl Template {
    /// Parses placeholders `{{name}}` (letters, digits, `_`, `-`, `.`; spaces inside the braces
    /// allowed); a `{{` left open or an empty name is an error on `template`.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                ValidationError::new("template", "a `{{` is never closed by `}}`")
            })?;
            let name = after[..close].trim();
            let ok = |c: char| c.is_alphanumeric() || "_-.".contains(c);
            if name.is_empty() || !name.chars().all(ok) {
                return Err(ValidationError::new(
                    "template",
                    format!("`{{{{{}}}}}` is not a field name", &after[..close]),
                ));
            }
            parts.push(Part::Field(name.to_owned()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Field(_))) {
            return Err(ValidationError::new(
                "template",
                "has no `{{field}}` placeholder: give each item its own text instead",
            ));
        }
        Ok(Self { parts })
    }

    /// The text with every placeholder replaced by the item's field (strings as they are,
    /// numbers and booleans as JSON writes them); a missing or structured field is an error on
    /// `fields`.
    fn fill(&self, fields: &Map<String, Value>) -> Result<String, ValidationError> {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => text.push_str(t),
                Part::Field(name) => match fields.get(name) {
                    Some(Value::String(s)) => text.push_str(s),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => text.push_str(&v.to_string()),
                    Some(_) => {
                        return Err(ValidationError::new(
                            format!("fields.{name}"),
                            "must be a string, a number or a boolean to fill the template",
                        ));
                    }
                    None => {
                        return Err(ValidationError::new(
                            "fields",
                            format!("has no `{name}`, which the template needs"),
                        ));
                    }
                },
            }
        }
        Ok(text)
    }
}

impl BatchSpec {
    /// Validates every item, in order; the first error names the item (`items[3].prompt`), and
    /// `line` says how to point a person at it (`line 4` of a JSONL body).
    pub fn items(
        &self,
        items: Vec<BatchItem>,
        line: impl Fn(usize) -> Option<usize>,
    ) -> Result<Vec<ValidItem>, ValidationError> {
        if items.is_empty() {
            return Err(ValidationError::new("items", "must hold at least one item"));
        }
        if items.len() > MAX_BATCH_ITEMS {
            return Err(ValidationError::new(
                "items",
                format!(
                    "must hold at most {MAX_BATCH_ITEMS} items (got {})",
                    items.len()
                ),
            ));
        }
        let mut seen: HashMap<String, usize> = HashMap::with_capacity(items.len());
        let mut valid = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let located = |error: ValidationError| {
                let message = match line(i) {
                    Some(n) => format!("line {n}: {}", error.message),
                    None => error.message,
                };
                ValidationError::new(format!("items[{i}].{}", error.field), message)
            };
            let custom_id = check_custom_id(&item.custom_id).map_err(located)?;
            if let Some(first) = seen.insert(custom_id.clone(), i) {
                return Err(located(ValidationError::new(
                    "custom_id",
                    format!("repeats the custom_id of items[{first}]"),
                )));
            }
            let request = self.request(item).map_err(located)?;
            valid.push(ValidItem { custom_id, request });
        }
        Ok(valid)
    }

    /// One item's request, its field errors relative to the item.
    fn request(&self, item: BatchItem) -> Result<JobRequest, ValidationError> {
        let model = self.model.as_str();
        let options = item.options.or_else(|| self.options.clone());
        let output = item.output.unwrap_or_else(|| self.output.clone());
        let filled = match (&self.template, &item.fields) {
            (Some(template), Some(fields)) => Some(template.fill(fields)?),
            (Some(_), None) => {
                return Err(ValidationError::new(
                    "fields",
                    "is required: the batch has a template",
                ));
            }
            (None, Some(_)) => {
                return Err(ValidationError::new(
                    "fields",
                    "fills a template, and the batch has none",
                ));
            }
            (None, None) => None,
        };
        let own = match self.kind {
            JobKind::Generate => "prompt",
            JobKind::Chat => "messages",
            JobKind::Embedding => "input",
        };
        for (field, given) in [
            ("prompt", item.prompt.is_some()),
            (
                "messages",
                item.messages.is_some() || item.conversation.is_some(),
            ),
            ("input", item.input.is_some()),
        ] {
            if given && field != own {
                return Err(ValidationError::new(
                    field,
                    format!("is not part of a {} item", self.kind.as_str()),
                ));
            }
            if given && filled.is_some() {
                return Err(ValidationError::new(
                    field,
                    "comes from the batch's template: give `fields` only",
                ));
            }
        }
        let missing = || ValidationError::new(own, "is required");
        Ok(match self.kind {
            JobKind::Generate => {
                let prompt = filled.or(item.prompt).ok_or_else(missing)?;
                let request = GenerateRequest::parse(model, prompt, options)?;
                JobRequest::Generate(request.with_output(output, "output")?)
            }
            JobKind::Chat => {
                let conversation = match (filled, item.conversation) {
                    (None, Some(conversation)) => conversation,
                    (Some(content), _) => {
                        self.offered(vec![Message::text(Role::User, content)], output)
                    }
                    (None, None) => self.offered(item.messages.ok_or_else(missing)?, output),
                };
                JobRequest::Chat(ChatRequest::new(model, conversation, options)?)
            }
            JobKind::Embedding => {
                if options.is_some() {
                    return Err(ValidationError::new(
                        "options",
                        "embedding items take no options",
                    ));
                }
                let input = filled.map(EmbeddingInput::One).or(item.input);
                JobRequest::Embedding(EmbeddingRequest::parse(model, input.ok_or_else(missing)?)?)
            }
        })
    }
}

impl BatchSpec {
    /// A chat item's messages with what the batch offers.
    fn offered(&self, messages: Vec<Message>, output: OutputFormat) -> Conversation {
        Conversation {
            messages,
            tools: self.tools.clone(),
            tool_choice: self.tool_choice.clone(),
            output,
            ..Conversation::default()
        }
    }
}

fn check_custom_id(id: &str) -> Result<String, ValidationError> {
    let length = id.chars().count();
    if id.trim().is_empty() || length > MAX_CUSTOM_ID_CHARS {
        return Err(ValidationError::new(
            "custom_id",
            format!("must be 1 to {MAX_CUSTOM_ID_CHARS} characters, not blank"),
        ));
    }
    Ok(id.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::conversation::{Message, Role};

    fn spec(kind: JobKind, template: Option<&str>) -> BatchSpec {
        BatchSpec {
            kind,
            model: ModelName::parse("llama3").expect("model"),
            options: None,
            template: template.map(|t| Template::parse(t).expect("template")),
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            output: OutputFormat::Text,
        }
    }

    fn items(values: Value) -> Vec<BatchItem> {
        serde_json::from_value(values).expect("items")
    }

    fn no_lines(_: usize) -> Option<usize> {
        None
    }

    #[test]
    fn a_template_is_filled_from_each_items_fields() {
        let spec = spec(
            JobKind::Generate,
            Some("Describe {{ product }} in {{colour}} ({{grams}} g, gift: {{gift}})."),
        );
        let valid = spec
            .items(
                items(json!([{ "custom_id": "sku-1", "fields": {
                    "product": "a mug", "colour": "blue", "grams": 350, "gift": true } }])),
                no_lines,
            )
            .expect("valid");
        let JobRequest::Generate(request) = &valid[0].request else {
            panic!("a generate request");
        };
        assert_eq!(
            request.prompt,
            "Describe a mug in blue (350 g, gift: true)."
        );
        assert_eq!(valid[0].custom_id, "sku-1");
    }

    #[test]
    fn a_chat_template_becomes_one_user_message() {
        let valid = spec(JobKind::Chat, Some("Draft a post on {{topic}}"))
            .items(
                items(json!([{ "custom_id": "a", "fields": { "topic": "tea" } }])),
                no_lines,
            )
            .expect("valid");
        let JobRequest::Chat(request) = &valid[0].request else {
            panic!("a chat request");
        };
        assert_eq!(
            request.conversation.messages,
            [Message::text(Role::User, "Draft a post on tea")]
        );
    }

    #[test]
    fn errors_name_the_item_and_its_line() {
        let spec = spec(JobKind::Generate, Some("About {{product}}"));
        let error = spec
            .items(
                items(json!([
                    { "custom_id": "a", "fields": { "product": "tea" } },
                    { "custom_id": "b", "fields": { "name": "cup" } },
                ])),
                |i| Some(i + 1),
            )
            .expect_err("b has no product");
        assert_eq!(error.field, "items[1].fields");
        assert!(error.message.starts_with("line 2: "), "{error}");
        assert!(error.message.contains("product"), "{error}");

        let error = spec
            .items(
                items(json!([
                    { "custom_id": "a", "fields": { "product": "tea" } },
                    { "custom_id": "a", "fields": { "product": "cup" } },
                ])),
                no_lines,
            )
            .expect_err("repeated custom_id");
        assert_eq!(error.field, "items[1].custom_id");
        assert!(error.message.contains("items[0]"), "{error}");
    }

    #[test]
    fn an_item_must_fit_its_kind() {
        let generate = spec(JobKind::Generate, None);
        let cases = [
            (json!({ "custom_id": "a" }), "items[0].prompt"),
            (json!({ "custom_id": "a", "input": "x" }), "items[0].input"),
            (
                json!({ "custom_id": " ", "prompt": "x" }),
                "items[0].custom_id",
            ),
            (json!({ "custom_id": "a", "prompt": "" }), "items[0].prompt"),
            (
                json!({ "custom_id": "a", "prompt": "x", "options": { "temperature": 9 } }),
                "items[0].options.temperature",
            ),
            (
                json!({ "custom_id": "a", "prompt": "x", "fields": {} }),
                "items[0].fields",
            ),
        ];
        for (item, field) in cases {
            let error = generate
                .items(items(json!([item])), no_lines)
                .expect_err("invalid");
            assert_eq!(error.field, field, "{error}");
        }
        let templated = spec(JobKind::Generate, Some("{{x}}"));
        let error = templated
            .items(
                items(json!([{ "custom_id": "a", "prompt": "x", "fields": { "x": 1 } }])),
                no_lines,
            )
            .expect_err("both");
        assert_eq!(error.field, "items[0].prompt");
    }

    #[test]
    fn a_batch_holds_one_to_fifty_thousand_items() {
        let generate = spec(JobKind::Generate, None);
        let error = generate.items(Vec::new(), no_lines).expect_err("empty");
        assert_eq!(error.field, "items");
        let many: Vec<BatchItem> = (0..=MAX_BATCH_ITEMS)
            .map(|i| BatchItem {
                conversation: None,
                custom_id: i.to_string(),
                prompt: Some("x".into()),
                messages: None,
                input: None,
                options: None,
                output: None,
                fields: None,
            })
            .collect();
        let error = generate.items(many, no_lines).expect_err("too many");
        assert_eq!(error.field, "items");
        assert!(error.message.contains("50000"), "{error}");
    }

    #[test]
    fn templates_must_be_well_formed() {
        assert_eq!(
            Template::parse("{{a}} {{").expect_err("open").field,
            "template"
        );
        assert!(Template::parse("{{ }}").is_err());
        assert!(Template::parse("no placeholder").is_err());
        let fields = Map::from_iter([("a".to_owned(), json!({ "nested": 1 }))]);
        let error = Template::parse("{{a}}")
            .expect("template")
            .fill(&fields)
            .expect_err("structured");
        assert_eq!(error.field, "fields.a");
    }
}
