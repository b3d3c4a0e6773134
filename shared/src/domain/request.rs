//! Validated job requests: what a worker sends to a provider, parsed once at intake.
//!
//! The api's body types turn into these through `parse` functions that name the offending field, so
//! everything stored in `jobs.request` has already passed validation.

use serde::{Deserialize, Serialize};

use super::anthropic::AnthropicExtras;
use super::conversation::{
    AnswerSchema, Conversation, Image, MAX_IMAGES, Message, OutputFormat, ToolChoice,
};
use super::{Capabilities, Capability, JobKind, Reasoning};

/// Longest prompt (or message, or embedding input) accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 200_000;
/// Most chat messages in one request (a coding agent's long session holds thousands).
pub const MAX_MESSAGES: usize = 4096;
/// Most embedding inputs in one request.
pub const MAX_EMBEDDING_INPUTS: usize = 512;

/// A request field that failed validation: the field's JSON path and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The error with `prefix` put before its field: for values another body holds under a
    /// longer name.
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.field.insert_str(0, prefix);
        self
    }

    /// The error with `prefix` taken off its field: for a dialect whose options sit at the top
    /// level of its body rather than under `options`.
    pub fn unnest(mut self, prefix: &str) -> Self {
        if let Some(field) = self.field.strip_prefix(prefix) {
            self.field = field.to_owned();
        }
        self
    }
}

/// A model name as clients send it (`llama3`, `llama3:8b`, `gpt-4.1-mini`, `org/model`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct ModelName(String);

impl ModelName {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "._:/-".contains(c);
        if s.is_empty() || s.len() > 200 {
            return Err(ValidationError::new("model", "must be 1 to 200 characters"));
        }
        if !s.chars().all(ok_char) {
            return Err(ValidationError::new(
                "model",
                "may contain only letters, digits and . _ : / -",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Sampling options common to every provider. Unknown options are refused rather than ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerationOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// A system prompt (generate only; chat sends a `system` message instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Texts that end the answer where the model would write them (at most 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// The answer's form: `json` asks for one JSON object (OpenAI's `response_format:
    /// {"type": "json_object"}`, Ollama's `format: "json"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AnswerFormat>,
    /// How much the model reasons first: `false`, `true` (its own amount) or a level
    /// (`minimal`, `low`, `medium`, `high`, `max`). A preference: a model that cannot reason is
    /// called without it. Left out, a model that reasons by default is told not to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Reasoning>,
    /// How many answers to give, each its own choice (1 to 8). A provider that gives one per call
    /// (Ollama) is called as many times, and billed as called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 8)]
    pub n: Option<u8>,
    /// The answer's tokens with their log probabilities and this many likeliest alternatives at
    /// each (0 to 20), where the provider gives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 20)]
    pub logprobs: Option<u8>,
}

/// A form the answer must take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnswerFormat {
    Json,
}

/// Most stop texts in one request (OpenAI's limit).
pub const MAX_STOP_TEXTS: usize = 4;
/// Most answers one request asks for (`n`).
pub const MAX_CHOICES: u8 = 8;
/// Why a streamed request may not ask for several answers (a stream carries one).
pub const SEVERAL_NOT_STREAMED: &str =
    "several answers are given whole: ask for them without streaming";
/// Most alternatives a token's log probabilities come with (OpenAI's and Ollama's limit).
pub const MAX_TOP_LOGPROBS: u8 = 20;

impl GenerationOptions {
    pub fn validate(self) -> Result<Self, ValidationError> {
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(ValidationError::new(
                "options.temperature",
                "must be between 0 and 2",
            ));
        }
        if let Some(p) = self.top_p
            && !(0.0..=1.0).contains(&p)
        {
            return Err(ValidationError::new(
                "options.top_p",
                "must be between 0 and 1",
            ));
        }
        if let Some(m) = self.max_tokens
            && !(1..=131_072).contains(&m)
        {
            return Err(ValidationError::new(
                "options.max_tokens",
                "must be between 1 and 131072",
            ));
        }
        if let Some(system) = &self.system {
            check_text("options.system", system)?;
        }
        if self.n.is_some_and(|n| !(1..=MAX_CHOICES).contains(&n)) {
            return Err(ValidationError::new(
                "options.n",
                format!("must be between 1 and {MAX_CHOICES}"),
            ));
        }
        if self.logprobs.is_some_and(|k| k > MAX_TOP_LOGPROBS) {
            return Err(ValidationError::new(
                "options.logprobs",
                format!("must be between 0 and {MAX_TOP_LOGPROBS}"),
            ));
        }
        if let Some(stop) = &self.stop {
            if stop.len() > MAX_STOP_TEXTS {
                return Err(ValidationError::new(
                    "options.stop",
                    format!("holds at most {MAX_STOP_TEXTS} texts"),
                ));
            }
            if let Some(i) = stop.iter().position(|t| t.is_empty() || t.len() > 200) {
                return Err(ValidationError::new(
                    format!("options.stop[{i}]"),
                    "must be 1 to 200 bytes",
                ));
            }
        }
        Ok(self)
    }
}

/// `logprobs` and `top_logprobs`, as OpenAI and Ollama both take them, as the request's log
/// probabilities: `top_logprobs`
/// alternatives (none when left out) for each token, when `logprobs` is true.
pub fn asked_logprobs(
    asked: Option<bool>,
    top: Option<u32>,
) -> Result<Option<u8>, ValidationError> {
    let top = match top {
        None => 0,
        Some(top) if top <= u32::from(MAX_TOP_LOGPROBS) => top as u8,
        Some(_) => {
            return Err(ValidationError::new(
                "top_logprobs",
                format!("must be between 0 and {MAX_TOP_LOGPROBS}"),
            ));
        }
    };
    match asked {
        Some(true) => Ok(Some(top)),
        _ if top > 0 => Err(ValidationError::new(
            "top_logprobs",
            "needs \"logprobs\": true",
        )),
        _ => Ok(None),
    }
}

/// `POST /v1/generate`: one prompt, one completion, in the form `output` asks for (a generate's
/// `options.format` is lifted into it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredGenerate")]
pub struct GenerateRequest {
    pub model: ModelName,
    pub prompt: String,
    #[serde(default)]
    pub options: GenerationOptions,
    #[serde(default, skip_serializing_if = "OutputFormat::is_text")]
    pub output: OutputFormat,
    /// Images shown with the prompt (Ollama's `/api/generate` takes them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
}

/// A generate as `jobs.request` holds it — including a row the previous release wrote, whose
/// answer's form was `options.format`.
#[derive(Deserialize)]
struct StoredGenerate {
    model: ModelName,
    prompt: String,
    #[serde(default)]
    options: GenerationOptions,
    #[serde(default)]
    output: OutputFormat,
    #[serde(default)]
    images: Vec<Image>,
}

impl From<StoredGenerate> for GenerateRequest {
    fn from(stored: StoredGenerate) -> Self {
        let StoredGenerate {
            model,
            prompt,
            mut options,
            mut output,
            images,
        } = stored;
        lift_format(&mut output, &mut options);
        Self {
            model,
            prompt,
            options,
            output,
            images,
        }
    }
}

/// `POST /v1/chat`: a conversation, answered by the assistant's next message. Its answer's form
/// is the conversation's `output` (a chat's `options.format` is lifted into it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredChat")]
pub struct ChatRequest {
    pub model: ModelName,
    #[serde(flatten)]
    pub conversation: Conversation,
    #[serde(default)]
    pub options: GenerationOptions,
    /// What an Anthropic client sent beyond the conversation, for an Anthropic upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic: Option<Box<AnthropicExtras>>,
}

/// A chat as `jobs.request` holds it — including a row the previous release wrote, whose answer's
/// form was `options.format`.
#[derive(Deserialize)]
struct StoredChat {
    model: ModelName,
    #[serde(flatten)]
    conversation: Conversation,
    #[serde(default)]
    options: GenerationOptions,
    #[serde(default)]
    anthropic: Option<Box<AnthropicExtras>>,
}

impl From<StoredChat> for ChatRequest {
    fn from(stored: StoredChat) -> Self {
        let StoredChat {
            model,
            mut conversation,
            mut options,
            anthropic,
        } = stored;
        lift_format(&mut conversation.output, &mut options);
        Self {
            model,
            conversation,
            options,
            anthropic,
        }
    }
}

/// Moves `options.format` (one JSON object) into the request's output, where it is kept.
fn lift_format(output: &mut OutputFormat, options: &mut GenerationOptions) {
    if options.format.take() == Some(AnswerFormat::Json) && *output == OutputFormat::Text {
        *output = OutputFormat::JsonObject;
    }
}

/// One text or several, as OpenAI and Ollama both accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

impl EmbeddingInput {
    pub fn texts(&self) -> Vec<&str> {
        match self {
            Self::One(text) => vec![text.as_str()],
            Self::Many(texts) => texts.iter().map(String::as_str).collect(),
        }
    }
}

/// `POST /v1/embedding`: vectors for one or more texts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    pub model: ModelName,
    pub input: EmbeddingInput,
    /// How many dimensions the vectors are cut to, for models that support it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
}

/// Any job's request, as stored in `jobs.request` and sent to a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobRequest {
    Generate(GenerateRequest),
    Chat(ChatRequest),
    Embedding(EmbeddingRequest),
}

impl JobRequest {
    pub fn kind(&self) -> JobKind {
        match self {
            Self::Generate(_) => JobKind::Generate,
            Self::Chat(_) => JobKind::Chat,
            Self::Embedding(_) => JobKind::Embedding,
        }
    }

    /// Everything the request sends the model, as one text (for token estimates).
    pub fn input_text(&self) -> String {
        match self {
            Self::Generate(r) => {
                let system = r.options.system.as_deref().unwrap_or_default();
                format!("{system}\n{}", r.prompt)
            }
            Self::Chat(r) => r
                .conversation
                .messages
                .iter()
                .map(Message::joined_text)
                .collect::<Vec<_>>()
                .join("\n"),
            Self::Embedding(r) => r.input.texts().join("\n"),
        }
    }

    /// The reasoning it asks for; `None` when it asks nothing (embeddings never do).
    pub fn reasoning(&self) -> Option<Reasoning> {
        match self {
            Self::Generate(r) => r.options.reasoning,
            Self::Chat(r) => r.options.reasoning,
            Self::Embedding(_) => None,
        }
    }

    /// How many answers it asks for (at least one).
    pub fn choices(&self) -> u8 {
        match self {
            Self::Generate(r) => r.options.n.unwrap_or(1),
            Self::Chat(r) => r.options.n.unwrap_or(1),
            Self::Embedding(_) => 1,
        }
    }

    /// The request with `max_tokens` set to a route's `default`, when it gives none (`None`
    /// when it gives one, or is an embedding).
    pub fn with_default_max_tokens(&self, default: u32) -> Option<Self> {
        let given = match self {
            Self::Generate(r) => r.options.max_tokens,
            Self::Chat(r) => r.options.max_tokens,
            Self::Embedding(_) => return None,
        };
        if given.is_some() {
            return None;
        }
        let mut defaulted = self.clone();
        match &mut defaulted {
            Self::Generate(r) => r.options.max_tokens = Some(default),
            Self::Chat(r) => r.options.max_tokens = Some(default),
            Self::Embedding(_) => {}
        }
        Some(defaulted)
    }

    /// The most completion tokens the request can cause: its `max_tokens` (else `default`) for
    /// each answer it asks for; embeddings produce none.
    pub fn max_completion_tokens(&self, default: u32) -> u32 {
        let each = match self {
            Self::Generate(r) => r.options.max_tokens.unwrap_or(default),
            Self::Chat(r) => r.options.max_tokens.unwrap_or(default),
            Self::Embedding(_) => 0,
        };
        each.saturating_mul(u32::from(self.choices()))
    }

    /// The form its answer must take, made ready to check answers against (once per run); `None`
    /// when any answer will do. A schema that does not compile is refused with why (intake
    /// refuses them, so only a row written by hand can hold one).
    pub fn answer_schema(&self) -> Result<Option<AnswerSchema>, String> {
        match self {
            Self::Generate(r) => r.output.compile(),
            Self::Chat(r) => r.conversation.output.compile(),
            Self::Embedding(_) => Ok(None),
        }
    }

    /// What a model must be able to do to answer it: complete, see the images it shows, call
    /// the tools it offers (unless it says not to). Embeddings need nothing named: Ollama embeds
    /// with generative models too, which do not list `embedding`.
    pub fn needs(&self) -> Capabilities {
        let mut needs = match self {
            Self::Embedding(_) => vec![],
            Self::Generate(_) | Self::Chat(_) => vec![Capability::Completion],
        };
        if !self.images().is_empty() {
            needs.push(Capability::Vision);
        }
        if let Self::Chat(chat) = self
            && !chat.conversation.tools.is_empty()
            && chat.conversation.tool_choice != ToolChoice::None
        {
            needs.push(Capability::Tools);
        }
        Capabilities::of(needs)
    }

    /// Every image it shows, in order.
    pub fn images(&self) -> Vec<&Image> {
        match self {
            Self::Generate(r) => r.images.iter().collect(),
            Self::Chat(r) => r.conversation.images().collect(),
            Self::Embedding(_) => Vec::new(),
        }
    }

    /// The same, to be read or fetched, or their bytes loaded.
    pub fn images_mut(&mut self) -> Vec<&mut Image> {
        match self {
            Self::Generate(r) => r.images.iter_mut().collect(),
            Self::Chat(r) => r.conversation.images_mut().collect(),
            Self::Embedding(_) => Vec::new(),
        }
    }

    pub fn model(&self) -> &ModelName {
        match self {
            Self::Generate(r) => &r.model,
            Self::Chat(r) => &r.model,
            Self::Embedding(r) => &r.model,
        }
    }
}

impl GenerateRequest {
    pub fn parse(
        model: &str,
        prompt: String,
        options: Option<GenerationOptions>,
    ) -> Result<Self, ValidationError> {
        let model = ModelName::parse(model)?;
        check_text("prompt", &prompt)?;
        let mut options = options.unwrap_or_default().validate()?;
        let mut output = OutputFormat::Text;
        lift_format(&mut output, &mut options);
        Ok(Self {
            model,
            prompt,
            options,
            output,
            images: Vec::new(),
        })
    }

    /// The request with `images` shown with its prompt (at most [`MAX_IMAGES`]).
    pub fn with_images(mut self, images: Vec<Image>) -> Result<Self, ValidationError> {
        if images.len() > MAX_IMAGES {
            return Err(ValidationError::new(
                "images",
                format!("holds at most {MAX_IMAGES} images"),
            ));
        }
        self.images = images;
        Ok(self)
    }

    /// The request with its answer in the form `output` asks for (`field` names where it was
    /// given); a schema that does not compile is refused.
    pub fn with_output(
        mut self,
        output: OutputFormat,
        field: &str,
    ) -> Result<Self, ValidationError> {
        output
            .compile()
            .map_err(|message| ValidationError::new(format!("{field}.schema"), message))?;
        self.output = output;
        Ok(self)
    }
}

impl ChatRequest {
    /// A chat from a conversation a surface translated, checked whole.
    pub fn new(
        model: &str,
        mut conversation: Conversation,
        options: Option<GenerationOptions>,
    ) -> Result<Self, ValidationError> {
        let model = ModelName::parse(model)?;
        let mut options = options.unwrap_or_default().validate()?;
        if options.system.is_some() {
            return Err(ValidationError::new(
                "options.system",
                "chat takes its system prompt as a message with role `system`",
            ));
        }
        lift_format(&mut conversation.output, &mut options);
        conversation.check()?;
        Ok(Self {
            model,
            conversation,
            options,
            anthropic: None,
        })
    }
}

impl EmbeddingRequest {
    pub fn parse(model: &str, input: EmbeddingInput) -> Result<Self, ValidationError> {
        let model = ModelName::parse(model)?;
        match &input {
            EmbeddingInput::One(text) => check_text("input", text)?,
            EmbeddingInput::Many(texts) => {
                if texts.is_empty() || texts.len() > MAX_EMBEDDING_INPUTS {
                    return Err(ValidationError::new(
                        "input",
                        format!("must hold 1 to {MAX_EMBEDDING_INPUTS} texts"),
                    ));
                }
                for (i, text) in texts.iter().enumerate() {
                    check_text(&format!("input[{i}]"), text)?;
                }
            }
        }
        Ok(Self {
            model,
            input,
            dimensions: None,
        })
    }

    /// The request with its vectors cut to `dimensions` (1 to 65,536), if given.
    pub fn with_dimensions(mut self, dimensions: Option<u32>) -> Result<Self, ValidationError> {
        if let Some(d) = dimensions
            && !(1..=65_536).contains(&d)
        {
            return Err(ValidationError::new(
                "dimensions",
                "must be between 1 and 65536",
            ));
        }
        self.dimensions = dimensions;
        Ok(self)
    }
}

fn check_text(field: &str, text: &str) -> Result<(), ValidationError> {
    if text.trim().is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::conversation::Role;
    use super::*;

    #[test]
    fn a_routes_max_tokens_stands_in_only_for_a_request_without_one() {
        let chat = |options: serde_json::Value| -> JobRequest {
            serde_json::from_value(serde_json::json!({ "kind": "chat", "model": "m",
                "messages": [{ "role": "user", "content": "Hi" }], "options": options }))
            .expect("a chat")
        };
        let defaulted = chat(serde_json::json!({})).with_default_max_tokens(64);
        assert_eq!(defaulted.map(|r| r.max_completion_tokens(0)), Some(64));
        let given = chat(serde_json::json!({ "max_tokens": 10 }));
        assert_eq!(
            given.with_default_max_tokens(64),
            None,
            "the client's stands"
        );
    }

    #[test]
    fn a_model_name_with_a_space_is_refused() {
        let err = ModelName::parse("llama 3").unwrap_err();
        assert_eq!(err.field, "model");
        assert!(ModelName::parse("library/llama3:8b-instruct_q4.0").is_ok());
    }

    #[test]
    fn an_empty_prompt_names_the_prompt() {
        let err = GenerateRequest::parse("llama3", "  ".into(), None).unwrap_err();
        assert_eq!(err.field, "prompt");
    }

    #[test]
    fn out_of_range_options_name_the_option() {
        let options = GenerationOptions {
            temperature: Some(3.0),
            ..Default::default()
        };
        let err = GenerateRequest::parse("llama3", "hi".into(), Some(options)).unwrap_err();
        assert_eq!(err.field, "options.temperature");
    }

    #[test]
    fn an_empty_chat_message_names_its_index() {
        let conversation = Conversation {
            messages: vec![
                Message::text(Role::User, "hi"),
                Message::text(Role::Assistant, " "),
            ],
            ..Conversation::default()
        };
        let err = ChatRequest::new("llama3", conversation, None).unwrap_err();
        assert_eq!(err.field, "messages[1]");
    }

    #[test]
    fn an_empty_embedding_list_is_refused() {
        let err =
            EmbeddingRequest::parse("nomic-embed-text", EmbeddingInput::Many(vec![])).unwrap_err();
        assert_eq!(err.field, "input");
    }

    #[test]
    fn a_generate_the_previous_release_stored_keeps_its_json_answer() {
        let stored = serde_json::json!({
            "kind": "generate", "model": "llama3", "prompt": "A mug, as JSON.",
            "options": { "format": "json" }
        });
        let JobRequest::Generate(generate) = serde_json::from_value(stored).expect("readable")
        else {
            panic!("a generate");
        };
        assert_eq!(generate.output, OutputFormat::JsonObject);
        assert_eq!(generate.options.format, None, "lifted into the output");
        let plain = serde_json::json!({ "kind": "generate", "model": "llama3", "prompt": "Hi" });
        let again = serde_json::to_value(
            serde_json::from_value::<JobRequest>(plain.clone()).expect("readable"),
        )
        .expect("writable");
        assert_eq!(again["prompt"], plain["prompt"]);
        assert!(
            again.get("output").is_none(),
            "a plain generate is stored as before"
        );
    }

    #[test]
    fn a_chat_the_previous_release_stored_reads_into_the_conversation_model() {
        let stored = serde_json::json!({
            "kind": "chat", "model": "llama3",
            "messages": [{ "role": "user", "content": "A mug, described." }],
            "options": { "format": "json", "temperature": 0.2 }
        });
        let JobRequest::Chat(chat) = serde_json::from_value(stored).expect("readable") else {
            panic!("a chat");
        };
        assert_eq!(
            chat.conversation.messages,
            [Message::text(Role::User, "A mug, described.")]
        );
        assert_eq!(chat.conversation.output, OutputFormat::JsonObject);
        assert_eq!(chat.options.format, None, "lifted into the output");
        assert_eq!(chat.options.temperature, Some(0.2));
        let again = serde_json::to_value(JobRequest::Chat(chat.clone())).expect("writable");
        assert_eq!(again["messages"][0]["content"], "A mug, described.");
        assert_eq!(again["output"]["type"], "json_object");
        assert_eq!(
            serde_json::from_value::<JobRequest>(again).expect("readable"),
            JobRequest::Chat(chat)
        );
    }

    #[test]
    fn a_stored_request_round_trips_with_its_kind_tag() {
        let request =
            JobRequest::Generate(GenerateRequest::parse("llama3", "hi".into(), None).unwrap());
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["kind"], "generate");
        assert_eq!(serde_json::from_value::<JobRequest>(json).unwrap(), request);
    }
}
