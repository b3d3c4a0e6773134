//! A client for the OpenAI API: the Responses API for generate and chat, `/embeddings` for vectors.
//!
//! `base_url` follows the official SDKs' convention and includes `/v1`
//! (`https://api.openai.com/v1`), so OpenAI-compatible servers configure the same way.

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ProviderError;
use super::{Completion, http};
use crate::domain::{
    ChatRequest, EmbeddingRequest, GenerateRequest, GenerationOptions, JobRequest,
};

#[derive(Clone)]
pub struct OpenAiClient {
    base_url: String,
    api_key: SecretString,
    http: reqwest::Client,
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
        }
    }

    /// Runs `request` on `model`, the upstream name the job's model routes to.
    pub async fn run(
        &self,
        request: &JobRequest,
        model: &str,
    ) -> Result<Completion, ProviderError> {
        match request {
            JobRequest::Generate(r) => self.generate(r, model).await,
            JobRequest::Chat(r) => self.chat(r, model).await,
            JobRequest::Embedding(r) => self.embed(r, model).await,
        }
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
        let body = responses_body(model, json!(r.messages), &r.options);
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
        let body = json!({ "model": model, "input": r.input });
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
        let key = self.api_key.expose_secret();
        let request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(key)
            .json(body);
        http::send_json(request, |v| v["error"]["message"].as_str())
            .await
            .map_err(|mut failure| {
                // Some compatible servers echo the key in their errors; it must not reach a job.
                failure.message = failure.message.replace(key, "[redacted]");
                failure
            })
    }
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
    body
}
