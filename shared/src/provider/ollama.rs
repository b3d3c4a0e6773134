//! A client for Ollama's native API (`/api/generate`, `/api/chat`, `/api/embed`), non-streaming.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ProviderError;
use super::{Completion, http};
use crate::domain::{
    ChatRequest, EmbeddingRequest, GenerateRequest, GenerationOptions, JobRequest,
};

#[derive(Clone)]
pub struct OllamaClient {
    base_url: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct GenerateAnswer {
    model: String,
    response: String,
    prompt_eval_count: Option<i32>,
    eval_count: Option<i32>,
}

#[derive(Deserialize)]
struct ChatAnswer {
    model: String,
    message: Value,
    prompt_eval_count: Option<i32>,
    eval_count: Option<i32>,
}

#[derive(Deserialize)]
struct EmbedAnswer {
    model: String,
    embeddings: Vec<Vec<f32>>,
    prompt_eval_count: Option<i32>,
}

impl OllamaClient {
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http: http::client(timeout),
        }
    }

    /// Whether Ollama answers `GET /api/version` within `timeout`.
    pub async fn is_up(&self, timeout: Duration) -> bool {
        let probe = self
            .http
            .get(format!("{}/api/version", self.base_url))
            .timeout(timeout);
        matches!(probe.send().await, Ok(response) if response.status().is_success())
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
        let mut body = json!({
            "model": model,
            "prompt": r.prompt,
            "stream": false,
            "options": options(&r.options),
        });
        if let Some(system) = &r.options.system {
            body["system"] = json!(system);
        }
        let (answer, status): (GenerateAnswer, _) = self.post("/api/generate", &body).await?;
        Ok(Completion {
            result: json!({ "text": answer.response }),
            upstream_model: answer.model,
            prompt_tokens: answer.prompt_eval_count,
            completion_tokens: answer.eval_count,
            status_code: status,
        })
    }

    async fn chat(&self, r: &ChatRequest, model: &str) -> Result<Completion, ProviderError> {
        let body = json!({
            "model": model,
            "messages": r.messages,
            "stream": false,
            "options": options(&r.options),
        });
        let (answer, status): (ChatAnswer, _) = self.post("/api/chat", &body).await?;
        Ok(Completion {
            result: json!({ "message": answer.message }),
            upstream_model: answer.model,
            prompt_tokens: answer.prompt_eval_count,
            completion_tokens: answer.eval_count,
            status_code: status,
        })
    }

    async fn embed(&self, r: &EmbeddingRequest, model: &str) -> Result<Completion, ProviderError> {
        let body = json!({ "model": model, "input": r.input });
        let (answer, status): (EmbedAnswer, _) = self.post("/api/embed", &body).await?;
        super::check_embedding_count("Ollama", r.input.texts().len(), answer.embeddings.len())?;
        Ok(Completion {
            result: json!({ "embeddings": answer.embeddings }),
            upstream_model: answer.model,
            prompt_tokens: answer.prompt_eval_count,
            completion_tokens: Some(0),
            status_code: status,
        })
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<(T, u16), ProviderError> {
        let request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .json(body);
        http::send_json(request, |v| v["error"].as_str()).await
    }
}

/// Ollama's names for the shared options (`max_tokens` is `num_predict`).
fn options(o: &GenerationOptions) -> Value {
    let mut options = serde_json::Map::new();
    if let Some(t) = o.temperature {
        options.insert("temperature".into(), json!(t));
    }
    if let Some(p) = o.top_p {
        options.insert("top_p".into(), json!(p));
    }
    if let Some(m) = o.max_tokens {
        options.insert("num_predict".into(), json!(m));
    }
    if let Some(s) = o.seed {
        options.insert("seed".into(), json!(s));
    }
    Value::Object(options)
}
