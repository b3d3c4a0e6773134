//! The providers a worker can call, built from the runtime settings and rebuilt when they change:
//! OpenAI's client with its concurrency limit and circuit, the fleet of Ollama hosts
//! ([`crate::fleet`]), and the plan for a job.
//!
//! Resolving a job reads only memory (an `Arc` of the current providers); the settings reach it
//! through [`RuntimeWatch`], never through a query per job. Health comes from real calls and a
//! cached listing of each host's models, never from a probe per job.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tollgate_core::domain::{
    Capabilities, FleetRoute, LocalWait, ProviderName, Route, RouteInput, Runtime, Settings,
    WhenBusy, bulk_slots,
};
use tollgate_core::provider::{OpenAiClient, Provider};
use tollgate_core::runtime::RuntimeWatch;
use tollgate_core::secret::SecretKey;

use crate::circuit::{Circuit, Turned};
use crate::fleet::Fleet;
use crate::metrics::ProviderHealth;

/// OpenAI as currently configured.
pub struct Cloud {
    pub provider: Provider,
    /// In-flight calls to OpenAI from this worker, independent of the prefetch.
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
    sealed_key: Vec<u8>,
}

/// The cloud as of one settings version.
struct Configured {
    runtime: Arc<Runtime>,
    openai: Option<Arc<Cloud>>,
}

/// Where a step's call goes.
pub enum Target {
    Cloud(Arc<Cloud>),
    /// A host of the fleet, picked when a slot is taken, running what the route names for its
    /// kind.
    Fleet(FleetRoute),
}

/// One step of a job's plan: call this provider for this upstream model.
pub struct Step {
    pub name: ProviderName,
    /// The model called, for the cloud; for the fleet, the model its route is known by (each
    /// host runs its kind's, see [`Target::Fleet`]).
    pub upstream_model: String,
    pub target: Target,
    /// For the fleet: how long to wait for a slot.
    pub local_wait: LocalWait,
    /// What the step does when the one before it was only busy.
    pub when_busy: WhenBusy,
    /// What the route declares its model can do, if it does.
    pub declared: Option<Capabilities>,
}

/// What to try for one job, in order, why, and the settings it was made from.
pub struct Plan {
    pub runtime: Arc<Runtime>,
    pub route: Route,
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
    configured: RwLock<Arc<Configured>>,
    openai_circuit: Mutex<Circuit>,
    fleet: Fleet,
}

impl Providers {
    pub fn new(
        runtime: RuntimeWatch,
        fleet: Fleet,
        secret_key: Option<SecretKey>,
        timeout: Duration,
    ) -> Self {
        let current = runtime.current();
        let configured = configure(&current, None, secret_key.as_ref(), timeout);
        Self {
            inner: Arc::new(Inner {
                runtime,
                secret_key,
                timeout,
                configured: RwLock::new(Arc::new(configured)),
                openai_circuit: Mutex::default(),
                fleet,
            }),
        }
    }

    /// The runtime settings, routes and prices now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.inner.runtime.current()
    }

    pub fn fleet(&self) -> &Fleet {
        &self.inner.fleet
    }

    fn current(&self) -> Arc<Configured> {
        tollgate_core::sync::read(&self.inner.configured).clone()
    }

    /// The job's plan (see [`Runtime::route`]). Empty means `no_provider_available` — but only
    /// once the settings are known to be current: an api may have accepted the job under a route
    /// this worker has not loaded yet, so an empty plan first checks the database (a round trip on
    /// this path only).
    pub async fn plan(&self, model: &str, job: RouteInput) -> Plan {
        let plan = self.plan_now(model, job);
        if !plan.steps.is_empty() {
            return plan;
        }
        match self.inner.runtime.refresh().await {
            Ok(()) => {
                let runtime = self.inner.runtime.current();
                if runtime.settings.version != plan.runtime.settings.version {
                    self.rebuild(&runtime);
                }
                self.plan_now(model, job)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot check the settings; planning with the ones held");
                plan
            }
        }
    }

    fn plan_now(&self, model: &str, job: RouteInput) -> Plan {
        let configured = self.current();
        let fleet = self.fleet().is_configured();
        let route = configured.runtime.route(model, job, |p| match p {
            ProviderName::Ollama => fleet,
            ProviderName::OpenAi => configured.openai.is_some(),
        });
        let steps = route
            .candidates
            .iter()
            .filter_map(|candidate| {
                let target = match candidate.provider {
                    ProviderName::Ollama => {
                        Target::Fleet(configured.runtime.routes.fleet(model)?.clone())
                    }
                    ProviderName::OpenAi => Target::Cloud(configured.openai.clone()?),
                };
                Some(Step {
                    name: candidate.provider,
                    upstream_model: candidate.upstream_model.clone(),
                    target,
                    local_wait: candidate.local_wait,
                    when_busy: candidate.when_busy,
                    declared: candidate.declared,
                })
            })
            .collect();
        Plan {
            runtime: configured.runtime.clone(),
            route,
            steps,
        }
    }

    fn openai_circuit(&self) -> std::sync::MutexGuard<'_, Circuit> {
        tollgate_core::sync::lock(&self.inner.openai_circuit)
    }

    /// Each provider's circuit and slots as this worker holds them: OpenAI when configured, then
    /// every host of the fleet.
    pub fn health(&self) -> Vec<ProviderHealth> {
        let openai = self.current().openai.as_ref().map(|cloud| ProviderHealth {
            provider: ProviderName::OpenAi.as_str(),
            host: None,
            circuit_open: self.openai_circuit().is_open(),
            slots: cloud.max_concurrency,
        });
        openai.into_iter().chain(self.fleet().health()).collect()
    }

    /// Whether OpenAI's circuit lets a call out now.
    pub fn cloud_allows(&self, settings: &Settings) -> bool {
        self.openai_circuit()
            .allows(Instant::now(), &settings.circuit)
    }

    /// Feeds a call's verdict into OpenAI's circuit.
    pub fn record_cloud(&self, healthy: bool, settings: &Settings) {
        let turned = self
            .openai_circuit()
            .record(healthy, Instant::now(), &settings.circuit);
        match turned {
            Turned::Opened => tracing::warn!(provider = "openai", "circuit opened"),
            Turned::Closed => tracing::info!(provider = "openai", "circuit closed"),
            Turned::Unchanged => {}
        }
    }

    /// Rebuilds whenever the settings change, and lists the fleet's models every `probe_every`,
    /// until `shutdown`.
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
                _ = probe.tick() => {
                    let runtime = self.runtime();
                    if runtime.settings.ai_local_enabled {
                        self.fleet().probe(&runtime.settings.circuit).await;
                    }
                }
            }
        }
    }

    fn rebuild(&self, runtime: &Arc<Runtime>) {
        let previous = self.current();
        let next = configure(
            runtime,
            Some(&previous),
            self.inner.secret_key.as_ref(),
            self.inner.timeout,
        );
        let endpoint = |c: &Configured| c.openai.as_ref().map(|s| s.endpoint.clone());
        if endpoint(&previous) != endpoint(&next) {
            // A new address or key is a new provider as far as health goes.
            *self.openai_circuit() = Circuit::default();
        }
        self.fleet().rebuild(runtime);
        *tollgate_core::sync::write(&self.inner.configured) = Arc::new(next);
        tracing::info!(version = runtime.settings.version, "providers rebuilt");
    }
}

/// Builds OpenAI's client when it is configured, keeping `previous`'s client and limit where
/// nothing about them changed (in-flight calls hold permits of the limit they started under).
fn configure(
    runtime: &Arc<Runtime>,
    previous: Option<&Configured>,
    secret_key: Option<&SecretKey>,
    timeout: Duration,
) -> Configured {
    let settings = &runtime.settings;
    let openai = openai_client(settings, secret_key, timeout).map(|(client, endpoint)| {
        let max_concurrency = settings.openai_max_concurrency;
        if let Some(old) = previous.and_then(|p| p.openai.clone())
            && old.endpoint == endpoint
            && old.max_concurrency == max_concurrency
        {
            return old;
        }
        Arc::new(Cloud {
            provider: client,
            limit: Arc::new(Semaphore::new(max_concurrency as usize)),
            bulk_limit: Arc::new(Semaphore::new(bulk_slots(max_concurrency) as usize)),
            endpoint,
            max_concurrency,
        })
    });
    Configured {
        runtime: runtime.clone(),
        openai,
    }
}

/// OpenAI's client, or `None` when it is not configured (no usable key).
fn openai_client(
    settings: &Settings,
    secret_key: Option<&SecretKey>,
    timeout: Duration,
) -> Option<(Provider, Endpoint)> {
    let base_url = &settings.openai_base_url;
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
        base_url: base_url.clone(),
        sealed_key: sealed.sealed.clone(),
    };
    Some((
        Provider::OpenAi(OpenAiClient::new(base_url, key, timeout)),
        endpoint,
    ))
}
