//! Where a job may run, by the operator's strategy (one provider with a fallback, or `hybrid`: the
//! local fleet first, the cloud for what it cannot take) over the fleet's hosts, a tenant's data
//! policy, and why a job went where it went.
//!
//! [`Runtime::route`] is the whole decision as a pure function, so every rule here is tested
//! without a provider in sight; the worker only adds what happens at run time (a busy or failing
//! step).

use std::time::Duration;

use serde::Serialize;

use super::providers::ProviderName;
use super::settings::{Runtime, Strategy};
use super::{Capabilities, Capability, ValidationError};

/// Why a job's answer came from where it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteReason {
    /// The first choice of the settings served it.
    Active,
    /// An earlier choice failed (or could not serve the model now).
    Fallback,
    /// Every local slot stayed busy past `ai_overflow_wait_ms`.
    Overflow,
    /// `ai_local_share` sent it there.
    Share,
}

impl RouteReason {
    pub const ALL: [Self; 4] = [Self::Active, Self::Fallback, Self::Overflow, Self::Share];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Fallback => "fallback",
            Self::Overflow => "overflow",
            Self::Share => "share",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Whether a tenant's (or token's) jobs may leave the local fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataPolicy {
    #[default]
    Any,
    /// Never sent to a cloud provider: not as a fallback, not as overflow, not in a batch.
    LocalOnly,
}

impl DataPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::LocalOnly => "local_only",
        }
    }

    pub fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        match s {
            "any" => Ok(Self::Any),
            "local_only" => Ok(Self::LocalOnly),
            _ => Err(ValidationError::new(
                field,
                "must be \"any\" or \"local_only\"",
            )),
        }
    }
}

/// What routing needs to know about the job itself.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput {
    pub policy: DataPolicy,
    /// A batch's item.
    pub bulk: bool,
    /// Its tenant lets batch items overflow to the cloud.
    pub batch_overflow: bool,
    /// The job's draw for `ai_local_share`, 0–99 (the same on every run of the job).
    pub share_draw: u8,
    /// What the model must be able to do ([`JobRequest::needs`](super::JobRequest::needs)): a
    /// step whose model cannot is skipped.
    pub needs: Capabilities,
}

/// How long the fleet step waits for a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalWait {
    /// Until `ai_overflow_wait_ms`: then the cloud takes the job.
    Overflow(Duration),
    /// As long as a call may wait for a slot (the worker's limit).
    Patient,
}

/// What a step does when the step before it failed only because it was busy (no slot came free).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenBusy {
    /// Take the job: a fallback.
    Fallback,
    /// Take the job: an overflow.
    Overflow,
    /// Leave the job to wait for the busy step (a later run), e.g. a batch item whose tenant keeps
    /// bulk work local.
    Skip,
}

/// One provider to try for a job, and the model to ask it for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub provider: ProviderName,
    pub upstream_model: String,
    /// For the local fleet: how long to wait for a slot.
    pub local_wait: LocalWait,
    /// For every step but the first.
    pub when_busy: WhenBusy,
    /// What the route declares its model can do, if it does.
    pub declared: Option<Capabilities>,
}

/// A job's route: the steps to try in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub candidates: Vec<Candidate>,
    /// The first step was picked by `ai_local_share`.
    pub shared: bool,
    /// The data policy took a cloud step out.
    pub withheld: bool,
    /// Why there are no candidates, when there are none.
    pub unserved: Option<Unserved>,
}

/// Why no provider can serve a model for a caller as the settings stand: not a passing state (a
/// busy fleet, an open circuit), so a retry cannot help until an operator changes something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Unserved {
    /// Only cloud providers serve the model, and the caller's data stays on the local fleet.
    DataPolicy,
    /// No provider has a route for the model.
    NoRoute,
    /// The providers with a route for it are switched off, not configured, or not used by the
    /// routing strategy.
    RouteDisabled,
    /// No provider's model for it can do what the request needs (see images, call tools).
    #[serde(rename = "lacks_capability")]
    #[strum(serialize = "lacks_capability")]
    Lacks(Capability),
}

impl Unserved {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Says why `model` is not served, for a person.
    pub fn explain(self, model: &str) -> String {
        let why = match self {
            Self::DataPolicy => {
                "only cloud providers serve it, and this caller's data policy is local_only"
            }
            Self::NoRoute => "no provider has a route for it",
            Self::RouteDisabled => {
                "the providers with a route for it are disabled or not configured"
            }
            Self::Lacks(capability) => {
                return format!(
                    "model {model:?} cannot serve this request: no provider's model for it has \
                     the {} capability",
                    capability.as_str()
                );
            }
        };
        format!("model {model:?} is not served ({}): {why}", self.as_str())
    }
}

impl Route {
    /// Why the job went to candidate `index`, given whether the step before it was only busy.
    pub fn reason(&self, index: usize, previous_busy: bool) -> RouteReason {
        match (index, self.shared) {
            (0, true) => RouteReason::Share,
            (0, false) => RouteReason::Active,
            _ if previous_busy && self.candidates[index].when_busy == WhenBusy::Overflow => {
                RouteReason::Overflow
            }
            _ => RouteReason::Fallback,
        }
    }
}

/// A step before it is checked: the provider, how long it waits for a local slot, and what it
/// does when the step before it was only busy.
type Step = (ProviderName, LocalWait, WhenBusy);

/// A step that waits as long as a call may, and takes the job as a fallback.
fn patient(provider: ProviderName) -> Step {
    (provider, LocalWait::Patient, WhenBusy::Fallback)
}

impl Runtime {
    /// The seed's algorithm grown for a fleet and named providers: the model's own chain if it
    /// has one; else the active provider, then the fallback — or under `hybrid` the fleet then
    /// the cloud account `ai_hybrid_cloud` (the fallback setting is not used: both are in play) —
    /// each only if it is enabled, configured (`configured` says whether a client could be
    /// built: an OpenAI account needs a key, the fleet an enabled host) and has a route for
    /// `model`; then the data policy takes out the cloud. Circuit state and free slots are left to the caller, which
    /// checks them right before each call. No candidates is the controlled error
    /// `no_provider_available`.
    ///
    /// Long on purpose: the whole routing decision is this one pure function, tested rule by rule.
    pub fn route(
        &self,
        model: &str,
        job: RouteInput,
        configured: impl Fn(ProviderName) -> bool,
    ) -> Route {
        let settings = &self.settings;
        let (order, shared) = match self.routes.chain(model) {
            Some(chain) => (chain.iter().map(|&p| patient(p)).collect(), false),
            None => self.order(job),
        };
        let first_choice = order.first().map(|(provider, ..)| *provider);
        let mut withheld = false;
        let mut lacking = None;
        let mut candidates = Vec::new();
        for (provider, local_wait, when_busy) in order {
            if provider.is_local() && !settings.ai_local_enabled {
                continue;
            }
            if !configured(provider) {
                continue;
            }
            let Some(upstream_model) = self.routes.upstream(model, provider) else {
                continue;
            };
            if !provider.is_local() && job.policy == DataPolicy::LocalOnly {
                withheld = true;
                continue;
            }
            if let Some(lacks) = self.capabilities(model, provider).lacking(job.needs) {
                lacking.get_or_insert(lacks);
                continue;
            }
            let local_wait = match job.policy {
                // Nothing else may take the job: it waits for the fleet.
                DataPolicy::LocalOnly => LocalWait::Patient,
                DataPolicy::Any => local_wait,
            };
            candidates.push(Candidate {
                provider,
                upstream_model: upstream_model.to_owned(),
                local_wait,
                when_busy,
                declared: self.routes.declared(model, provider),
            });
        }
        // When the step the share picked cannot serve, what is left is a plain fallback.
        let shared = shared && candidates.first().map(|c| c.provider) == first_choice;
        let unserved = candidates.is_empty().then(|| match lacking {
            Some(lacks) => Unserved::Lacks(lacks),
            None => self.unserved_because(model, job.policy),
        });
        Route {
            candidates,
            shared,
            withheld,
            unserved,
        }
    }

    /// The steps the settings give a job, in order, and whether `ai_local_share` picked the
    /// first: the active provider then the fallback, or hybrid's fleet and cloud account.
    fn order(&self, job: RouteInput) -> (Vec<Step>, bool) {
        let settings = &self.settings;
        let cloud = settings.ai_hybrid_cloud;
        match settings.ai_provider {
            Strategy::Provider(active) => {
                let mut order = vec![patient(active)];
                if let Some(fallback) = settings.ai_fallback_provider
                    && fallback != active
                {
                    order.push(patient(fallback));
                }
                (order, false)
            }
            Strategy::Hybrid if job.bulk && !job.batch_overflow => (
                vec![
                    patient(ProviderName::LOCAL),
                    (cloud, LocalWait::Patient, WhenBusy::Skip),
                ],
                false,
            ),
            Strategy::Hybrid => match settings.ai_local_share {
                Some(share) => {
                    let (first, second) = if job.share_draw < share {
                        (ProviderName::LOCAL, cloud)
                    } else {
                        (cloud, ProviderName::LOCAL)
                    };
                    (vec![patient(first), patient(second)], true)
                }
                None => {
                    let wait = LocalWait::Overflow(settings.ai_overflow_wait);
                    let order = vec![
                        (ProviderName::LOCAL, wait, WhenBusy::Fallback),
                        (cloud, LocalWait::Patient, WhenBusy::Overflow),
                    ];
                    (order, false)
                }
            },
        }
    }

    /// Why a route came out empty: no route at all; else, for a `local_only` caller, the data
    /// policy when only the cloud serves the model (whatever the strategy); else the routes it has
    /// are switched off (a local one included).
    fn unserved_because(&self, model: &str, policy: DataPolicy) -> Unserved {
        let local_route = self.routes.upstream(model, ProviderName::LOCAL).is_some();
        if !self.routes.serves(model) {
            Unserved::NoRoute
        } else if policy == DataPolicy::LocalOnly && !local_route {
            Unserved::DataPolicy
        } else {
            Unserved::RouteDisabled
        }
    }

    /// What `model` can do through any provider that routes it (what a client is told it can
    /// ask of it).
    pub fn model_capabilities(&self, model: &str) -> Capabilities {
        self.routes
            .routed(model)
            .iter()
            .map(|&(provider, _)| self.capabilities(model, provider))
            .fold(Capabilities::NONE, Capabilities::union)
    }

    /// What `provider`'s route of `model` can do: for the fleet, what its hosts' listings said
    /// (everything while no host is known to have the model: the worker finds out); for the
    /// cloud, everything — each bounded by what the route declares.
    pub fn capabilities(&self, model: &str, provider: ProviderName) -> Capabilities {
        let known = if provider.is_local() {
            self.fleet_capabilities(model)
        } else {
            None
        };
        let known = known.unwrap_or(Capabilities::ALL);
        let declared = self.routes.declared(model, provider);
        known.intersection(declared.unwrap_or(Capabilities::ALL))
    }

    /// What the fleet's hosts say they can do with what it runs for `model` on each kind of
    /// host; `None` when no host is known to have any of it.
    pub fn fleet_capabilities(&self, model: &str) -> Option<Capabilities> {
        self.fleet_models.of_route(self.routes.fleet(model)?)
    }

    /// Whether the settings let `provider` be called at all: the fleet with a host enabled, a
    /// cloud account enabled and (OpenAI's) with a key stored. (A worker also needs the key to
    /// open; it decides that for itself.)
    pub fn is_configured(&self, provider: ProviderName) -> bool {
        if provider.is_local() {
            return self.hosts.iter().any(|host| host.enabled);
        }
        self.clouds
            .get(&provider)
            .is_some_and(|cloud| cloud.is_configured())
    }

    /// Whether a request for `model` from a caller under `policy` can be served as the settings
    /// stand: [`Runtime::route`] asked at intake, so a request it gives no step is refused before
    /// anything is written.
    pub fn serves(
        &self,
        model: &str,
        policy: DataPolicy,
        needs: Capabilities,
    ) -> Result<(), Unserved> {
        let job = RouteInput {
            policy,
            bulk: false,
            batch_overflow: false,
            share_draw: 0,
            needs,
        };
        match self.route(model, job, |p| self.is_configured(p)).unserved {
            Some(unserved) => Err(unserved),
            None => Ok(()),
        }
    }

    /// What decides where `model`'s jobs go and what runs them, as one text: its own chain or
    /// the settings' providers, and each provider's upstream model (each kind of host's on the
    /// fleet) with the `max_tokens` it sends. A response cache keys on it, so that a changed
    /// route never serves an answer of the old one; which provider served a job (under hybrid,
    /// a matter of load) is not in it.
    pub fn route_definition(&self, model: &str) -> String {
        use std::fmt::Write as _;
        let settings = &self.settings;
        let mut definition = match self.routes.chain(model) {
            Some(chain) => {
                let names: Vec<&str> = chain.iter().map(|p| p.as_str()).collect();
                format!("chain={}", names.join(","))
            }
            None => format!(
                "provider={};fallback={};hybrid_cloud={};local={}",
                settings.ai_provider.setting_name(),
                settings.ai_fallback_provider.map_or("none", |p| p.as_str()),
                settings.ai_hybrid_cloud.as_str(),
                settings.ai_local_enabled,
            ),
        };
        for (provider, upstream) in self.routes.routed(model) {
            let _ = write!(definition, ";{provider}={upstream}");
            if let Some(max) = self.routes.default_max_tokens(model, *provider) {
                let _ = write!(definition, ",max_tokens={max}");
            }
        }
        if let Some(fleet) = self.routes.fleet(model) {
            for (kind, upstream) in fleet.kinds() {
                let _ = write!(definition, ";{}={upstream}", kind.as_str());
            }
        }
        definition
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::HostKind;
    use crate::domain::settings::tests::runtime;

    const ANY: RouteInput = RouteInput {
        policy: DataPolicy::Any,
        bulk: false,
        batch_overflow: false,
        share_draw: 0,
        needs: Capabilities::NONE,
    };

    fn names(route: &Route) -> Vec<(&'static str, &str)> {
        route
            .candidates
            .iter()
            .map(|c| (c.provider.as_str(), c.upstream_model.as_str()))
            .collect()
    }

    fn local() -> Strategy {
        Strategy::Provider(ProviderName::LOCAL)
    }

    fn openai() -> Strategy {
        Strategy::Provider(ProviderName::OPENAI)
    }

    #[test]
    fn the_active_provider_comes_first_and_the_fallback_gets_its_own_model() {
        let rt = runtime(local(), Some(ProviderName::OPENAI));
        let route = rt.route("llama3", ANY, |_| true);
        assert_eq!(
            names(&route),
            [("local", "llama3"), ("openai", "gpt-4.1-mini")]
        );
        assert_eq!(route.reason(0, false), RouteReason::Active);
        assert_eq!(route.reason(1, true), RouteReason::Fallback);
        assert_eq!(route.candidates[0].local_wait, LocalWait::Patient);
    }

    #[test]
    fn a_fallback_of_none_or_the_same_provider_adds_nothing() {
        let none = runtime(openai(), None);
        assert_eq!(
            names(&none.route("llama3", ANY, |_| true)),
            [("openai", "gpt-4.1-mini")]
        );
        let same = runtime(openai(), Some(ProviderName::OPENAI));
        assert_eq!(same.route("llama3", ANY, |_| true).candidates.len(), 1);
    }

    #[test]
    fn disabled_unconfigured_and_unrouted_providers_are_skipped() {
        let mut rt = runtime(local(), Some(ProviderName::OPENAI));
        assert_eq!(
            names(&rt.route("gpt-4o", ANY, |_| true)),
            [("openai", "gpt-4o")]
        );
        assert_eq!(
            names(&rt.route("llama3", ANY, |p| p != ProviderName::OPENAI)),
            [("local", "llama3")]
        );
        rt.settings.ai_local_enabled = false;
        assert_eq!(
            names(&rt.route("llama3", ANY, |_| true)),
            [("openai", "gpt-4.1-mini")]
        );
        assert!(
            rt.route("llama3", ANY, |p| p == ProviderName::LOCAL)
                .candidates
                .is_empty()
        );
        assert!(rt.route("unknown", ANY, |_| true).candidates.is_empty());
    }

    #[test]
    fn a_step_whose_model_lacks_what_the_request_needs_is_skipped() {
        let mut rt = runtime(
            Strategy::Provider(ProviderName::LOCAL),
            Some(ProviderName::OPENAI),
        );
        rt.fleet_models.add(
            HostKind::Ollama,
            "llama3",
            Some(Capabilities::from_names(&["completion"])),
        );
        let seeing = RouteInput {
            needs: Capabilities::of([Capability::Completion, Capability::Vision]),
            ..ANY
        };
        assert_eq!(
            names(&rt.route("llama3", seeing, |_| true)),
            [("openai", "gpt-4.1-mini")]
        );
        assert_eq!(
            names(&rt.route("llama3", ANY, |_| true)),
            [("local", "llama3"), ("openai", "gpt-4.1-mini")]
        );
        let local = RouteInput {
            policy: DataPolicy::LocalOnly,
            ..seeing
        };
        assert_eq!(
            rt.route("llama3", local, |_| true).unserved,
            Some(Unserved::Lacks(Capability::Vision))
        );
        // A second host with the model that can see: the fleet can.
        rt.fleet_models.add(
            HostKind::Ollama,
            "llama3:latest",
            Some(Capabilities::from_names(&["completion", "vision"])),
        );
        assert_eq!(
            names(&rt.route("llama3", local, |_| true)),
            [("local", "llama3")]
        );
        // A host that does not say what its models can do counts as able to do everything.
        let mut old = runtime(Strategy::Provider(ProviderName::LOCAL), None);
        old.fleet_models.add(HostKind::Ollama, "llama3", None);
        assert_eq!(
            names(&old.route("llama3", seeing, |_| true)),
            [("local", "llama3")]
        );
    }

    #[test]
    fn hybrid_waits_for_the_fleet_until_the_overflow_wait_then_overflows() {
        let rt = runtime(Strategy::Hybrid, None);
        let route = rt.route("llama3", ANY, |_| true);
        assert_eq!(
            names(&route),
            [("local", "llama3"), ("openai", "gpt-4.1-mini")]
        );
        assert_eq!(
            route.candidates[0].local_wait,
            LocalWait::Overflow(Duration::from_millis(250))
        );
        assert_eq!(route.reason(0, false), RouteReason::Active);
        assert_eq!(route.reason(1, true), RouteReason::Overflow);
        assert_eq!(route.reason(1, false), RouteReason::Fallback);
        // A model the fleet has no route for goes to the cloud as the first choice.
        let cloud = rt.route("gpt-4o", ANY, |_| true);
        assert_eq!(names(&cloud), [("openai", "gpt-4o")]);
        assert_eq!(cloud.reason(0, false), RouteReason::Active);
    }

    #[test]
    fn a_local_share_splits_by_the_jobs_draw() {
        let mut rt = runtime(Strategy::Hybrid, None);
        rt.settings.ai_local_share = Some(70);
        let local_first = rt.route(
            "llama3",
            RouteInput {
                share_draw: 69,
                ..ANY
            },
            |_| true,
        );
        assert_eq!(local_first.candidates[0].provider, ProviderName::LOCAL);
        assert_eq!(local_first.candidates[0].local_wait, LocalWait::Patient);
        assert_eq!(local_first.reason(0, false), RouteReason::Share);
        let cloud_first = rt.route(
            "llama3",
            RouteInput {
                share_draw: 70,
                ..ANY
            },
            |_| true,
        );
        assert_eq!(cloud_first.candidates[0].provider, ProviderName::OPENAI);
        assert_eq!(cloud_first.reason(0, false), RouteReason::Share);
        assert_eq!(cloud_first.reason(1, false), RouteReason::Fallback);
        rt.settings.ai_local_enabled = false;
        let only_cloud = rt.route(
            "llama3",
            RouteInput {
                share_draw: 0,
                ..ANY
            },
            |_| true,
        );
        assert_eq!(names(&only_cloud), [("openai", "gpt-4.1-mini")]);
        assert_eq!(only_cloud.reason(0, false), RouteReason::Active);
    }

    #[test]
    fn local_only_never_routes_to_the_cloud_and_says_so() {
        let policy = RouteInput {
            policy: DataPolicy::LocalOnly,
            ..ANY
        };
        for rt in [
            runtime(local(), Some(ProviderName::OPENAI)),
            runtime(openai(), Some(ProviderName::LOCAL)),
            runtime(Strategy::Hybrid, None),
        ] {
            let route = rt.route("llama3", policy, |_| true);
            assert_eq!(names(&route), [("local", "llama3")]);
            assert!(route.withheld);
            assert_eq!(route.candidates[0].local_wait, LocalWait::Patient);
            let cloud_only = rt.route("gpt-4o", policy, |_| true);
            assert!(cloud_only.candidates.is_empty());
            assert!(cloud_only.withheld);
        }
        let mut shared = runtime(Strategy::Hybrid, None);
        shared.settings.ai_local_share = Some(0);
        assert_eq!(
            names(&shared.route("llama3", policy, |_| true)),
            [("local", "llama3")]
        );
    }

    #[test]
    fn an_empty_route_says_why_no_provider_can_serve_the_model() {
        let local_only = RouteInput {
            policy: DataPolicy::LocalOnly,
            ..ANY
        };
        let rt = runtime(Strategy::Hybrid, None);
        let unserved = |rt: &Runtime, model, job| rt.route(model, job, |_| true).unserved;
        assert_eq!(unserved(&rt, "llama3", ANY), None);
        assert_eq!(unserved(&rt, "mistral", ANY), Some(Unserved::NoRoute));
        assert_eq!(
            unserved(&rt, "mistral", local_only),
            Some(Unserved::NoRoute)
        );
        assert_eq!(unserved(&rt, "gpt-4o", ANY), None);
        assert_eq!(
            unserved(&rt, "gpt-4o", local_only),
            Some(Unserved::DataPolicy)
        );
        // Whatever the strategy, a cloud-only model is the data policy's refusal.
        let fleet_only = runtime(local(), None);
        assert_eq!(
            unserved(&fleet_only, "gpt-4o", local_only),
            Some(Unserved::DataPolicy)
        );
        assert_eq!(
            unserved(&fleet_only, "gpt-4o", ANY),
            Some(Unserved::RouteDisabled)
        );
        // A local route switched off is the route's, not the policy's.
        let mut local_off = runtime(Strategy::Hybrid, None);
        local_off.settings.ai_local_enabled = false;
        assert_eq!(
            unserved(&local_off, "llama3", local_only),
            Some(Unserved::RouteDisabled)
        );
        assert_eq!(unserved(&local_off, "llama3", ANY), None);
        let unconfigured = rt.route("llama3", ANY, |_| false).unserved;
        assert_eq!(unconfigured, Some(Unserved::RouteDisabled));
    }

    #[test]
    fn serves_asks_the_route_with_what_the_settings_configure() {
        let mut rt = runtime(Strategy::Hybrid, None);
        let openai = rt.clouds.remove(&ProviderName::OPENAI).expect("OpenAI");
        // No host and no cloud account: nothing is configured.
        assert_eq!(
            rt.serves("llama3", DataPolicy::Any, Capabilities::NONE),
            Err(Unserved::RouteDisabled)
        );
        let mut disabled = openai.clone();
        disabled.enabled = false;
        rt.clouds.insert(ProviderName::OPENAI, disabled);
        assert_eq!(
            rt.serves("llama3", DataPolicy::Any, Capabilities::NONE),
            Err(Unserved::RouteDisabled),
            "a disabled account serves nothing"
        );
        rt.clouds.insert(ProviderName::OPENAI, openai);
        assert_eq!(
            rt.serves("llama3", DataPolicy::Any, Capabilities::NONE),
            Ok(())
        );
        assert_eq!(
            rt.serves("llama3", DataPolicy::LocalOnly, Capabilities::NONE),
            Err(Unserved::RouteDisabled)
        );
        assert!(
            Unserved::DataPolicy
                .explain("gpt-4o")
                .contains("\"gpt-4o\"")
        );
        assert!(
            Unserved::DataPolicy
                .explain("gpt-4o")
                .contains("(data_policy)")
        );
    }

    #[test]
    fn under_hybrid_a_batch_item_overflows_only_if_its_tenant_allows_it() {
        let rt = runtime(Strategy::Hybrid, None);
        let item = RouteInput { bulk: true, ..ANY };
        let kept = rt.route("llama3", item, |_| true);
        assert_eq!(kept.candidates[0].local_wait, LocalWait::Patient);
        assert_eq!(kept.candidates[1].when_busy, WhenBusy::Skip);
        let allowed = rt.route(
            "llama3",
            RouteInput {
                batch_overflow: true,
                ..item
            },
            |_| true,
        );
        assert_eq!(allowed.candidates[1].when_busy, WhenBusy::Overflow);
    }

    #[test]
    fn a_models_own_chain_overrides_the_settings_and_names_any_provider() {
        let mut rt = runtime(local(), Some(ProviderName::OPENAI));
        let groq = ProviderName::stored("groq");
        rt.routes
            .insert("llama3".into(), groq, "llama-3.3-70b".into());
        rt.routes
            .set_chain("llama3".into(), vec![groq, ProviderName::LOCAL]);
        let route = rt.route("llama3", ANY, |_| true);
        assert_eq!(
            names(&route),
            [("groq", "llama-3.3-70b"), ("local", "llama3")]
        );
        assert_eq!(route.reason(1, false), RouteReason::Fallback);
        let local_only = RouteInput {
            policy: DataPolicy::LocalOnly,
            ..ANY
        };
        let kept = rt.route("llama3", local_only, |_| true);
        assert_eq!(names(&kept), [("local", "llama3")]);
        assert!(kept.withheld, "a cloud account of any kind is withheld");
        // Without a chain, the settings decide: OpenAI is not in this model's chain.
        assert_eq!(
            names(&rt.route("gpt-4o", ANY, |_| true)),
            [("openai", "gpt-4o")]
        );
    }

    #[test]
    fn hybrid_overflows_to_the_cloud_account_the_settings_name() {
        let mut rt = runtime(Strategy::Hybrid, None);
        let groq = ProviderName::stored("groq");
        rt.routes
            .insert("llama3".into(), groq, "llama-3.3-70b".into());
        rt.settings.ai_hybrid_cloud = groq;
        let route = rt.route("llama3", ANY, |_| true);
        assert_eq!(
            names(&route),
            [("local", "llama3"), ("groq", "llama-3.3-70b")]
        );
        assert_eq!(route.candidates[1].when_busy, WhenBusy::Overflow);
        assert_eq!(route.reason(1, true), RouteReason::Overflow);
        // An account the registry does not have (or has disabled) is not configured.
        assert!(!rt.is_configured(groq));
        assert_eq!(
            names(&rt.route("llama3", ANY, |p| rt.is_configured(p) || p.is_local())),
            [("local", "llama3")]
        );
    }
}
