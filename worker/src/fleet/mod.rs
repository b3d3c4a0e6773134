//! The fleet as a worker sees it: a client (Ollama's, or an OpenAI-compatible server's), a circuit
//! and the installed models per host, rebuilt when the settings change, and the host slots every
//! worker shares ([`slots`]). A call for a model goes to a host whose kind its route names a model
//! for, and that has that model.
//!
//! Each host's models come from its `/api/tags` (an OpenAI-compatible server's `/models`), listed
//! every probe period (a failed listing counts
//! against its circuit like a failed call) and again at once when a job asks for a model no host
//! is known to have (it may just have been pulled). What each model can do comes with the listing
//! (Ollama 0.30 and later) or from `/api/show`, asked once per model and digest; a host that does
//! not say counts as able to do everything. A listing that differs from the one last recorded is
//! written to `host_models`, where intake and the other workers read it.

mod slots;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tollgate_core::db::host_models::{self, Listed};
use tollgate_core::domain::{
    Capabilities, Capability, CircuitPolicy, FleetRoute, Host, HostKind, ProviderName, Runtime,
};
use tollgate_core::provider::{
    HostListing, InstalledModel, OllamaClient, OpenAiClient, Provider, model_key,
};
use tollgate_core::secret::{Purpose, SecretKey};
use uuid::Uuid;

use slots::Usable;
pub use slots::{NoSlot, SlotGuard};
pub use tollgate_core::db::host_slots::SlotLane;

use crate::circuit::{Circuit, Turned};
use crate::metrics::ProviderHealth;

/// Longest a listing of a host's models may take.
const LISTING_TIMEOUT: Duration = Duration::from_secs(2);

/// How stale a host's listing must be before a job's unknown model lists it again.
const RELIST_AFTER: Duration = Duration::from_secs(2);

/// How long a host's refusal of what its model cannot do is believed: after it, one call finds
/// out whether the server was started again with it.
const REFUSAL_KEPT: Duration = Duration::from_secs(300);

/// One host, as configured now.
pub struct HostState {
    pub host: Host,
    /// A client for the host, of its kind.
    pub client: Provider,
    models_api: HostListing,
    health: Arc<Health>,
}

/// The installed models (by [`model_key`]) and what each can do.
type Installed = HashMap<String, Capabilities>;

/// What `/api/show` said each model (by name and digest) can do.
type Shown = HashMap<(String, Option<String>), Option<Vec<String>>>;

/// What a worker has learned about a host; kept while its address stays the same.
#[derive(Default)]
struct Health {
    circuit: Mutex<Circuit>,
    /// The installed models and when they were listed; `None` before the first listing.
    models: RwLock<Option<(Instant, Installed)>>,
    shown: Mutex<Shown>,
    /// The listing last recorded in `host_models`.
    recorded: Mutex<Option<Vec<Listed>>>,
    /// What the host's models (by [`model_key`]) refused to do, and when: an OpenAI-compatible
    /// server does not list it, it says so when asked.
    refused: Mutex<HashMap<String, (Capabilities, Instant)>>,
}

impl HostState {
    fn usable(&self) -> Usable {
        Usable {
            host_id: self.host.id,
            slots: self.host.slots,
            bulk_slots: self.host.bulk_slots,
        }
    }

    fn circuit(&self) -> std::sync::MutexGuard<'_, Circuit> {
        tollgate_core::sync::lock(&self.health.circuit)
    }

    /// The host's last listing: when, and the models in it.
    fn listing(&self) -> std::sync::RwLockReadGuard<'_, Option<(Instant, Installed)>> {
        tollgate_core::sync::read(&self.health.models)
    }

    /// What the host's `model` can do (less what it refused lately); `None` when the host does
    /// not have it.
    pub fn capabilities(&self, model: &str) -> Option<Capabilities> {
        let key = model_key(model);
        let listed = self.listing().as_ref()?.1.get(&key).copied()?;
        let refused = tollgate_core::sync::lock(&self.health.refused);
        Some(match refused.get(&key) {
            Some((cannot, at)) if at.elapsed() < REFUSAL_KEPT => listed.without(*cannot),
            _ => listed,
        })
    }

    /// What the host runs for `route`: its kind's model, if the route names one.
    pub fn runs<'a>(&self, route: &'a FleetRoute) -> Option<&'a str> {
        route.on(self.host.kind)
    }

    /// What the host's model for `route` can do; `None` when the route names none for its kind
    /// or the host does not have it.
    fn capabilities_for(&self, route: &FleetRoute) -> Option<Capabilities> {
        self.capabilities(self.runs(route)?)
    }

    fn has(&self, route: &FleetRoute) -> bool {
        self.capabilities_for(route).is_some()
    }

    /// Whether the host has its model for `route` and it can do what `needs` says.
    fn can(&self, route: &FleetRoute, needs: Capabilities) -> bool {
        self.capabilities_for(route)
            .is_some_and(|has| has.lacking(needs).is_none())
    }

    fn listed_within(&self, age: Duration) -> bool {
        self.listing()
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < age)
    }

    fn listed(&self) -> bool {
        self.listing().is_some()
    }

    /// Lists the host's models and what each can do, and records the listing when it changed;
    /// `false` when the host did not answer.
    async fn list(&self, pool: &PgPool) -> bool {
        let installed =
            match tokio::time::timeout(LISTING_TIMEOUT, self.models_api.installed()).await {
                Ok(Ok(installed)) => installed,
                _ => return false,
            };
        let mut listed = Vec::with_capacity(installed.len());
        for model in installed {
            listed.push(self.read(model).await);
        }
        let models = listed
            .iter()
            .map(|m| {
                let capabilities = m.capabilities.as_deref().map(Capabilities::from_names);
                (
                    model_key(&m.model),
                    capabilities.unwrap_or(Capabilities::ALL),
                )
            })
            .collect();
        *tollgate_core::sync::write(&self.health.models) = Some((Instant::now(), models));
        self.record(pool, listed).await;
        true
    }

    /// One model of a listing, with what it can do: as the listing says, else as `/api/show`
    /// said for its digest (asked now if it never was; a host that does not answer is asked
    /// again at the next listing).
    async fn read(&self, model: InstalledModel) -> Listed {
        let name = model_key(&model.name);
        if model.capabilities.is_some() {
            return Listed {
                model: name,
                digest: model.digest,
                capabilities: model.capabilities,
            };
        }
        let key = (name.clone(), model.digest.clone());
        let known = tollgate_core::sync::lock(&self.health.shown)
            .get(&key)
            .cloned();
        let capabilities = match known {
            Some(capabilities) => capabilities,
            None => {
                let asked = self.models_api.capabilities(&model.name);
                match tokio::time::timeout(LISTING_TIMEOUT, asked).await {
                    Ok(Ok(capabilities)) => {
                        let mut shown = tollgate_core::sync::lock(&self.health.shown);
                        shown.insert(key, capabilities.clone());
                        capabilities
                    }
                    _ => None,
                }
            }
        };
        Listed {
            model: name,
            digest: model.digest,
            capabilities,
        }
    }

    /// Writes the listing to `host_models` unless it is the one this worker recorded last.
    async fn record(&self, pool: &PgPool, listed: Vec<Listed>) {
        if tollgate_core::sync::lock(&self.health.recorded).as_ref() == Some(&listed) {
            return;
        }
        match host_models::record(pool, self.host.id, &listed).await {
            Ok(_) => *tollgate_core::sync::lock(&self.health.recorded) = Some(listed),
            Err(error) => {
                tracing::warn!(host = self.host.name, %error, "cannot record the host's models");
            }
        }
    }
}

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
                provider: ProviderName::Ollama.as_str(),
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
        let mut refused = tollgate_core::sync::lock(&host.health.refused);
        let entry = refused
            .entry(model_key(model))
            .or_insert((Capabilities::NONE, Instant::now()));
        *entry = (entry.0.union(Capabilities::of([lacking])), Instant::now());
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
