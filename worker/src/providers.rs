//! The providers a worker can call, built from the runtime settings and rebuilt when they change:
//! each cloud account's client with its concurrency limit and circuit, the fleet's hosts
//! ([`crate::fleet`]), and the plan for a job.
//!
//! Resolving a job reads only memory (an `Arc` of the current providers); the settings reach it
//! through [`RuntimeWatch`], never through a query per job. Health comes from real calls and a
//! cached listing of each host's models, never from a probe per job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tollgate_core::domain::{
    Capabilities, Capability, CircuitPolicy, CloudAccount, CloudKind, FleetRoute, LocalWait,
    ProviderName, Route, RouteInput, Runtime, Settings, WhenBusy, bulk_slots,
};
use tollgate_core::provider::{AnthropicClient, OpenAiClient, Provider};
use tollgate_core::runtime::RuntimeWatch;
use tollgate_core::secret::SecretKey;

use crate::circuit::{Circuit, Turned};
use crate::fleet::Fleet;
use crate::metrics::ProviderHealth;
use crate::refusals::Refusals;

/// A cloud account as currently configured.
pub struct Cloud {
    pub name: ProviderName,
    pub provider: Provider,
    /// In-flight calls to the account from this worker, independent of the prefetch.
    pub limit: Arc<Semaphore>,
    /// The share of `limit` batch items may hold: a quarter of the slots (at least one, when there
    /// are two or more) stays free for single jobs, however many batch items wait.
    pub bulk_limit: Arc<Semaphore>,
    /// Kept while the account's endpoint stays the same (a new address or key is a new provider
    /// as far as health goes), with what its models refused lately.
    circuit: Arc<Mutex<Circuit>>,
    refused: Arc<Refusals>,
    /// What the client was built from.
    account: CloudAccount,
}

impl Cloud {
    /// The account's circuit policy: the settings' with its overrides.
    pub fn circuit_policy(&self, settings: &Settings) -> CircuitPolicy {
        self.account.circuit(&settings.circuit)
    }

    fn circuit(&self) -> std::sync::MutexGuard<'_, Circuit> {
        tollgate_core::sync::lock(&self.circuit)
    }

    /// Whether the account's circuit lets a call out now.
    pub fn allows(&self, settings: &Settings) -> bool {
        self.circuit()
            .allows(Instant::now(), &self.circuit_policy(settings))
    }

    /// `model` refused a call that needed `lacking` (a compatible server started without tool
    /// calling): calls that need it go to the next provider for a while.
    pub fn refused(&self, model: &str, lacking: Capability) {
        tracing::info!(
            provider = self.name.as_str(),
            model,
            capability = lacking.as_str(),
            "the account's model cannot do what the call needs; the next provider takes it"
        );
        self.refused.record(model, lacking);
    }

    /// What of `needs` the account's `model` refused lately, if any.
    pub fn refuses(&self, model: &str, needs: Capabilities) -> Option<Capability> {
        Capabilities::ALL
            .without(self.refused.of(model))
            .lacking(needs)
    }

    /// Feeds a call's verdict into the account's circuit.
    pub fn record(&self, healthy: bool, settings: &Settings) {
        let turned = self
            .circuit()
            .record(healthy, Instant::now(), &self.circuit_policy(settings));
        let provider = self.name.as_str();
        match turned {
            Turned::Opened => tracing::warn!(provider, "circuit opened"),
            Turned::Closed => tracing::info!(provider, "circuit closed"),
            Turned::Unchanged => {}
        }
    }
}

/// Whether two versions of an account call the same place the same way: its client and circuit
/// carry over (its limits too, when nothing else changed either).
fn same_endpoint(a: &CloudAccount, b: &CloudAccount) -> bool {
    (
        a.kind,
        &a.base_url,
        &a.api_version,
        a.key_header,
        &a.api_key,
        a.timeout,
    ) == (
        b.kind,
        &b.base_url,
        &b.api_version,
        b.key_header,
        &b.api_key,
        b.timeout,
    )
}

/// The clouds as of one settings version.
struct Configured {
    runtime: Arc<Runtime>,
    clouds: HashMap<ProviderName, Arc<Cloud>>,
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
    /// The `max_tokens` the route sends when the client gave none, if it sets one.
    pub default_max_tokens: Option<u32>,
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
        let configured_now =
            |p: ProviderName| p.is_local() && fleet || configured.clouds.contains_key(&p);
        let route = configured.runtime.route(model, job, configured_now);
        let routes = &configured.runtime.routes;
        let steps = route
            .candidates
            .iter()
            .filter_map(|candidate| {
                let target = if candidate.provider.is_local() {
                    Target::Fleet(configured.runtime.routes.fleet(model)?.clone())
                } else {
                    Target::Cloud(configured.clouds.get(&candidate.provider)?.clone())
                };
                Some(Step {
                    name: candidate.provider,
                    upstream_model: candidate.upstream_model.clone(),
                    target,
                    local_wait: candidate.local_wait,
                    when_busy: candidate.when_busy,
                    declared: candidate.declared,
                    default_max_tokens: routes.default_max_tokens(model, candidate.provider),
                })
            })
            .collect();
        Plan {
            runtime: configured.runtime.clone(),
            route,
            steps,
        }
    }

    /// Each provider's circuit and slots as this worker holds them: every cloud account
    /// configured (by name), then every host of the fleet.
    pub fn health(&self) -> Vec<ProviderHealth> {
        let configured = self.current();
        let mut clouds: Vec<_> = configured.clouds.values().collect();
        clouds.sort_by_key(|cloud| cloud.name);
        let clouds = clouds.into_iter().map(|cloud| ProviderHealth {
            provider: cloud.name.as_str(),
            host: None,
            circuit_open: cloud.circuit().is_open(),
            slots: cloud.account.max_concurrency,
        });
        clouds.chain(self.fleet().health()).collect()
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
        self.fleet().rebuild(runtime);
        *tollgate_core::sync::write(&self.inner.configured) = Arc::new(next);
        tracing::info!(version = runtime.settings.version, "providers rebuilt");
    }
}

/// Builds each configured cloud account's client, keeping `previous`'s client, circuit and limit
/// where nothing about them changed (in-flight calls hold permits of the limit they started
/// under).
fn configure(
    runtime: &Arc<Runtime>,
    previous: Option<&Configured>,
    secret_key: Option<&SecretKey>,
    timeout: Duration,
) -> Configured {
    let clouds = runtime
        .clouds
        .values()
        .filter(|account| account.is_configured())
        .filter_map(|account| {
            let old = previous.and_then(|p| p.clouds.get(&account.name));
            let cloud = match old {
                Some(old) if old.account == *account => old.clone(),
                Some(old) if same_endpoint(&old.account, account) => Arc::new(Cloud {
                    provider: old.provider.clone(),
                    circuit: old.circuit.clone(),
                    refused: old.refused.clone(),
                    ..limited(account, old.provider.clone())
                }),
                _ => Arc::new(limited(account, client(account, secret_key, timeout)?)),
            };
            Some((account.name, cloud))
        })
        .collect();
    Configured {
        runtime: runtime.clone(),
        clouds,
    }
}

/// The account's cloud with a fresh circuit and limits.
fn limited(account: &CloudAccount, provider: Provider) -> Cloud {
    let slots = account.max_concurrency;
    Cloud {
        name: account.name,
        provider,
        limit: Arc::new(Semaphore::new(slots as usize)),
        bulk_limit: Arc::new(Semaphore::new(bulk_slots(slots) as usize)),
        circuit: Arc::default(),
        refused: Arc::default(),
        account: account.clone(),
    }
}

/// The account's client, or `None` when its key cannot be opened.
fn client(
    account: &CloudAccount,
    secret_key: Option<&SecretKey>,
    timeout: Duration,
) -> Option<Provider> {
    let provider = account.name.as_str();
    let key: Option<SecretString> = match (&account.api_key, secret_key) {
        (None, _) => None,
        (Some(_), None) => {
            tracing::warn!(
                provider,
                "a key is stored but TOLLGATE_SECRET_KEY is not set: the provider is unavailable"
            );
            return None;
        }
        (Some(sealed), Some(secret_key)) => match secret_key.open(&sealed.sealed) {
            Ok(key) => Some(key),
            Err(error) => {
                tracing::warn!(provider, %error, "the provider is unavailable");
                return None;
            }
        },
    };
    let timeout = account.timeout.unwrap_or(timeout);
    let client = match (account.kind, key) {
        (CloudKind::OpenAi | CloudKind::Anthropic, None) => return None,
        (CloudKind::Anthropic, Some(key)) => {
            let client = AnthropicClient::new(&account.base_url, key, timeout);
            return Some(Provider::Anthropic(client));
        }
        (CloudKind::OpenAi, Some(key)) => OpenAiClient::new(&account.base_url, key, timeout),
        (CloudKind::OpenAiCompatible, key) => {
            OpenAiClient::compatible(&account.base_url, key, timeout)
        }
    };
    let client = client.addressed(account.key_header, account.api_version.clone());
    Some(Provider::OpenAi(client))
}
