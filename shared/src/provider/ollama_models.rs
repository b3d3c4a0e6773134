//! Managing Ollama's local models: its version (`GET /api/version`), what is installed (`GET
//! /api/tags`), what one can do (`POST /api/show`'s `capabilities`), pulling one with its progress (`POST /api/pull`, NDJSON), and
//! deleting one (`DELETE /api/delete`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::ProviderError;
use super::http;

/// Longest a listing or a delete may take; a pull takes as long as the download.
const QUICK: Duration = Duration::from_secs(10);

/// One installed model, as Ollama lists it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstalledModel {
    pub name: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub modified_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Format, family, parameter size, quantization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// What it can do, when the listing says (Ollama 0.30 and later); else [`OllamaModels::show`]
    /// asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
}

pub use crate::domain::model_key;

/// Why a delete failed.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// Ollama has no such model (its 404, with its message).
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Failed(#[from] ProviderError),
}

pub struct OllamaModels {
    base_url: String,
    http: reqwest::Client,
}

impl OllamaModels {
    pub fn new(base_url: &str, http: reqwest::Client) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    pub async fn installed(&self) -> Result<Vec<InstalledModel>, ProviderError> {
        #[derive(Deserialize)]
        struct Tags {
            models: Vec<InstalledModel>,
        }
        let tags: Tags = self.quick(self.http.get(self.url("/api/tags"))).await?;
        Ok(tags.models)
    }

    /// What `model` can do (`/api/show`'s `capabilities`); `None` from a host too old to say.
    pub async fn capabilities(&self, model: &str) -> Result<Option<Vec<String>>, ProviderError> {
        #[derive(Deserialize)]
        struct Shown {
            capabilities: Option<Vec<String>>,
        }
        let show = self.http.post(self.url("/api/show"));
        let shown: Shown = self.quick(show.json(&json!({ "model": model }))).await?;
        Ok(shown.capabilities)
    }

    /// Ollama's version (`/api/version`): what tells a host answers as Ollama.
    pub async fn version(&self) -> Result<String, ProviderError> {
        #[derive(Deserialize)]
        struct Version {
            version: String,
        }
        let answer: Version = self.quick(self.http.get(self.url("/api/version"))).await?;
        Ok(answer.version)
    }

    /// The models Ollama has loaded now (`/api/ps`), as it lists them.
    pub async fn running(&self) -> Result<Value, ProviderError> {
        self.quick(self.http.get(self.url("/api/ps"))).await
    }

    /// A quick request's JSON answer: sent with the quick timeout, an error status read as
    /// Ollama's error.
    async fn quick<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ProviderError> {
        let response = request.timeout(QUICK).send().await.map_err(unreachable)?;
        let response = checked(response).await?;
        response.json().await.map_err(unreachable)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Starts pulling `model`; the stream yields Ollama's progress lines (`{status, digest?,
    /// total?, completed?}`) and ends after `{"status": "success"}`. An `{"error": …}` line, or a
    /// broken stream, is yielded as an error and ends it.
    pub async fn pull(
        &self,
        model: &str,
    ) -> Result<
        impl Stream<Item = Result<Value, ProviderError>> + Send + 'static + use<>,
        ProviderError,
    > {
        let response = self
            .http
            .post(format!("{}/api/pull", self.base_url))
            .json(&json!({ "model": model, "stream": true }))
            .send()
            .await
            .map_err(unreachable)?;
        let response = checked(response).await?;
        Ok(http::ndjson_lines(response.bytes_stream()).map(|line| {
            let line = line?;
            match line.get("error").and_then(Value::as_str) {
                Some(error) => Err(ProviderError::from_status(500, error, None)),
                None => Ok(line),
            }
        }))
    }

    pub async fn delete(&self, model: &str) -> Result<(), DeleteError> {
        let response = self
            .http
            .delete(format!("{}/api/delete", self.base_url))
            .timeout(QUICK)
            .json(&json!({ "model": model }))
            .send()
            .await
            .map_err(unreachable)?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(DeleteError::NotFound(error_message(response).await));
        }
        checked(response).await?;
        Ok(())
    }
}

async fn checked(response: reqwest::Response) -> Result<reqwest::Response, ProviderError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let message = error_message(response).await;
    Err(ProviderError::from_status(status, &message, None))
}

/// Ollama's `{"error": "…"}` message, or the body as text.
async fn error_message(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|body| body["error"].as_str().map(str::to_owned))
        .unwrap_or(text)
}

fn unreachable(error: reqwest::Error) -> ProviderError {
    ProviderError::from_status(
        503,
        &format!("Ollama is unreachable: {}", error.without_url()),
        None,
    )
}
