//! A client for the OpenAI API: the Responses API for generate and chat, `/embeddings` for vectors.
//! A streaming job, or one with `stop` texts (which the Responses API does not take), goes to Chat
//! Completions instead, streamed as SSE with the usage in its last chunk.
//!
//! `base_url` follows the official SDKs' convention and includes `/v1`
//! (`https://api.openai.com/v1`), so OpenAI-compatible servers configure the same way.

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;

use super::error::ProviderError;
use super::{Completion, OnDelta, http, openai_messages};
use crate::domain::JobErrorCode;
use crate::domain::{
    AnswerFormat, ChatRequest, EmbeddingRequest, GenerateRequest, GenerationOptions, JobRequest,
};

#[derive(Clone)]
pub struct OpenAiClient {
    base_url: String,
    api_key: SecretString,
    http: reqwest::Client,
    /// For streamed answers (see [`http::streaming_client`]).
    streaming: reqwest::Client,
}

#[derive(Deserialize)]
struct ResponsesAnswer {
    model: String,
    #[serde(default)]
    output: Vec<OutputItem>,
    usage: Option<ResponsesUsage>,
}

#[derive(Deserialize)]
struct OutputItem {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    content: Vec<OutputContent>,
}

#[derive(Deserialize)]
struct OutputContent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct ResponsesUsage {
    input_tokens: i32,
    output_tokens: i32,
}

/// A Chat Completion, whole or one chunk of its stream.
#[derive(Deserialize)]
struct ChatCompletion {
    #[serde(default)]
    model: String,
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
struct Choice {
    /// A streamed chunk's piece.
    delta: Option<ChoiceText>,
    /// A whole answer's message.
    message: Option<ChoiceText>,
}

#[derive(Deserialize)]
struct ChoiceText {
    content: Option<String>,
}

#[derive(Deserialize)]
struct ChatUsage {
    prompt_tokens: i32,
    completion_tokens: i32,
}

#[derive(Deserialize)]
struct EmbeddingsAnswer {
    model: String,
    data: Vec<EmbeddingItem>,
    usage: Option<EmbeddingsUsage>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct EmbeddingsUsage {
    prompt_tokens: i32,
}

impl OpenAiClient {
    pub fn new(base_url: &str, api_key: SecretString, timeout: Duration) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            http: http::client(timeout),
            streaming: http::streaming_client(timeout),
        }
    }

    /// Runs `request` on `model`, the upstream name the job's model routes to.
    pub async fn run(
        &self,
        request: &JobRequest,
        model: &str,
    ) -> Result<Completion, ProviderError> {
        match request {
            JobRequest::Generate(GenerateRequest { options, .. }) if options.stop.is_some() => {
                self.complete(request, model).await
            }
            JobRequest::Chat(r)
                if r.options.stop.is_some() || openai_messages::has_tool_parts(&r.conversation) =>
            {
                self.complete(request, model).await
            }
            JobRequest::Generate(r) => self.generate(r, model).await,
            JobRequest::Chat(r) => self.chat(r, model).await,
            JobRequest::Embedding(r) => self.embed(r, model).await,
        }
    }

    /// Runs `request` on `model` through Chat Completions with the answer streamed: each piece of
    /// text goes to `on_delta` as it arrives. Embeddings do not stream; they run as [`Self::run`]
    /// does.
    pub async fn stream(
        &self,
        request: &JobRequest,
        model: &str,
        on_delta: OnDelta<'_>,
    ) -> Result<Completion, ProviderError> {
        let mut body = match request {
            JobRequest::Embedding(r) => return self.embed(r, model).await,
            _ => chat_completions_body(request, model),
        };
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
        let call = self.authorized(&self.streaming, "/chat/completions", &body);
        let response = http::send(call, error_message)
            .await
            .map_err(|failure| self.redacted(failure))?;
        let status_code = response.status().as_u16();
        let mut events = response.bytes_stream().eventsource();
        let (mut text, mut upstream_model, mut usage) = (String::new(), String::new(), None);
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| match e {
                eventsource_stream::EventStreamError::Transport(e) => http::transport_error(e),
                other => http::unreadable(&other),
            })?;
            if event.data == "[DONE]" {
                return Ok(Completion {
                    result: super::text_result(request, text),
                    upstream_model,
                    prompt_tokens: usage.as_ref().map(|u: &ChatUsage| u.prompt_tokens),
                    completion_tokens: usage.map(|u| u.completion_tokens),
                    status_code,
                });
            }
            let value: Value =
                serde_json::from_str(&event.data).map_err(|e| http::unreadable(&e))?;
            if let Some(message) = error_message(&value) {
                let message = format!("OpenAI failed mid-answer: {message}");
                return Err(self.redacted(ProviderError::new(JobErrorCode::ProviderError, message)));
            }
            let chunk: ChatCompletion =
                serde_json::from_value(value).map_err(|e| http::unreadable(&e))?;
            if !chunk.model.is_empty() {
                upstream_model = chunk.model;
            }
            usage = chunk.usage.or(usage);
            let piece = chunk.choices.into_iter().find_map(|c| c.delta?.content);
            if let Some(piece) = piece.filter(|p| !p.is_empty()) {
                on_delta(&piece);
                text.push_str(&piece);
            }
        }
        Err(http::broken_stream())
    }

    /// A whole Chat Completion: what a job with `stop` texts runs.
    async fn complete(
        &self,
        request: &JobRequest,
        model: &str,
    ) -> Result<Completion, ProviderError> {
        let body = chat_completions_body(request, model);
        let (answer, status): (ChatCompletion, _) = self.post("/chat/completions", &body).await?;
        let text = answer
            .choices
            .into_iter()
            .find_map(|c| c.message?.content)
            .unwrap_or_default();
        Ok(Completion {
            result: super::text_result(request, text),
            upstream_model: answer.model,
            prompt_tokens: answer.usage.as_ref().map(|u| u.prompt_tokens),
            completion_tokens: answer.usage.map(|u| u.completion_tokens),
            status_code: status,
        })
    }

    async fn generate(
        &self,
        r: &GenerateRequest,
        model: &str,
    ) -> Result<Completion, ProviderError> {
        let mut body = responses_body(model, json!(r.prompt), &r.options);
        if let Some(system) = &r.options.system {
            body["instructions"] = json!(system);
        }
        let (text, completion) = self.respond(&body).await?;
        Ok(Completion {
            result: json!({ "text": text }),
            ..completion
        })
    }

    async fn chat(&self, r: &ChatRequest, model: &str) -> Result<Completion, ProviderError> {
        let input = openai_messages::messages(&r.conversation);
        let mut body = responses_body(model, json!(input), &r.options);
        if let Some(format) = openai_messages::text_format(&r.conversation.output) {
            body["text"] = json!({ "format": format });
        }
        let (text, completion) = self.respond(&body).await?;
        let message = json!({ "role": "assistant", "content": text });
        Ok(Completion {
            result: json!({ "message": message }),
            ..completion
        })
    }

    /// Calls `/responses` and joins the assistant's output text.
    async fn respond(&self, body: &Value) -> Result<(String, Completion), ProviderError> {
        let (answer, status): (ResponsesAnswer, _) = self.post("/responses", body).await?;
        let text: String = answer
            .output
            .iter()
            .filter(|item| item.kind == "message")
            .flat_map(|item| &item.content)
            .filter(|content| content.kind == "output_text")
            .map(|content| content.text.as_str())
            .collect();
        let completion = Completion {
            result: Value::Null,
            upstream_model: answer.model,
            prompt_tokens: answer.usage.as_ref().map(|u| u.input_tokens),
            completion_tokens: answer.usage.as_ref().map(|u| u.output_tokens),
            status_code: status,
        };
        Ok((text, completion))
    }

    async fn embed(&self, r: &EmbeddingRequest, model: &str) -> Result<Completion, ProviderError> {
        let mut body = json!({ "model": model, "input": r.input });
        if let Some(dimensions) = r.dimensions {
            body["dimensions"] = json!(dimensions);
        }
        let (mut answer, status): (EmbeddingsAnswer, _) = self.post("/embeddings", &body).await?;
        super::check_embedding_count("OpenAI", r.input.texts().len(), answer.data.len())?;
        answer.data.sort_by_key(|item| item.index);
        let embeddings: Vec<Vec<f32>> =
            answer.data.into_iter().map(|item| item.embedding).collect();
        Ok(Completion {
            result: json!({ "embeddings": embeddings }),
            upstream_model: answer.model,
            prompt_tokens: answer.usage.map(|u| u.prompt_tokens),
            completion_tokens: Some(0),
            status_code: status,
        })
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<(T, u16), ProviderError> {
        http::send_json(self.authorized(&self.http, path, body), error_message)
            .await
            .map_err(|failure| self.redacted(failure))
    }

    fn authorized(
        &self,
        http: &reqwest::Client,
        path: &str,
        body: &Value,
    ) -> reqwest::RequestBuilder {
        http.post(format!("{}{path}", self.base_url))
            .bearer_auth(self.api_key.expose_secret())
            .json(body)
    }

    /// Some compatible servers echo the key in their errors; it must not reach a job.
    fn redacted(&self, mut failure: ProviderError) -> ProviderError {
        failure.message = failure
            .message
            .replace(self.api_key.expose_secret(), "[redacted]");
        failure
    }
}

fn error_message(value: &Value) -> Option<&str> {
    value["error"]["message"].as_str()
}

/// A generate or chat job as a Chat Completions body (not streamed).
fn chat_completions_body(request: &JobRequest, model: &str) -> Value {
    let default = GenerationOptions::default();
    let (messages, o, format) = match request {
        JobRequest::Generate(r) => {
            let mut messages = Vec::new();
            if let Some(system) = &r.options.system {
                messages.push(json!({ "role": "system", "content": system }));
            }
            messages.push(json!({ "role": "user", "content": r.prompt }));
            let format = (r.options.format == Some(AnswerFormat::Json))
                .then(|| json!({ "type": "json_object" }));
            (messages, &r.options, format)
        }
        JobRequest::Chat(r) => (
            openai_messages::messages(&r.conversation),
            &r.options,
            openai_messages::response_format(&r.conversation.output),
        ),
        JobRequest::Embedding(_) => (Vec::new(), &default, None),
    };
    let mut body = json!({ "model": model, "messages": messages });
    if let Some(t) = o.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = o.top_p {
        body["top_p"] = json!(p);
    }
    if let Some(m) = o.max_tokens {
        body["max_completion_tokens"] = json!(m);
    }
    if let Some(seed) = o.seed {
        body["seed"] = json!(seed);
    }
    if let Some(stop) = &o.stop {
        body["stop"] = json!(stop);
    }
    if let Some(format) = format {
        body["response_format"] = format;
    }
    body
}

fn responses_body(model: &str, input: Value, o: &GenerationOptions) -> Value {
    let mut body = json!({ "model": model, "input": input });
    if let Some(t) = o.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = o.top_p {
        body["top_p"] = json!(p);
    }
    if let Some(m) = o.max_tokens {
        body["max_output_tokens"] = json!(m);
    }
    if o.format == Some(AnswerFormat::Json) {
        body["text"] = json!({ "format": { "type": "json_object" } });
    }
    body
}
