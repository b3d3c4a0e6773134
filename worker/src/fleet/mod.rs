//! The fleet as a worker sees it: a client (Ollama's, or an OpenAI-compatible server's), a circuit
//! and the installed models per host ([`host`]), rebuilt when the settings change, and the host
//! slots every worker shares ([`slots`]). A call for a model goes to a host whose kind its route
//! names a model for, and that has that model.
//!
//! Each host's models come from its `/api/tags` (an OpenAI-compatible server's `/models`), listed
//! every probe period (a failed listing counts against its circuit like a failed call) and again
//! at once when a job asks for a model no host is known to have (it may just have been pulled). What each model can do comes with the listing
//! (Ollama 0.30 and later) or from `/api/show`, asked once per model and digest; a host that does
//! not say counts as able to do everything. A listing that differs from the one last recorded is
//! written to `host_models`, where intake and the other workers read it.

mod host;
mod slots;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tollgate_core::domain::{
    Capabilities, Capability, CircuitPolicy, FleetRoute, Host, HostKind, ProviderName, Runtime,
};
use tollgate_core::provider::{HostListing, OllamaClient, OpenAiClient, Provider, model_key};
use tollgate_core::secret::{Purpose, SecretKey};
use uuid::Uuid;

pub use host::HostState;
use slots::Usable;
pub use slots::{NoSlot, SlotGuard};
pub use tollgate_core::db::host_slots::SlotLane;

use crate::circuit::Turned;
use crate::metrics::ProviderHealth;

/// How stale a host's listing must be before a job's unknown model lists it again.
const RELIST_AFTER: Duration = Duration::from_secs(2);

/// Which hosts can take a call for a route now.
pub struct Serving {
    /// Enabled, with the model installed, able to do what the call needs, and a circuit that lets
    /// a call out.
    pub ready: Vec<Arc<HostState>>,
    /// Enabled with the model able to, but resting after failures.
    pub resting: usize,
    /// What the model lacks on every enabled host that has it, when none can.
    pub lacking: Option<Capability>,
}

/// The fleet of this worker.
#[derive(Clone)]
pub struct Fleet {
    hosts: Arc<RwLock<Arc<Vec<Arc<HostState>>>>>,
    /// Where listings are recorded.
    pool: PgPool,
    slots: slots::Slots,
    timeout: Duration,
    http: reqwest::Client,
    /// Opens OpenAI-compatible hosts' keys.
    secret_key: Option<SecretKey>,
}

/// The fleet's background work: see [`Fleet::run`].
pub struct FleetTasks {
    line: slots::Line,
}

impl Fleet {
    pub fn new(
        pool: sqlx::PgPool,
        runtime: &Runtime,
        slot_lease: Duration,
        timeout: Duration,
        secret_key: Option<SecretKey>,
    ) -> (Self, FleetTasks) {
        let hosts: Arc<RwLock<Arc<Vec<Arc<HostState>>>>> = Arc::default();
        let known = hosts.clone();
        let candidates: slots::Candidates = Arc::new(move |route: &FleetRoute, needs| {
            let hosts = tollgate_core::sync::read(&known).clone();
            hosts
                .iter()
                .filter(|h| h.host.enabled && h.can(route, needs) && !h.circuit().is_open())
                .map(|h| h.usable())
                .collect()
        });
        let (slots, line) = slots::Slots::new(pool.clone(), slot_lease, candidates);
        let fleet = Self {
            hosts,
            pool,
            slots,
            timeout,
            http: reqwest::Client::new(),
            secret_key,
        };
        fleet.rebuild(runtime);
        (fleet, FleetTasks { line })
    }

    fn current(&self) -> Arc<Vec<Arc<HostState>>> {
        tollgate_core::sync::read(&self.hosts).clone()
    }

    /// Whether any host is enabled.
    pub fn is_configured(&self) -> bool {
        self.current().iter().any(|h| h.host.enabled)
    }

    /// Takes the hosts of `runtime`, keeping what was learned about each host whose address and key
    /// did not change (its client too: what it learnt of the server, its connections), and lists
    /// the new ones' models. A host whose key this worker cannot open is left out (and said so).
    pub fn rebuild(&self, runtime: &Runtime) {
        let previous: HashMap<Uuid, Arc<HostState>> = self
            .current()
            .iter()
            .map(|h| (h.host.id, h.clone()))
            .collect();
        let next = runtime
            .hosts
            .iter()
            .filter_map(|host| {
                let kept = previous.get(&host.id).filter(|old| {
                    old.host.base_url == host.base_url && old.host.api_key == host.api_key
                });
                let health = kept.map_or_else(Arc::default, |old| old.health.clone());
                let api_key = self.host_key(host)?;
                let client = match kept {
                    Some(old) => old.client.clone(),
                    None => self.client(host, api_key.clone()),
                };
                let models_api =
                    HostListing::new(host.kind, &host.base_url, api_key, self.http.clone());
                Some(Arc::new(HostState {
                    host: host.clone(),
                    client,
                    models_api,
                    health,
                }))
            })
            .collect::<Vec<Arc<HostState>>>();
        // A new host's models are listed at once, so calls waiting for a slot can use it.
        for host in next.iter().filter(|h| h.host.enabled && !h.listed()) {
            let (host, pool) = (host.clone(), self.pool.clone());
            #[expect(
                clippy::disallowed_methods,
                reason = "a listing left to finish on its own: the next probe lists the host again"
            )]
            tokio::spawn(async move { host.list(&pool).await });
        }
        *tollgate_core::sync::write(&self.hosts) = Arc::new(next);
    }

    /// `host`'s key, opened: `Some(None)` when it has none, `None` when it cannot be opened.
    fn host_key(&self, host: &Host) -> Option<Option<secrecy::SecretString>> {
        let Some(sealed) = &host.api_key else {
            return Some(None);
        };
        let opened = self
            .secret_key
            .as_ref()
            .map(|key| key.open_as(Purpose::HostKey, &sealed.sealed));
        match opened {
            Some(Ok(key)) => Some(Some(key)),
            _ => {
                tracing::error!(
                    host = host.name,
                    "the host's key cannot be opened with this worker's TOLLGATE_SECRET_KEY: \
                     the host is left out"
                );
                None
            }
        }
    }

    /// A client for `host`'s calls, of its kind.
    fn client(&self, host: &Host, api_key: Option<secrecy::SecretString>) -> Provider {
        match host.kind {
            HostKind::Ollama => Provider::Ollama(OllamaClient::new(&host.base_url, self.timeout)),
            HostKind::OpenaiCompatible => Provider::OpenAi(OpenAiClient::compatible(
                &host.base_url,
                api_key,
                self.timeout,
            )),
        }
    }

    /// Each host's circuit and slots.
    pub fn health(&self) -> Vec<ProviderHealth> {
        self.current()
            .iter()
            .map(|state| ProviderHealth {
                provider: ProviderName::LOCAL.as_str(),
                host: Some(state.host.name.clone()),
                circuit_open: state.circuit().is_open(),
                slots: state.host.slots,
            })
            .collect()
    }

    /// A host by id, if it is still in the fleet.
    pub fn host(&self, id: Uuid) -> Option<Arc<HostState>> {
        self.current().iter().find(|h| h.host.id == id).cloned()
    }

    /// The hosts that can serve `route` for a call that `needs` something now. A host never
    /// listed (just added) is listed first; when no host is known to have the route's model, the
    /// hosts not listed lately are listed again: the model may just have been pulled.
    pub async fn serving(
        &self,
        route: &FleetRoute,
        needs: Capabilities,
        policy: &CircuitPolicy,
    ) -> Serving {
        let enabled: Vec<_> = self
            .current()
            .iter()
            .filter(|h| h.host.enabled)
            .cloned()
            .collect();
        let unlisted = enabled.iter().filter(|h| !h.listed());
        futures::future::join_all(unlisted.map(|h| h.list(&self.pool))).await;
        if !enabled.iter().any(|h| h.has(route)) {
            let stale = enabled
                .iter()
                .filter(|h| h.runs(route).is_some() && !h.listed_within(RELIST_AFTER));
            futures::future::join_all(stale.map(|h| h.list(&self.pool))).await;
        }
        let now = Instant::now();
        let had = enabled.iter().filter_map(|h| h.capabilities_for(route));
        let able = had.fold(Capabilities::NONE, Capabilities::union);
        let mut serving = Serving {
            ready: Vec::new(),
            resting: 0,
            lacking: enabled
                .iter()
                .any(|h| h.has(route))
                .then(|| able.lacking(needs))
                .flatten(),
        };
        for host in enabled.into_iter().filter(|h| h.can(route, needs)) {
            if host.circuit().allows(now, policy) {
                serving.ready.push(host);
            } else {
                serving.resting += 1;
            }
        }
        serving
    }

    /// The host said it has no `model` (deleted since it was listed): it is not asked for it again
    /// until a listing says otherwise.
    pub fn forget(&self, host: &HostState, model: &str) {
        let mut models = tollgate_core::sync::write(&host.health.models);
        if let Some((_, installed)) = models.as_mut() {
            installed.remove(&model_key(model));
        }
    }

    /// The host refused a call that needs `lacking` of `model`: it is not asked for it again
    /// for a while.
    pub fn refused(&self, host: &HostState, model: &str, lacking: Capability) {
        tracing::info!(
            host = host.host.name,
            model,
            capability = lacking.as_str(),
            "the host's model cannot do what the call needs; another host or provider takes it"
        );
        host.health.refused.record(model, lacking);
    }

    /// Feeds a call's verdict into the host's circuit.
    pub fn record(&self, host: &HostState, healthy: bool, policy: &CircuitPolicy) {
        let turned = host.circuit().record(healthy, Instant::now(), policy);
        match turned {
            Turned::Opened => tracing::warn!(host = host.host.name, "host circuit opened"),
            Turned::Closed => tracing::info!(host = host.host.name, "host circuit closed"),
            Turned::Unchanged => {}
        }
    }

    /// A slot for `route` on the least loaded of `hosts`, waiting at most `wait` (while it waits,
    /// on any host that can serve it by then).
    pub async fn take(
        &self,
        route: &FleetRoute,
        needs: Capabilities,
        hosts: &[Arc<HostState>],
        lane: SlotLane,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<SlotGuard, NoSlot> {
        let usable: Vec<Usable> = hosts.iter().map(|h| h.usable()).collect();
        self.slots
            .take(route, needs, &usable, lane, wait, cancel)
            .await
    }

    /// Lists every enabled host's models (a host that does not answer counts a failure against
    /// its circuit).
    pub async fn probe(&self, policy: &CircuitPolicy) {
        let hosts = self.current();
        let listings = hosts
            .iter()
            .filter(|h| h.host.enabled)
            .map(|host| async move {
                if !host.list(&self.pool).await {
                    tracing::debug!(host = host.host.name, "host probe failed");
                    self.record(host, false, policy);
                }
            });
        futures::future::join_all(listings).await;
    }
}

impl FleetTasks {
    /// Serves the line for slots, follows freed-slot notifications and renews leases until
    /// `shutdown`.
    pub async fn run(self, fleet: Fleet, shutdown: CancellationToken) {
        fleet.slots.run(self.line, shutdown).await;
    }
}
