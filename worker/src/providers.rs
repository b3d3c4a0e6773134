//! The providers a worker can call, built from the runtime settings and rebuilt when they change:
//! a client, a concurrency limit and a circuit per provider, and the plan for a job's model.
//!
//! Resolving a job reads only memory (an `Arc` of the current build); the settings reach it
//! through [`RuntimeWatch`], never through a query per job. Health comes from real calls and a
//! cached probe of Ollama's `/api/version`, never from a probe per job.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use shared::domain::{ProviderName, Runtime, Settings};
use shared::provider::{OllamaClient, OpenAiClient, Provider};
use shared::runtime::RuntimeWatch;
use shared::secret::SecretKey;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::circuit::Circuit;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One provider as currently configured.
pub struct Slot {
    pub provider: Provider,
    /// In-flight calls to this provider from this worker, independent of the prefetch.
    pub limit: Arc<Semaphore>,
    /// The share of `limit` batch items may hold: a quarter of the slots (at least one, when there
    /// are two or more) stays free for single jobs, however many batch items wait.
    pub bulk_limit: Arc<Semaphore>,
    /// What the client was built from; a change gives the provider a fresh circuit.
    endpoint: Endpoint,
    max_concurrency: u32,
}

/// Where a provider is and which key it is called with (as sealed: a new key seals differently).
#[derive(Clone, PartialEq, Eq)]
struct Endpoint {
    base_url: String,
    sealed_key: Option<Vec<u8>>,
}

/// The providers as of one settings version.
pub struct Build {
    pub runtime: Arc<Runtime>,
    slots: [Option<Arc<Slot>>; 2],
}

/// One step of a job's plan: call this provider for this upstream model.
pub struct Step {
    pub name: ProviderName,
    pub upstream_model: String,
    pub slot: Arc<Slot>,
}

/// What to try for one job, in order, and the settings it was made from.
pub struct Plan {
    pub runtime: Arc<Runtime>,
    pub steps: Vec<Step>,
}

#[derive(Clone)]
pub struct Providers {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: RuntimeWatch,
    secret_key: Option<SecretKey>,
    timeout: Duration,
    build: RwLock<Arc<Build>>,
    circuits: [Mutex<Circuit>; 2],
}

impl Providers {
    pub fn new(runtime: RuntimeWatch, secret_key: Option<SecretKey>, timeout: Duration) -> Self {
        let current = runtime.current();
        let build = build(&current, None, secret_key.as_ref(), timeout);
        Self {
            inner: Arc::new(Inner {
                runtime,
                secret_key,
                timeout,
                build: RwLock::new(Arc::new(build)),
                circuits: Default::default(),
            }),
        }
    }

    /// The runtime settings, routes and prices now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.inner.runtime.current()
    }

    fn current(&self) -> Arc<Build> {
        self.inner
            .build
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The job's plan: the active provider, then the fallback, each if enabled, configured and
    /// routed for `model`. Empty means `no_provider_available` — but only once the settings are
    /// known to be current: an api may have accepted the job under a route this worker has not
    /// loaded yet, so an empty plan first checks the database (a round trip on this path only).
    pub async fn plan(&self, model: &str) -> Plan {
        let plan = self.plan_now(model);
        if !plan.steps.is_empty() {
            return plan;
        }
        match self.inner.runtime.refresh().await {
            Ok(()) => {
                let runtime = self.inner.runtime.current();
                if runtime.settings.version != plan.runtime.settings.version {
                    self.rebuild(&runtime);
                }
                self.plan_now(model)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot check the settings; planning with the ones held");
                plan
            }
        }
    }

    fn plan_now(&self, model: &str) -> Plan {
        let build = self.current();
        let steps = build
            .runtime
            .candidates(model, |p| build.slots[p.index()].is_some())
            .into_iter()
            .filter_map(|candidate| {
                let slot = build.slots[candidate.provider.index()].clone()?;
                Some(Step {
                    name: candidate.provider,
                    upstream_model: candidate.upstream_model,
                    slot,
                })
            })
            .collect();
        Plan {
            runtime: build.runtime.clone(),
            steps,
        }
    }

    fn circuit(&self, provider: ProviderName) -> std::sync::MutexGuard<'_, Circuit> {
        self.inner.circuits[provider.index()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `provider`'s circuit lets a call out now.
    pub fn allows(&self, provider: ProviderName, settings: &Settings) -> bool {
        self.circuit(provider)
            .allows(Instant::now(), &settings.circuit)
    }

    /// Feeds a call's (or probe's) verdict into `provider`'s circuit.
    pub fn record(&self, provider: ProviderName, healthy: bool, settings: &Settings) {
        let mut circuit = self.circuit(provider);
        let was_open = circuit.is_open();
        if healthy {
            circuit.succeeded();
        } else {
            circuit.failed(Instant::now(), &settings.circuit);
        }
        match (was_open, circuit.is_open()) {
            (false, true) => tracing::warn!(provider = provider.as_str(), "circuit opened"),
            (true, false) => tracing::info!(provider = provider.as_str(), "circuit closed"),
            _ => {}
        }
    }

    /// Rebuilds whenever the settings change, and probes Ollama every `probe_every`, until
    /// `shutdown`.
    pub async fn keep_fresh(self, probe_every: Duration, shutdown: CancellationToken) {
        let mut changes = self.inner.runtime.subscribe();
        let mut probe = tokio::time::interval(probe_every);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let runtime = changes.borrow_and_update().clone();
                    self.rebuild(&runtime);
                }
                _ = probe.tick() => self.probe().await,
            }
        }
    }

    fn rebuild(&self, runtime: &Arc<Runtime>) {
        let previous = self.current();
        let next = build(
            runtime,
            Some(&previous),
            self.inner.secret_key.as_ref(),
            self.inner.timeout,
        );
        for provider in ProviderName::ALL {
            let endpoint = |b: &Build| {
                b.slots[provider.index()]
                    .as_ref()
                    .map(|s| s.endpoint.clone())
            };
            if endpoint(&previous) != endpoint(&next) {
                // A new address or key is a new provider as far as health goes.
                *self.circuit(provider) = Circuit::default();
            }
        }
        *self
            .inner
            .build
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(next);
        tracing::info!(version = runtime.settings.version, "providers rebuilt");
    }

    /// A failed probe counts against Ollama's circuit like a failed call; a success changes
    /// nothing (real calls close a circuit).
    async fn probe(&self) {
        let build = self.current();
        let settings = &build.runtime.settings;
        if !settings.ai_local_enabled {
            return;
        }
        let Some(slot) = &build.slots[ProviderName::Ollama.index()] else {
            return;
        };
        if let Provider::Ollama(client) = &slot.provider
            && !client.is_up(PROBE_TIMEOUT).await
        {
            tracing::debug!("Ollama probe failed");
            self.record(ProviderName::Ollama, false, settings);
        }
    }
}

/// Builds a client per configured provider, keeping `previous`'s client and limit where nothing
/// about them changed (in-flight calls hold permits of the limit they started under).
fn build(
    runtime: &Arc<Runtime>,
    previous: Option<&Build>,
    secret_key: Option<&SecretKey>,
    timeout: Duration,
) -> Build {
    let settings = &runtime.settings;
    let slot = |provider: ProviderName| -> Option<Arc<Slot>> {
        let (client, endpoint) = client(provider, settings, secret_key, timeout)?;
        let max_concurrency = settings.max_concurrency(provider);
        if let Some(old) = previous.and_then(|p| p.slots[provider.index()].clone())
            && old.endpoint == endpoint
            && old.max_concurrency == max_concurrency
        {
            return Some(old);
        }
        Some(Arc::new(Slot {
            provider: client,
            limit: Arc::new(Semaphore::new(max_concurrency as usize)),
            bulk_limit: Arc::new(Semaphore::new(bulk_slots(max_concurrency))),
            endpoint,
            max_concurrency,
        }))
    };
    Build {
        runtime: runtime.clone(),
        slots: ProviderName::ALL.map(slot),
    }
}

/// How many of a provider's `max_concurrency` slots batch items may hold at once: all but a
/// quarter (rounded up); with a single slot, that slot.
fn bulk_slots(max_concurrency: u32) -> usize {
    let reserved = if max_concurrency >= 2 {
        max_concurrency.div_ceil(4)
    } else {
        0
    };
    (max_concurrency - reserved) as usize
}

/// A client for `provider`, or `None` when it is not configured (OpenAI without a usable key).
fn client(
    provider: ProviderName,
    settings: &Settings,
    secret_key: Option<&SecretKey>,
    timeout: Duration,
) -> Option<(Provider, Endpoint)> {
    let base_url = settings.base_url(provider);
    match provider {
        ProviderName::Ollama => Some((
            Provider::Ollama(OllamaClient::new(base_url, timeout)),
            Endpoint {
                base_url: base_url.to_owned(),
                sealed_key: None,
            },
        )),
        ProviderName::OpenAi => {
            let sealed = settings.openai_api_key.as_ref()?;
            let Some(secret_key) = secret_key else {
                tracing::warn!(
                    "an OpenAI key is stored but TOLLGATE_SECRET_KEY is not set: OpenAI is unavailable"
                );
                return None;
            };
            let key: SecretString = match secret_key.open(&sealed.sealed) {
                Ok(key) => key,
                Err(error) => {
                    tracing::warn!(%error, "OpenAI is unavailable");
                    return None;
                }
            };
            let endpoint = Endpoint {
                base_url: base_url.to_owned(),
                sealed_key: Some(sealed.sealed.clone()),
            };
            Some((
                Provider::OpenAi(OpenAiClient::new(base_url, key, timeout)),
                endpoint,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bulk_slots;

    #[test]
    fn batch_items_leave_a_quarter_of_a_providers_slots_to_single_jobs() {
        assert_eq!(bulk_slots(1), 1, "a single slot is shared");
        assert_eq!(bulk_slots(2), 1);
        assert_eq!(bulk_slots(4), 3);
        assert_eq!(bulk_slots(5), 3);
        assert_eq!(bulk_slots(64), 48);
    }
}
