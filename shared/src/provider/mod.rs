//! Provider clients: a local Ollama, the OpenAI API (OpenAI's own, or an OpenAI-compatible
//! server's) and Anthropic's Messages API, behind one enum; `ollama_messages` and
//! `openai_messages` write a conversation in each one's form, `openai_requests` writes OpenAI's
//! request bodies and `openai_answers` reads its answers, `anthropic_messages` writes Anthropic's
//! bodies and reads its answers, `anthropic_wire` holds Anthropic's wire types (which the
//! `/anthropic` surface speaks too); `ollama_models` manages Ollama's models and `listing` lists
//! what a fleet host serves, whatever its kind.
//!
//! Each client speaks its own wire format and returns the provider-reported token counts. Failures
//! are classified where they happen ([`ProviderError`]), so the worker can decide what to do
//! without knowing HTTP.

mod anthropic;
mod anthropic_messages;
pub mod anthropic_wire;
mod error;
mod http;
mod listing;
mod ollama;
mod ollama_messages;
mod ollama_models;
mod openai;
mod openai_answers;
mod openai_messages;
mod openai_requests;

use serde_json::Value;

pub use error::{ProviderError, parse_retry_after};
pub use http::traced;

pub use anthropic::{ANTHROPIC_CONTENT, AnthropicClient};
pub use anthropic_messages::DEFAULT_MAX_TOKENS;
pub use listing::{CompatibleModels, HostListing};
pub use ollama::OllamaClient;
pub use ollama_models::{DeleteError, InstalledModel, OllamaModels, model_key};
pub use openai::OpenAiClient;

use crate::domain::conversation::{Reply, choices_result};
use crate::domain::{JobErrorCode, JobRequest, Reasoning};

/// What a successful provider call produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The job's `result` JSON: `{text, finish_reason}`, `{message, finish_reason}` (see
    /// [`Reply`]) or `{embeddings}` by kind.
    pub result: Value,
    /// The model the provider says answered.
    pub upstream_model: String,
    /// The provider-reported counts; `None` when it reported none.
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    /// The parts of them it reported (0 for a part it did not).
    pub details: TokenDetails,
    pub status_code: u16,
}

/// Token counts for billing: the provider's, or estimated with a tokenizer when it gave none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCounts {
    pub prompt: i32,
    pub completion: i32,
    pub details: TokenDetails,
    /// Whether any count was estimated.
    pub estimated: bool,
}

/// The parts of a call's counts a provider reports besides: completion tokens spent reasoning,
/// prompt tokens read from its cache, prompt tokens written to it (Anthropic's
/// `cache_creation_input_tokens`). Each is within its count, never added to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenDetails {
    pub reasoning: i32,
    pub cached: i32,
    pub cache_written: i32,
}

impl TokenDetails {
    /// OpenAI's `completion_tokens_details.reasoning_tokens` (`output_tokens_details` on the
    /// Responses API) and `prompt_tokens_details.cached_tokens` (`input_tokens_details`).
    pub fn of_openai(reasoning: Option<i32>, cached: Option<i32>) -> Self {
        Self {
            reasoning: reasoning.unwrap_or(0),
            cached: cached.unwrap_or(0),
            cache_written: 0,
        }
    }
}

impl Completion {
    /// The counts to bill `request` by.
    pub fn token_counts(&self, request: &JobRequest) -> TokenCounts {
        let prompt = self
            .prompt_tokens
            .unwrap_or_else(|| crate::billing::estimate_tokens(&request.input_text()));
        let replies = self.replies();
        let completion = self.completion_tokens.unwrap_or_else(|| {
            let written: String = replies.iter().map(Reply::written).collect();
            crate::billing::estimate_tokens(&written)
        });
        // A provider that shows its reasoning and counts none of it (Ollama) spent about what
        // the reasoning's text holds.
        let reasoning = match self.details.reasoning {
            0 => {
                let thought: String = replies
                    .iter()
                    .filter_map(|reply| reply.thinking.as_ref())
                    .map(|thinking| thinking.text.as_str())
                    .collect();
                crate::billing::estimate_tokens(&thought)
            }
            counted => counted,
        };
        let cached = self.details.cached.clamp(0, prompt);
        let details = TokenDetails {
            reasoning: reasoning.clamp(0, completion),
            cached,
            cache_written: self.details.cache_written.clamp(0, prompt - cached),
        };
        TokenCounts {
            prompt,
            completion,
            details,
            estimated: self.prompt_tokens.is_none() || self.completion_tokens.is_none(),
        }
    }

    /// A generate or chat job's reply (its first, when it asked for several); `None` for
    /// embeddings.
    pub fn reply(&self) -> Option<Reply> {
        Reply::from_any_result(&self.result)
    }

    /// Every reply it holds, in order (none for embeddings).
    pub fn replies(&self) -> Vec<Reply> {
        crate::domain::conversation::replies_of(&self.result)
    }
}

/// Refuses an embeddings answer whose vector count does not match the inputs: results are matched
/// to inputs by position, so a short answer would silently misalign them.
fn check_embedding_count(
    provider: &str,
    inputs: usize,
    vectors: usize,
) -> Result<(), ProviderError> {
    if inputs == vectors {
        return Ok(());
    }
    Err(ProviderError::new(
        JobErrorCode::InvalidProviderResponse,
        format!("{provider} returned {vectors} embeddings for {inputs} inputs"),
    ))
}

/// A piece of a streamed answer, as the provider writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta<'a> {
    Text(&'a str),
    /// The model's reasoning, which comes before its text.
    Thinking(&'a str),
    /// A piece of the provider's signature of the reasoning (Anthropic's), after it.
    Signature(&'a str),
    /// A block the provider wrote that is passed on whole (Anthropic's redacted reasoning, a
    /// server tool's call or result), in its own form.
    Block(&'a Value),
}

/// Where a streaming call's pieces go, one at a time, as the provider writes them.
pub type OnDelta<'a> = &'a mut (dyn FnMut(Delta<'_>) + Send);

/// Marks a job's `result` as answered without the reasoning its request asked for: the step's
/// model cannot reason, so it was called without it.
pub fn mark_reasoning_dropped(result: &mut Value) {
    if let Value::Object(result) = result {
        result.insert("reasoning_dropped".into(), Value::Bool(true));
    }
}

/// A tool offered, as Ollama and Chat Completions both take it (`{"type": "function",
/// "function": {name, description, parameters}}`).
fn function_tool(tool: &crate::domain::conversation::Tool) -> Value {
    let mut function = serde_json::json!({ "name": tool.name, "parameters": tool.parameters });
    if let Some(description) = &tool.description {
        function["description"] = serde_json::json!(description);
    }
    serde_json::json!({ "type": "function", "function": function })
}

/// An image's type and its bytes in base64, as both providers take them. Its bytes are loaded
/// by the worker before any call; one without them is never sent empty.
fn image_base64(
    image: &crate::domain::conversation::Image,
) -> Result<(&'static str, String), ProviderError> {
    image_text(image, "")
}

/// `prefix` followed by the image's bytes in base64, written once into one string (an image's
/// text is megabytes: a `data:` URL is not made by copying it again), with the image's type.
fn image_text(
    image: &crate::domain::conversation::Image,
    prefix: &str,
) -> Result<(&'static str, String), ProviderError> {
    image
        .kept()
        .and_then(|kept| {
            let text = kept.base64_after(prefix)?;
            Some((kept.media_type.as_str(), text))
        })
        .ok_or_else(|| {
            ProviderError::new(
                JobErrorCode::InternalError,
                "an image's bytes were not loaded before the call",
            )
        })
}

/// A generate or chat job's `result` for its reply.
pub fn reply_result(request: &JobRequest, reply: &Reply) -> Value {
    replies_result(request, std::slice::from_ref(reply))
}

/// The same for its replies (several when it asked for more than one answer).
pub fn replies_result(request: &JobRequest, replies: &[Reply]) -> Value {
    match request {
        JobRequest::Chat(_) => choices_result(replies, Reply::to_result),
        JobRequest::Generate(_) | JobRequest::Embedding(_) => {
            choices_result(replies, Reply::generated_result)
        }
    }
}

/// A generate or chat job's `result` for text alone, whose end is not known (a stream cut short).
pub fn text_result(request: &JobRequest, text: String) -> Value {
    reply_result(request, &Reply::text(text, None))
}

/// A configured provider. Only Anthropic's failures keep the provider's own error body (its
/// clients read its wording); the others' may echo a key, and no client of theirs needs it.
#[derive(Clone)]
pub enum Provider {
    Ollama(OllamaClient),
    OpenAi(OpenAiClient),
    Anthropic(AnthropicClient),
}

impl Provider {
    /// Runs `request` on the upstream model `model`, sending `reasoning` in place of what the
    /// request asks (see [`crate::domain::reasoning::for_call`]).
    pub async fn run(
        &self,
        request: &JobRequest,
        model: &str,
        reasoning: Option<Reasoning>,
    ) -> Result<Completion, ProviderError> {
        match self {
            Self::Ollama(client) => client.run(request, model, reasoning).await,
            Self::OpenAi(client) => client.run(request, model, reasoning).await,
            Self::Anthropic(client) => return client.run(request, model, reasoning).await,
        }
        .map_err(ProviderError::without_body)
    }

    /// Runs `request` on `model` with its text streamed to `on_delta` as it is generated.
    pub async fn stream(
        &self,
        request: &JobRequest,
        model: &str,
        reasoning: Option<Reasoning>,
        on_delta: OnDelta<'_>,
    ) -> Result<Completion, ProviderError> {
        match self {
            Self::Ollama(client) => client.stream(request, model, reasoning, on_delta).await,
            Self::OpenAi(client) => client.stream(request, model, reasoning, on_delta).await,
            Self::Anthropic(client) => {
                return client.stream(request, model, reasoning, on_delta).await;
            }
        }
        .map_err(ProviderError::without_body)
    }
}
