//! OpenAI's answers as the client reads them: a Responses answer's output items (messages,
//! refusals, reasoning with its summary and encrypted content), a Chat Completion's choices whole
//! or as a stream's chunks (text, tool call fragments, `reasoning_content`, log probabilities),
//! the usage with its reasoning and cached parts, and embeddings.

use serde::Deserialize;
use serde_json::Value;

use super::error::ProviderError;
use super::openai_messages::{CallFragment, CallsGathered};
use super::{Completion, TokenDetails};
use crate::domain::conversation::Reply;

#[derive(Deserialize)]
pub(super) struct ResponsesAnswer {
    pub(super) model: String,
    #[serde(default)]
    pub(super) output: Vec<OutputItem>,
    pub(super) usage: Option<ResponsesUsage>,
    pub(super) incomplete_details: Option<IncompleteDetails>,
}

#[derive(Deserialize)]
pub(super) struct IncompleteDetails {
    pub(super) reason: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct OutputItem {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) content: Vec<OutputContent>,
    /// A reasoning item's summary, and its reasoning encrypted (kept as its signature).
    #[serde(default)]
    pub(super) summary: Vec<OutputContent>,
    pub(super) encrypted_content: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct OutputContent {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) text: String,
    #[serde(default)]
    pub(super) refusal: String,
}

#[derive(Deserialize)]
pub(super) struct ResponsesUsage {
    pub(super) input_tokens: i32,
    pub(super) output_tokens: i32,
    pub(super) input_tokens_details: Option<CachedDetails>,
    pub(super) output_tokens_details: Option<ReasoningDetails>,
}

/// `prompt_tokens_details` (`input_tokens_details` on the Responses API).
#[derive(Deserialize)]
pub(super) struct CachedDetails {
    pub(super) cached_tokens: Option<i32>,
}

/// `completion_tokens_details` (`output_tokens_details` on the Responses API).
#[derive(Deserialize)]
pub(super) struct ReasoningDetails {
    pub(super) reasoning_tokens: Option<i32>,
}

/// A Chat Completion, whole or one chunk of its stream.
#[derive(Deserialize)]
pub(super) struct ChatCompletion {
    #[serde(default)]
    pub(super) model: String,
    #[serde(default)]
    pub(super) choices: Vec<Choice>,
    pub(super) usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
pub(super) struct Choice {
    #[serde(default)]
    pub(super) index: u32,
    /// A streamed chunk's piece.
    pub(super) delta: Option<ChoiceMessage>,
    /// A whole answer's message.
    pub(super) message: Option<ChoiceMessage>,
    pub(super) finish_reason: Option<String>,
    pub(super) logprobs: Option<ChoiceLogprobs>,
}

/// A choice's log probabilities: its tokens' (a chunk's own, when streamed).
#[derive(Deserialize)]
pub(super) struct ChoiceLogprobs {
    pub(super) content: Option<Vec<Value>>,
}

impl Choice {
    /// A whole answer's choice as its reply.
    pub(super) fn into_reply(self) -> Result<Reply, ProviderError> {
        let mut calls = CallsGathered::default();
        let (text, refusal, thinking) = match self.message {
            Some(message) => {
                calls.add(message.tool_calls);
                let thinking = message.reasoning_content.or(message.reasoning);
                (
                    message.content.unwrap_or_default(),
                    message.refusal,
                    thinking,
                )
            }
            None => (String::new(), None, None),
        };
        let reason = self.finish_reason.as_deref();
        let mut reply = Reply::answered(text, calls.into_calls()?, refusal, reason)
            .with_thinking(thinking.unwrap_or_default(), None);
        reply.logprobs = self.logprobs.and_then(|l| l.content).map(Value::Array);
        Ok(reply)
    }
}

#[derive(Deserialize)]
pub(super) struct ChoiceMessage {
    pub(super) content: Option<String>,
    pub(super) refusal: Option<String>,
    /// The reasoning OpenAI-compatible servers give: `reasoning_content` (vLLM, DeepSeek) or
    /// `reasoning` (Ollama's and OpenRouter's OpenAI layers).
    pub(super) reasoning_content: Option<String>,
    pub(super) reasoning: Option<String>,
    #[serde(default)]
    pub(super) tool_calls: Vec<CallFragment>,
}

#[derive(Deserialize)]
pub(super) struct ChatUsage {
    pub(super) prompt_tokens: i32,
    pub(super) completion_tokens: i32,
    pub(super) prompt_tokens_details: Option<CachedDetails>,
    pub(super) completion_tokens_details: Option<ReasoningDetails>,
}

impl ChatUsage {
    pub(super) fn details(&self) -> TokenDetails {
        TokenDetails::of_openai(
            self.completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
            self.prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
        )
    }
}

impl ResponsesUsage {
    pub(super) fn details(&self) -> TokenDetails {
        TokenDetails::of_openai(
            self.output_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
            self.input_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
        )
    }
}

#[derive(Deserialize)]
pub(super) struct EmbeddingsAnswer {
    pub(super) model: String,
    pub(super) data: Vec<EmbeddingItem>,
    pub(super) usage: Option<EmbeddingsUsage>,
}

#[derive(Deserialize)]
pub(super) struct EmbeddingItem {
    pub(super) index: usize,
    pub(super) embedding: Vec<f32>,
}

#[derive(Deserialize)]
pub(super) struct EmbeddingsUsage {
    pub(super) prompt_tokens: i32,
}

impl ResponsesAnswer {
    /// The assistant's reply — its output text joined, a refusal, its reasoning (the summaries
    /// joined, the last encrypted content as its signature) and a cut short answer's reason —
    /// and the call's counts (its `result` left for the caller to write).
    pub(super) fn read(self, status: u16) -> (Reply, Completion) {
        let answer = self;
        let contents = || {
            answer
                .output
                .iter()
                .filter(|item| item.kind == "message")
                .flat_map(|item| &item.content)
        };
        let text: String = contents()
            .filter(|content| content.kind == "output_text")
            .map(|content| content.text.as_str())
            .collect();
        let refusal: Option<String> = contents()
            .find(|content| content.kind == "refusal")
            .map(|content| content.refusal.clone());
        let reason = answer
            .incomplete_details
            .as_ref()
            .and_then(|d| d.reason.as_deref());
        let reasoned = || answer.output.iter().filter(|item| item.kind == "reasoning");
        let thinking: String = reasoned()
            .flat_map(|item| &item.summary)
            .map(|summary| summary.text.as_str())
            .collect();
        let signature = reasoned()
            .filter_map(|item| item.encrypted_content.clone())
            .next_back();
        let reply =
            Reply::answered(text, Vec::new(), refusal, reason).with_thinking(thinking, signature);
        let completion = Completion {
            result: Value::Null,
            upstream_model: answer.model,
            prompt_tokens: answer.usage.as_ref().map(|u| u.input_tokens),
            completion_tokens: answer.usage.as_ref().map(|u| u.output_tokens),
            details: answer
                .usage
                .as_ref()
                .map(ResponsesUsage::details)
                .unwrap_or_default(),
            status_code: status,
        };
        (reply, completion)
    }
}
