//! OpenAI's request dialect: Chat Completions, Responses and Embeddings bodies as far as Tollgate
//! runs them, turned into its own validated requests. Shared by the live surface
//! (`/openai/v1/chat/completions`, …) and the Batch API's input lines.
//!
//! Messages, tools, the tool choice and the answer's format are read into the conversation model
//! by [`super::conversation`], each image's place noted. Whatever Tollgate cannot honour (audio,
//! several choices streamed) is refused by name rather than silently dropped: an unknown parameter fails
//! deserialization with its path, and the few known ones that only some values of are honoured
//! are checked here.

use serde::Deserialize;

use tollgate_core::domain::conversation::{Conversation, Message, Role};
use tollgate_core::domain::{
    ChatRequest, EmbeddingInput, EmbeddingRequest, GenerationOptions, MAX_CHOICES, Reasoning,
    SEVERAL_NOT_STREAMED, ValidationError, asked_logprobs,
};

use crate::intake::images::ImagePlaces;

use super::conversation::{
    self, ChatTool, FunctionTool, OpenAiMessage, ResponseFormat, ResponsesItem, ToolChoiceBody,
};

/// A Chat Completions request.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OpenAiChatCompletionRequest)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionBody {
    pub model: String,
    pub messages: Vec<OpenAiMessage>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    pub response_format: Option<ResponseFormat>,
    pub tools: Option<Vec<ChatTool>>,
    pub tool_choice: Option<ToolChoiceBody>,
    /// Whether the model may call several tools in one turn (default true).
    pub parallel_tool_calls: Option<bool>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// How much a reasoning model reasons first (`none`, `minimal`, `low`, `medium`, `high`,
    /// `xhigh`); its reasoning, when the upstream gives it, comes back as `reasoning_content`.
    /// A preference: a model that cannot reason answers without it.
    pub reasoning_effort: Option<String>,
    /// How many choices to give (1 to 8; not streamed). A provider that gives one a call
    /// (Ollama) is called as many times, and billed as called.
    #[schema(minimum = 1, maximum = 8)]
    pub n: Option<u32>,
    /// Each choice's tokens with their log probabilities (`choices[].logprobs.content`), where
    /// the upstream gives them.
    pub logprobs: Option<bool>,
    /// How many likeliest alternatives each token comes with (0 to 20; needs `logprobs: true`).
    #[schema(minimum = 0, maximum = 20)]
    pub top_logprobs: Option<u32>,
    /// An end-user id for the provider's abuse monitoring; Tollgate has its own attribution.
    #[serde(rename = "user")]
    pub _user: Option<String>,
}

/// `stream_options` of a streamed Chat Completion.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OpenAiStreamOptions)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one text or several.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OpenAiStop)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// A Responses request.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OpenAiResponseRequest)]
#[serde(deny_unknown_fields)]
pub struct ResponsesBody {
    pub model: String,
    pub input: ResponsesInput,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub tools: Option<Vec<FunctionTool>>,
    pub tool_choice: Option<ToolChoiceBody>,
    pub parallel_tool_calls: Option<bool>,
    pub text: Option<TextOptions>,
    pub reasoning: Option<ReasoningOptions>,
    /// Extra output to include (`reasoning.encrypted_content`): accepted; a reasoning item
    /// carries its encrypted content whenever the upstream gives it.
    #[serde(rename = "include")]
    pub _include: Option<Vec<String>>,
    pub stream: Option<bool>,
    /// Responses are not kept for later reading; `store: false` says the same.
    #[serde(rename = "store")]
    pub _store: Option<bool>,
    #[serde(rename = "user")]
    pub _user: Option<String>,
}

/// The Responses API's `text`: the answer's `format`.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OpenAiResponseText)]
#[serde(deny_unknown_fields)]
pub struct TextOptions {
    format: Option<ResponseFormat>,
    /// `verbosity` is a preference only some models read; it is accepted and not acted on.
    #[serde(rename = "verbosity")]
    _verbosity: Option<String>,
}

/// The Responses API's `reasoning`.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OpenAiReasoning)]
#[serde(deny_unknown_fields)]
pub struct ReasoningOptions {
    /// `none`, `minimal`, `low`, `medium`, `high` or `xhigh`. A preference: a model that cannot
    /// reason answers without it.
    effort: Option<String>,
    /// Whether the upstream summarises its reasoning: accepted; a summary it gives is returned.
    #[serde(rename = "summary")]
    _summary: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OpenAiResponsesInput)]
#[serde(untagged)]
pub enum ResponsesInput {
    Text(String),
    Items(Vec<ResponsesItem>),
}

/// An Embeddings request.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = OpenAiEmbeddingRequest)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsBody {
    pub model: String,
    pub input: EmbeddingInput,
    pub encoding_format: Option<EncodingFormat>,
    pub dimensions: Option<u32>,
    #[serde(rename = "user")]
    pub _user: Option<String>,
}

/// How vectors are written: JSON numbers, or the little-endian `f32` bytes in base64 (what the
/// official Python package asks for by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[schema(as = OpenAiEncodingFormat)]
#[serde(rename_all = "snake_case")]
pub enum EncodingFormat {
    #[default]
    Float,
    Base64,
}

/// A Chat Completion as Tollgate runs it.
pub struct ChatCompletion {
    pub request: ChatRequest,
    /// Where its images were given.
    pub places: ImagePlaces,
    pub stream: bool,
    /// A streamed answer ends with a usage chunk.
    pub include_usage: bool,
}

impl ChatCompletionBody {
    pub fn parse(self) -> Result<ChatCompletion, ValidationError> {
        let stream = self.stream == Some(true);
        let n = match self.n {
            None => None,
            Some(n @ 1..=8) => Some(n as u8),
            Some(_) => {
                return Err(ValidationError::new(
                    "n",
                    format!("must be between 1 and {MAX_CHOICES}"),
                ));
            }
        };
        if stream && n.is_some_and(|n| n > 1) {
            return Err(ValidationError::new("n", SEVERAL_NOT_STREAMED));
        }
        let logprobs = asked_logprobs(self.logprobs, self.top_logprobs)?;
        if self.stream_options.is_some() && !stream {
            return Err(ValidationError::new(
                "stream_options",
                "is only allowed with \"stream\": true",
            ));
        }
        let mut places = ImagePlaces::default();
        let conversation = Conversation {
            messages: conversation::chat_messages(self.messages, &mut places)?,
            tools: conversation::chat_tools(self.tools.unwrap_or_default())?,
            tool_choice: ToolChoiceBody::read(self.tool_choice)?,
            parallel_tool_calls: self.parallel_tool_calls.unwrap_or(true),
            output: self
                .response_format
                .map(|f| f.into_output("response_format"))
                .transpose()?
                .unwrap_or_default(),
        };
        let options = GenerationOptions {
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            seed: self.seed,
            stop: self.stop.map(|stop| match stop {
                Stop::One(text) => vec![text],
                Stop::Many(texts) => texts,
            }),
            format: None,
            system: None,
            reasoning: self
                .reasoning_effort
                .map(|effort| Reasoning::from_openai(&effort, "reasoning_effort"))
                .transpose()?,
            n,
            logprobs,
        };
        let request = ChatRequest::new(&self.model, conversation, Some(options))
            .map_err(|error| chat_field(error.unnest("options.")))?;
        Ok(ChatCompletion {
            request,
            places,
            stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
        })
    }
}

/// A Responses request as Tollgate runs it: a conversation (the instructions its system message).
pub struct Response {
    pub request: ChatRequest,
    pub places: ImagePlaces,
    pub stream: bool,
}

impl ResponsesBody {
    pub fn parse(self) -> Result<Response, ValidationError> {
        let mut messages = Vec::new();
        let mut places = ImagePlaces::default();
        if let Some(instructions) = self.instructions {
            messages.push(Message::text(Role::System, instructions));
        }
        match self.input {
            ResponsesInput::Text(content) => messages.push(Message::text(Role::User, content)),
            ResponsesInput::Items(items) => {
                conversation::response_items(items, &mut messages, &mut places)?
            }
        }
        let output = match self.text.and_then(|text| text.format) {
            Some(format) => format.into_output("text.format")?,
            None => Default::default(),
        };
        let conversation = Conversation {
            messages,
            tools: conversation::response_tools(self.tools.unwrap_or_default())?,
            tool_choice: ToolChoiceBody::read(self.tool_choice)?,
            parallel_tool_calls: self.parallel_tool_calls.unwrap_or(true),
            output,
        };
        let effort = self.reasoning.and_then(|r| r.effort);
        let options = GenerationOptions {
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_output_tokens,
            reasoning: effort
                .map(|effort| Reasoning::from_openai(&effort, "reasoning.effort"))
                .transpose()?,
            ..GenerationOptions::default()
        };
        let request = ChatRequest::new(&self.model, conversation, Some(options)).map_err(|e| {
            match e.field.as_str() {
                "options.max_tokens" => ValidationError::new("max_output_tokens", e.message),
                "output.name" => ValidationError::new("text.format.name", e.message),
                "output.schema" => ValidationError::new("text.format.schema", e.message),
                _ => e.unnest("options."),
            }
        })?;
        Ok(Response {
            request,
            places,
            stream: self.stream == Some(true),
        })
    }
}

impl EmbeddingsBody {
    pub fn parse(self) -> Result<(EmbeddingRequest, EncodingFormat), ValidationError> {
        let request =
            EmbeddingRequest::parse(&self.model, self.input)?.with_dimensions(self.dimensions)?;
        Ok((request, self.encoding_format.unwrap_or_default()))
    }
}

/// A conversation's field as Chat Completions names it.
fn chat_field(error: ValidationError) -> ValidationError {
    match error.field.as_str() {
        "output.name" => ValidationError::new("response_format.json_schema.name", error.message),
        "output.schema" => {
            ValidationError::new("response_format.json_schema.schema", error.message)
        }
        _ => error,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use tollgate_core::domain::conversation::{OutputFormat, Role};

    use super::*;

    fn chat(body: Value) -> Result<ChatCompletion, ValidationError> {
        serde_json::from_value::<ChatCompletionBody>(body)
            .expect("a chat body")
            .parse()
    }

    #[test]
    fn a_chat_completion_takes_openai_options() {
        let parsed = chat(json!({
            "model": "m", "max_completion_tokens": 9, "stop": "END", "seed": 3,
            "response_format": { "type": "json_object" }, "stream": true,
            "stream_options": { "include_usage": true },
            "messages": [{ "role": "developer", "content": "Be brief." },
                         { "role": "user", "content": [{ "type": "text", "text": "Hi" }] }],
        }))
        .expect("valid");
        let options = &parsed.request.options;
        assert_eq!(options.max_tokens, Some(9));
        assert_eq!(options.stop.as_deref(), Some(&["END".to_owned()][..]));
        let conversation = &parsed.request.conversation;
        assert_eq!(conversation.output, OutputFormat::JsonObject);
        assert_eq!(conversation.messages[0].role, Role::System);
        assert!(parsed.stream && parsed.include_usage);
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let base = |extra: Value| {
            let mut body =
                json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }] });
            body.as_object_mut()
                .expect("object")
                .extend(extra.as_object().expect("object").clone());
            body
        };
        for (extra, field) in [
            (json!({ "n": 9 }), "n"),
            (json!({ "n": 2, "stream": true }), "n"),
            (json!({ "top_logprobs": 3 }), "top_logprobs"),
            (
                json!({ "logprobs": true, "top_logprobs": 21 }),
                "top_logprobs",
            ),
            (
                json!({ "stream_options": { "include_usage": true } }),
                "stream_options",
            ),
            (json!({ "temperature": 5 }), "temperature"),
            (
                json!({ "response_format": { "type": "xml" } }),
                "response_format.type",
            ),
            (
                json!({ "response_format": { "type": "json_schema" } }),
                "response_format.name",
            ),
            (
                json!({ "tools": [{ "type": "web_search", "function": { "name": "f" } }] }),
                "tools[0].type",
            ),
            (json!({ "stop": ["a", "b", "c", "d", "e"] }), "stop"),
        ] {
            let error = chat(base(extra)).err().expect("refused");
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn embeddings_take_their_format_and_dimensions() {
        let body: EmbeddingsBody = serde_json::from_value(
            json!({ "model": "e", "input": ["a"], "encoding_format": "base64", "dimensions": 8 }),
        )
        .expect("an embeddings body");
        let (request, format) = body.parse().expect("valid");
        assert_eq!(
            (request.dimensions, format),
            (Some(8), EncodingFormat::Base64)
        );
    }
}
