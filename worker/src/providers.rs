//! Which provider runs jobs: Ollama while `OLLAMA_BASE_URL` answers, else OpenAI when a key is
//! configured, else none (jobs fail with `no_provider_available`).
//!
//! The choice comes from a cached probe of Ollama's `/api/version`, refreshed in the background,
//! never from a probe per job.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use shared::provider::{OllamaClient, OpenAiClient, Provider};
use tokio_util::sync::CancellationToken;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct ProviderSelector {
    ollama: OllamaClient,
    openai: Option<OpenAiClient>,
    probe_every: Duration,
    current: Arc<RwLock<Option<Provider>>>,
}

impl ProviderSelector {
    /// Probes once, so the first job already sees the right provider.
    pub async fn new(
        ollama: OllamaClient,
        openai: Option<OpenAiClient>,
        probe_every: Duration,
    ) -> Self {
        let selector = Self {
            ollama,
            openai,
            probe_every,
            current: Arc::default(),
        };
        selector.refresh().await;
        selector
    }

    /// The provider to use now, if any.
    pub fn current(&self) -> Option<Provider> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    async fn refresh(&self) {
        let chosen = if self.ollama.is_up(PROBE_TIMEOUT).await {
            Some(Provider::Ollama(self.ollama.clone()))
        } else {
            self.openai.clone().map(Provider::OpenAi)
        };
        let name = chosen.as_ref().map(Provider::name);
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.as_ref().map(Provider::name) != name {
            tracing::info!(provider = name.unwrap_or("none"), "provider selected");
        }
        *current = chosen;
    }

    /// Re-probes every `probe_every` until shutdown.
    pub async fn keep_fresh(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.probe_every) => self.refresh().await,
            }
        }
    }
}
