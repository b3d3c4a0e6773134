//! What a fleet host serves, whatever its kind: an Ollama host's installed models (see
//! [`OllamaModels`]) or an OpenAI-compatible server's (`GET {base_url}/models`), and the probe that
//! tells whether a host answers as its kind (Ollama's `/api/version`, the server's model list).
//!
//! An OpenAI-compatible server says nothing of what its models can do: they count as able to do
//! everything, unless a route declares less.

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use super::error::ProviderError;
use super::ollama_models::{InstalledModel, OllamaModels};
use crate::domain::{HostKind, JobErrorCode};

/// Longest a listing may take.
const QUICK: Duration = Duration::from_secs(10);

/// The models of one host.
pub enum HostListing {
    Ollama(OllamaModels),
    Compatible(CompatibleModels),
}

impl HostListing {
    /// The listing client for a host of `kind` at `base_url`.
    pub fn new(
        kind: HostKind,
        base_url: &str,
        api_key: Option<SecretString>,
        http: reqwest::Client,
    ) -> Self {
        match kind {
            HostKind::Ollama => Self::Ollama(OllamaModels::new(base_url, http)),
            HostKind::OpenaiCompatible => {
                Self::Compatible(CompatibleModels::new(base_url, api_key, http))
            }
        }
    }

    pub async fn installed(&self) -> Result<Vec<InstalledModel>, ProviderError> {
        match self {
            Self::Ollama(ollama) => ollama.installed().await,
            Self::Compatible(server) => server.installed().await,
        }
    }

    /// What `model` can do, if the host says (an OpenAI-compatible server never does).
    pub async fn capabilities(&self, model: &str) -> Result<Option<Vec<String>>, ProviderError> {
        match self {
            Self::Ollama(ollama) => ollama.capabilities(model).await,
            Self::Compatible(_) => Ok(None),
        }
    }

    /// Whether the host answers as its kind: Ollama with its version, an OpenAI-compatible
    /// server with its model list.
    pub async fn probe(&self) -> Result<(), ProviderError> {
        match self {
            Self::Ollama(ollama) => ollama.version().await.map(drop),
            Self::Compatible(server) => server.installed().await.map(drop),
        }
    }
}

/// An OpenAI-compatible server's model list.
pub struct CompatibleModels {
    base_url: String,
    api_key: Option<SecretString>,
    http: reqwest::Client,
}

impl CompatibleModels {
    pub fn new(base_url: &str, api_key: Option<SecretString>, http: reqwest::Client) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            http,
        }
    }

    /// The models it serves (`GET /models`'s `data[].id`), as a listing names them.
    pub async fn installed(&self) -> Result<Vec<InstalledModel>, ProviderError> {
        #[derive(Deserialize)]
        struct Listed {
            id: String,
        }
        #[derive(Deserialize)]
        struct Models {
            data: Vec<Listed>,
        }
        let mut request = self
            .http
            .get(format!("{}/models", self.base_url))
            .timeout(QUICK);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let mut message = response.text().await.unwrap_or_default();
            // Some servers echo the key they were given; it must not reach an answer.
            if let Some(key) = &self.api_key {
                message = message.replace(key.expose_secret(), "[redacted]");
            }
            return Err(ProviderError::from_status(status, &message, None));
        }
        let models: Models = response.json().await.map_err(|_| {
            ProviderError::from_status(
                502,
                "GET /models did not answer with an OpenAI model list",
                None,
            )
        })?;
        Ok(models
            .data
            .into_iter()
            .map(|model| InstalledModel {
                name: model.id,
                size: None,
                modified_at: None,
                digest: None,
                details: None,
                capabilities: None,
            })
            .collect())
    }
}

fn unreachable(error: reqwest::Error) -> ProviderError {
    ProviderError::new(
        JobErrorCode::ProviderUnreachable,
        format!("the server is unreachable: {}", error.without_url()),
    )
}
