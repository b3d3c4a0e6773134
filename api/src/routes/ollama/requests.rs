//! Ollama's request dialect: `/api/chat`, `/api/generate`, `/api/embed` and the older
//! `/api/embeddings` bodies as far as Tollgate runs them, turned into its own validated requests.
//!
//! Ollama streams by default (`stream` left out means `true`). Messages, tools and `format` (`"json"`
//! or a JSON schema) and images (bare base64) are read into the conversation model by
//! [`super::conversation`]; `think` (a boolean or a level) is the request's reasoning. What Tollgate cannot honour (raw prompts, templates, unknown options)
//! is refused by name;
//! `keep_alive` (how long Ollama keeps a model loaded) is the gateway's business and is accepted
//! and left to the providers' own settings.

use serde::Deserialize;
use serde_json::{Value, json};

use tollgate_core::domain::conversation::Conversation;
use tollgate_core::domain::{
    ChatRequest, EmbeddingInput, EmbeddingRequest, GenerateRequest, GenerationOptions,
    MAX_STOP_TEXTS, Reasoning, ValidationError, asked_logprobs,
};

use super::conversation::{self, OllamaMessage, OllamaTool};
use crate::intake::images::ImagePlaces;

/// `options`, as far as they mean something to every provider.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OllamaOptions {
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f64>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    #[schema(minimum = 1, maximum = 131_072)]
    pub num_predict: Option<u32>,
    /// At most 4, each 1 to 200 bytes.
    #[schema(max_items = 4)]
    pub stop: Option<Vec<String>>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OllamaChatRequest)]
#[serde(deny_unknown_fields)]
pub struct ChatBody {
    #[schema(example = "llama3")]
    pub model: String,
    #[schema(min_items = 1, max_items = 256)]
    pub messages: Vec<OllamaMessage>,
    /// The tools the model may call (the official client sends a list, empty without tools).
    #[schema(max_items = 128)]
    pub tools: Option<Vec<OllamaTool>>,
    #[schema(schema_with = think)]
    pub think: Option<Value>,
    /// The answer's tokens with their log probabilities (`logprobs`), where the upstream gives
    /// them.
    pub logprobs: Option<bool>,
    /// How many likeliest alternatives each token comes with (0 to 20; needs `logprobs`).
    #[schema(minimum = 0, maximum = 20)]
    pub top_logprobs: Option<u32>,
    pub stream: Option<bool>,
    #[schema(schema_with = json_format)]
    pub format: Option<Value>,
    pub options: Option<OllamaOptions>,
    #[serde(rename = "keep_alive")]
    pub _keep_alive: Option<Value>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OllamaGenerateRequest)]
#[serde(deny_unknown_fields)]
pub struct GenerateBody {
    #[schema(example = "llama3")]
    pub model: String,
    pub prompt: String,
    pub system: Option<String>,
    /// Images shown with the prompt, each bare base64 (PNG, JPEG, WebP or GIF).
    #[schema(max_items = 16)]
    pub images: Option<Vec<String>>,
    #[schema(schema_with = think)]
    pub think: Option<Value>,
    /// The answer's tokens with their log probabilities (`logprobs`), where the upstream gives
    /// them.
    pub logprobs: Option<bool>,
    /// How many likeliest alternatives each token comes with (0 to 20; needs `logprobs`).
    #[schema(minimum = 0, maximum = 20)]
    pub top_logprobs: Option<u32>,
    pub stream: Option<bool>,
    #[schema(schema_with = json_format)]
    pub format: Option<Value>,
    pub options: Option<OllamaOptions>,
    #[serde(rename = "keep_alive")]
    pub _keep_alive: Option<Value>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OllamaEmbedRequest)]
#[serde(deny_unknown_fields)]
pub struct EmbedBody {
    pub model: String,
    pub input: EmbeddingInput,
    pub dimensions: Option<u32>,
    /// Ollama cuts inputs longer than the model's context unless told not to; Tollgate's
    /// providers decide that themselves.
    #[serde(rename = "truncate")]
    pub _truncate: Option<bool>,
    pub options: Option<Value>,
    #[serde(rename = "keep_alive")]
    pub _keep_alive: Option<Value>,
}

/// The older `/api/embeddings`: one prompt, one vector.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OllamaEmbeddingsRequest)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsBody {
    pub model: String,
    pub prompt: String,
    pub options: Option<Value>,
    #[serde(rename = "keep_alive")]
    pub _keep_alive: Option<Value>,
}

/// `think` as it is taken: a boolean or a level.
fn think() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .enum_values(Some([
            json!(true),
            json!(false),
            json!("low"),
            json!("medium"),
            json!("high"),
            json!("max"),
        ]))
        .description(Some(
            "Whether (or how much) the model reasons first; its reasoning comes back as              `thinking`. A preference: a model that cannot reason answers without it. Left out,              a thinking model is told not to think.",
        ))
        .build()
}

/// `format` as it is taken: `"json"`, a JSON schema, or nothing.
fn json_format() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .description(Some(
            "`\"json\"` for one JSON object, or a JSON schema the answer must match (checked: an \
             answer that does not match is asked for again, then the call fails)",
        ))
        .build()
}

/// A call in Ollama's dialect: the request, where its images were given, and whether its
/// answer streams.
pub struct Call<T> {
    pub request: T,
    pub places: ImagePlaces,
    pub stream: bool,
}

impl ChatBody {
    pub fn parse(self) -> Result<Call<ChatRequest>, ValidationError> {
        let mut options = options(self.options)?;
        options.reasoning = Reasoning::from_ollama(&self.think.unwrap_or_default())?;
        options.logprobs = asked_logprobs(self.logprobs, self.top_logprobs)?;
        let mut places = ImagePlaces::default();
        let conversation = Conversation {
            messages: conversation::messages(self.messages, &mut places)?,
            tools: conversation::tools(self.tools.unwrap_or_default())?,
            output: conversation::output(self.format)?,
            ..Conversation::default()
        };
        let request =
            ChatRequest::new(&self.model, conversation, Some(options)).map_err(format_field)?;
        Ok(Call {
            request,
            places,
            stream: self.stream != Some(false),
        })
    }
}

impl GenerateBody {
    pub fn parse(self) -> Result<Call<GenerateRequest>, ValidationError> {
        let mut options = options(self.options)?;
        options.system = self.system;
        options.reasoning = Reasoning::from_ollama(&self.think.unwrap_or_default())?;
        options.logprobs = asked_logprobs(self.logprobs, self.top_logprobs)?;
        let output = conversation::output(self.format)?;
        let mut places = ImagePlaces::default();
        let images = conversation::images(self.images.unwrap_or_default(), "images", &mut places);
        let request = GenerateRequest::parse(&self.model, self.prompt, Some(options))?
            .with_output(output, "format")
            .map_err(format_field)?
            .with_images(images)?;
        Ok(Call {
            request,
            places,
            stream: self.stream != Some(false),
        })
    }
}

impl EmbedBody {
    pub fn parse(self) -> Result<EmbeddingRequest, ValidationError> {
        no_options(self.options.as_ref())?;
        EmbeddingRequest::parse(&self.model, self.input)?.with_dimensions(self.dimensions)
    }
}

impl EmbeddingsBody {
    pub fn parse(self) -> Result<EmbeddingRequest, ValidationError> {
        no_options(self.options.as_ref())?;
        EmbeddingRequest::parse(&self.model, EmbeddingInput::One(self.prompt)).map_err(|e| match e
            .field
            .as_str()
        {
            "input" => ValidationError::new("prompt", e.message),
            _ => e,
        })
    }
}

/// Embeddings take no sampling options; an empty object is what some clients send.
fn no_options(options: Option<&Value>) -> Result<(), ValidationError> {
    match options {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(o)) if o.is_empty() => Ok(()),
        Some(_) => Err(ValidationError::new(
            "options",
            "embeddings take no options",
        )),
    }
}

/// A schema's refusal named as Ollama's `format` (the schema itself).
fn format_field(error: ValidationError) -> ValidationError {
    match error.field.as_str() {
        "output.schema" | "output.name" | "format.schema" => {
            ValidationError::new("format", error.message)
        }
        _ => error,
    }
}

/// Ollama's options as Tollgate's.
fn options(given: Option<OllamaOptions>) -> Result<GenerationOptions, ValidationError> {
    let given = given.unwrap_or_default();
    if given
        .stop
        .as_ref()
        .is_some_and(|s| s.len() > MAX_STOP_TEXTS)
    {
        return Err(ValidationError::new(
            "options.stop",
            format!("holds at most {MAX_STOP_TEXTS} texts"),
        ));
    }
    let options = GenerationOptions {
        temperature: given.temperature,
        top_p: given.top_p,
        max_tokens: given.num_predict,
        seed: given.seed,
        stop: given.stop,
        format: None,
        system: None,
        reasoning: None,
        n: None,
        logprobs: None,
    };
    options.validate().map_err(|e| match e.field.as_str() {
        "options.max_tokens" => ValidationError::new("options.num_predict", e.message),
        _ => e,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tollgate_core::domain::conversation::OutputFormat;

    use super::*;

    #[test]
    fn ollama_streams_unless_told_not_to_and_takes_its_options() {
        let body: ChatBody = serde_json::from_value(json!({
            "model": "llama3", "format": "json", "keep_alive": "5m",
            "options": { "num_predict": 7, "stop": ["\n"], "temperature": 0.2 },
            "messages": [{ "role": "user", "content": "Hi" }],
        }))
        .expect("a chat body");
        let call = body.parse().expect("valid");
        assert!(call.stream);
        assert_eq!(call.request.options.max_tokens, Some(7));
        assert_eq!(call.request.conversation.output, OutputFormat::JsonObject);
        let body: GenerateBody = serde_json::from_value(
            json!({ "model": "llama3", "prompt": "Hi", "system": "Terse.", "stream": false }),
        )
        .expect("a generate body");
        let call = body.parse().expect("valid");
        assert!(!call.stream);
        assert_eq!(call.request.options.system.as_deref(), Some("Terse."));
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let chat = |extra: Value| {
            let mut body =
                json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }] });
            body.as_object_mut()
                .expect("object")
                .extend(extra.as_object().expect("object").clone());
            serde_json::from_value::<ChatBody>(body)
        };
        let format = chat(json!({ "format": { "type": 12 } })).expect("a body");
        assert_eq!(format.parse().err().expect("refused").field, "format");
        let predict = chat(json!({ "options": { "num_predict": 0 } })).expect("a body");
        assert_eq!(
            predict.parse().err().expect("refused").field,
            "options.num_predict"
        );
        let tools = chat(json!({ "tools": [{ "type": "retrieval",
                                               "function": { "name": "f" } }] }))
        .expect("a body");
        assert_eq!(tools.parse().err().expect("refused").field, "tools[0].type");
        assert!(
            chat(json!({ "tools": [] }))
                .expect("a body")
                .parse()
                .is_ok()
        );
        assert!(chat(json!({ "options": { "mirostat": 1 } })).is_err());
    }
}
