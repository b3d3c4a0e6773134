//! The operator's runtime settings and model routes: which provider is active, which one takes over,
//! how hard to retry, and which upstream model each provider runs for a model name.

use std::collections::HashMap;
use std::time::Duration;

use super::fleet::{FleetRoute, Host, HostKind};
use super::providers::{CloudAccount, CloudChange, ProviderName};
use super::upstream::CircuitPolicy;
use super::{Capabilities, ValidationError};

/// The setting `ai_provider`: one provider (its fallback taking over when it fails), or `hybrid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Provider(ProviderName),
    /// The local fleet first; a job that would wait too long for a local slot overflows to
    /// the cloud account `ai_hybrid_cloud`, or a fixed share goes to each (`ai_local_share`).
    Hybrid,
}

impl Strategy {
    pub fn setting_name(self) -> &'static str {
        match self {
            Self::Provider(p) => p.as_str(),
            Self::Hybrid => "hybrid",
        }
    }

    /// The one provider it names, if it is not `hybrid`.
    pub fn provider(self) -> Option<ProviderName> {
        match self {
            Self::Provider(p) => Some(p),
            Self::Hybrid => None,
        }
    }

    /// `hybrid` or a provider's name (whether the registry has it is the caller's check).
    pub fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        match s {
            "hybrid" => Ok(Self::Hybrid),
            other => ProviderName::parse(field, other).map(Self::Provider),
        }
    }
}

/// How hard a job is retried: quick retries on one provider, then runs through the delay queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls to one provider in one run: the first and its quick retries.
    pub provider_attempts: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Runs of a job before it fails with its last error.
    pub max_job_attempts: u32,
    /// Calls to one provider in one run for a structured answer: the first and the calls made
    /// again while its answers do not match their format.
    pub structured_output_attempts: u32,
}

/// How long data is kept: jobs (prompts, results, attempts) and usage records, in days. Daily
/// rollups are kept for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub job_days: u32,
    pub usage_days: u32,
}

impl Retention {
    /// The moment before which a job's data is expired: `job_days` before `now`.
    pub fn job_horizon(&self, now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        now - chrono::Duration::days(i64::from(self.job_days))
    }

    /// The moment before which usage records are expired.
    pub fn usage_horizon(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> chrono::DateTime<chrono::Utc> {
        now - chrono::Duration::days(i64::from(self.usage_days))
    }
}

/// The settings row, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub version: i64,
    pub ai_provider: Strategy,
    /// `None` is the setting `none`: no fallback.
    pub ai_fallback_provider: Option<ProviderName>,
    pub ai_local_enabled: bool,
    /// Under `hybrid`: how long a job may wait for a local slot before it overflows.
    pub ai_overflow_wait: Duration,
    /// Under `hybrid`: the percentage of jobs sent to the fleet first, instead of overflow.
    pub ai_local_share: Option<u8>,
    /// Under `hybrid`: the cloud account that takes what the fleet does not.
    pub ai_hybrid_cloud: ProviderName,
    pub retry: RetryPolicy,
    pub retention: Retention,
    pub circuit: CircuitPolicy,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Which upstream model each provider runs for a model name clients use (for the fleet, on each
/// kind of host), and a model's own chain of providers where it has one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelRoutes {
    /// Per model, each provider's upstream model; for the fleet, the model its route is known
    /// by ([`FleetRoute::first`]).
    routes: HashMap<String, Vec<(ProviderName, String)>>,
    fleet: HashMap<String, FleetRoute>,
    /// What each route's upstream model can do, where an operator declared it.
    declared: HashMap<(String, ProviderName), Capabilities>,
    /// The `max_tokens` each route sends when the client gave none, where an operator set one.
    max_tokens: HashMap<(String, ProviderName), u32>,
    chains: HashMap<String, Vec<ProviderName>>,
}

impl ModelRoutes {
    /// Routes `model` to `upstream_model` on `provider` (on the fleet, on its Ollama hosts).
    pub fn insert(&mut self, model: String, provider: ProviderName, upstream_model: String) {
        if provider.is_local() {
            return self.insert_fleet(model, HostKind::Ollama, upstream_model);
        }
        self.set(model, provider, Some(upstream_model));
    }

    fn set(&mut self, model: String, provider: ProviderName, upstream_model: Option<String>) {
        let routes = self.routes.entry(model).or_default();
        routes.retain(|(p, _)| *p != provider);
        if let Some(upstream_model) = upstream_model {
            routes.push((provider, upstream_model));
            routes.sort_by_key(|(p, _)| *p);
        }
    }

    /// Routes `model` to `upstream_model` on the fleet's hosts of `kind`.
    pub fn insert_fleet(&mut self, model: String, kind: HostKind, upstream_model: String) {
        let route = self.fleet.entry(model.clone()).or_default();
        route.set(kind, upstream_model);
        let known_by = route.first().map(str::to_owned);
        self.set(model, ProviderName::LOCAL, known_by);
    }

    /// What the fleet runs for `model` on each kind of host, if it serves it.
    pub fn fleet(&self, model: &str) -> Option<&FleetRoute> {
        self.fleet.get(model)
    }

    /// Declares what `provider`'s route of `model` can do.
    pub fn declare(&mut self, model: String, provider: ProviderName, can: Capabilities) {
        self.declared.insert((model, provider), can);
    }

    /// Gives `provider`'s route of `model` the `max_tokens` it sends when the client gave none.
    pub fn set_default_max_tokens(&mut self, model: String, provider: ProviderName, max: u32) {
        self.max_tokens.insert((model, provider), max);
    }

    /// The `max_tokens` `provider`'s route of `model` sends when the client gave none, if set.
    pub fn default_max_tokens(&self, model: &str, provider: ProviderName) -> Option<u32> {
        if self.max_tokens.is_empty() {
            return None;
        }
        self.max_tokens.get(&(model.to_owned(), provider)).copied()
    }

    /// What `provider`'s route of `model` can do, if an operator declared it.
    pub fn declared(&self, model: &str, provider: ProviderName) -> Option<Capabilities> {
        if self.declared.is_empty() {
            return None;
        }
        self.declared.get(&(model.to_owned(), provider)).copied()
    }

    /// Gives `model` its own chain of providers, tried in order whatever the settings say.
    pub fn set_chain(&mut self, model: String, chain: Vec<ProviderName>) {
        self.chains.insert(model, chain);
    }

    /// `model`'s own chain of providers, if it has one.
    pub fn chain(&self, model: &str) -> Option<&[ProviderName]> {
        self.chains.get(model).map(Vec::as_slice)
    }

    /// What `provider` runs for `model`, if it serves it.
    pub fn upstream(&self, model: &str, provider: ProviderName) -> Option<&str> {
        let routes = self.routes.get(model)?;
        routes
            .iter()
            .find(|(p, _)| *p == provider)
            .map(|(_, upstream)| upstream.as_str())
    }

    /// Every provider that routes `model`, with what it runs.
    pub fn routed(&self, model: &str) -> &[(ProviderName, String)] {
        self.routes.get(model).map_or(&[], Vec::as_slice)
    }

    /// Whether any provider serves `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.routes.contains_key(model)
    }

    /// Every model name, sorted, with what each provider runs for it (by provider name).
    pub fn all(&self) -> Vec<(&str, Vec<(ProviderName, &str)>)> {
        let mut all: Vec<_> = self
            .routes
            .iter()
            .map(|(model, routes)| {
                let providers = routes.iter().map(|(p, u)| (*p, u.as_str())).collect();
                (model.as_str(), providers)
            })
            .collect();
        all.sort_by_key(|(model, _)| *model);
        all
    }
}

/// Everything a process needs to resolve providers and price their answers, as of one settings
/// version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub settings: Settings,
    pub routes: ModelRoutes,
    pub prices: super::PriceList,
    /// The cloud accounts, enabled or not, by name (the fleet, `local`, is the hosts).
    pub clouds: std::collections::BTreeMap<ProviderName, CloudAccount>,
    /// The fleet's hosts, enabled or not, by name.
    pub hosts: Vec<Host>,
    /// What the enabled hosts' models can do, as their last listings said.
    pub fleet_models: crate::domain::FleetModels,
}

/// A partial change to the settings (`PATCH /v1/admin/settings`): `None` leaves a value alone.
#[derive(Debug, Clone, Default)]
pub struct SettingsChange {
    pub ai_provider: Option<Strategy>,
    /// `Some(None)` sets the fallback to `none`.
    pub ai_fallback_provider: Option<Option<ProviderName>>,
    pub ai_local_enabled: Option<bool>,
    pub ai_overflow_wait_ms: Option<u32>,
    /// `Some(None)` goes back to overflow.
    pub ai_local_share: Option<Option<u32>>,
    pub ai_hybrid_cloud: Option<ProviderName>,
    /// The settings that were the OpenAI account's before providers were named (`openai_api_key`,
    /// `openai_base_url`, `openai_max_concurrency`): a change to the provider `openai`.
    pub openai: CloudChange,
    pub provider_attempts: Option<u32>,
    pub retry_min_delay_ms: Option<u32>,
    pub retry_max_delay_ms: Option<u32>,
    pub max_job_attempts: Option<u32>,
    pub structured_output_attempts: Option<u32>,
    pub circuit_failure_threshold: Option<u32>,
    pub circuit_cooldown_ms: Option<u32>,
    pub job_retention_days: Option<u32>,
    pub usage_retention_days: Option<u32>,
}

/// Checks that `value` lies in `range`, naming `field` if not.
fn within(
    field: &str,
    value: Option<u32>,
    range: std::ops::RangeInclusive<u32>,
) -> Result<Option<u32>, ValidationError> {
    match value {
        Some(v) if !range.contains(&v) => Err(ValidationError::new(
            field,
            format!("must be between {} and {}", range.start(), range.end()),
        )),
        other => Ok(other),
    }
}

impl Settings {
    /// Applies `change`, refusing (and naming) the first value out of bounds; on error `self` is
    /// left as it was.
    pub fn apply(&self, change: SettingsChange) -> Result<Self, ValidationError> {
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        let mut next = self.clone();
        if let Some(p) = change.ai_provider {
            next.ai_provider = p;
        }
        if let Some(f) = change.ai_fallback_provider {
            next.ai_fallback_provider = f;
        }
        if let Some(e) = change.ai_local_enabled {
            next.ai_local_enabled = e;
        }
        if let Some(cloud) = change.ai_hybrid_cloud {
            if cloud.is_local() {
                return Err(ValidationError::new(
                    "ai_hybrid_cloud",
                    "must name a cloud provider: the fleet is hybrid's local side",
                ));
            }
            next.ai_hybrid_cloud = cloud;
        }
        if let Some(n) = within(
            "ai_overflow_wait_ms",
            change.ai_overflow_wait_ms,
            0..=600_000,
        )? {
            next.ai_overflow_wait = ms(n);
        }
        if let Some(share) = change.ai_local_share {
            let share = within("ai_local_share", share, 0..=100)?;
            next.ai_local_share = share.map(|n| u8::try_from(n).unwrap_or(100));
        }
        if let Some(n) = within("provider_attempts", change.provider_attempts, 1..=10)? {
            next.retry.provider_attempts = n;
        }
        if let Some(n) = within("retry_min_delay_ms", change.retry_min_delay_ms, 1..=60_000)? {
            next.retry.min_delay = ms(n);
        }
        if let Some(n) = within("retry_max_delay_ms", change.retry_max_delay_ms, 1..=60_000)? {
            next.retry.max_delay = ms(n);
        }
        if next.retry.min_delay > next.retry.max_delay {
            return Err(ValidationError::new(
                "retry_min_delay_ms",
                "must not exceed retry_max_delay_ms",
            ));
        }
        if let Some(n) = within("max_job_attempts", change.max_job_attempts, 1..=50)? {
            next.retry.max_job_attempts = n;
        }
        let structured = within(
            "structured_output_attempts",
            change.structured_output_attempts,
            1..=10,
        )?;
        if let Some(n) = structured {
            next.retry.structured_output_attempts = n;
        }
        let threshold = within(
            "circuit_failure_threshold",
            change.circuit_failure_threshold,
            1..=1000,
        )?;
        if let Some(n) = threshold {
            next.circuit.failure_threshold = n;
        }
        if let Some(n) = within(
            "circuit_cooldown_ms",
            change.circuit_cooldown_ms,
            100..=3_600_000,
        )? {
            next.circuit.cooldown = ms(n);
        }
        if let Some(n) = within("job_retention_days", change.job_retention_days, 1..=3650)? {
            next.retention.job_days = n;
        }
        if let Some(n) = within(
            "usage_retention_days",
            change.usage_retention_days,
            1..=36_500,
        )? {
            next.retention.usage_days = n;
        }
        Ok(next)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A runtime serving `llama3` on both providers and `gpt-4o` on OpenAI only, OpenAI with a
    /// key.
    pub(in crate::domain) fn runtime(active: Strategy, fallback: Option<ProviderName>) -> Runtime {
        let mut routes = ModelRoutes::default();
        routes.insert("llama3".into(), ProviderName::LOCAL, "llama3".into());
        routes.insert("llama3".into(), ProviderName::OPENAI, "gpt-4.1-mini".into());
        routes.insert("gpt-4o".into(), ProviderName::OPENAI, "gpt-4o".into());
        let key = super::super::SealedKey {
            sealed: vec![1],
            last4: "abcd".into(),
        };
        let openai = CloudAccount::create(
            ProviderName::OPENAI,
            super::super::providers::CloudKind::OpenAi,
            CloudChange {
                api_key: Some(Some(key)),
                ..CloudChange::default()
            },
        )
        .expect("an account");
        Runtime {
            clouds: [(ProviderName::OPENAI, openai)].into(),
            fleet_models: crate::domain::FleetModels::default(),
            settings: Settings {
                version: 1,
                ai_provider: active,
                ai_fallback_provider: fallback,
                ai_local_enabled: true,
                ai_overflow_wait: Duration::from_millis(250),
                ai_local_share: None,
                ai_hybrid_cloud: ProviderName::OPENAI,
                retry: RetryPolicy {
                    provider_attempts: 3,
                    min_delay: Duration::from_millis(200),
                    max_delay: Duration::from_secs(5),
                    max_job_attempts: 5,
                    structured_output_attempts: 3,
                },
                retention: Retention {
                    job_days: 30,
                    usage_days: 400,
                },
                circuit: CircuitPolicy {
                    failure_threshold: 5,
                    cooldown: Duration::from_secs(30),
                },
                updated_at: chrono::Utc::now(),
            },
            routes,
            prices: crate::domain::PriceList::default(),
            hosts: Vec::new(),
        }
    }

    #[test]
    fn a_strategy_is_hybrid_or_a_provider() {
        assert_eq!(Strategy::parse("x", "hybrid"), Ok(Strategy::Hybrid));
        assert_eq!(
            Strategy::parse("x", "local"),
            Ok(Strategy::Provider(ProviderName::LOCAL))
        );
        assert_eq!(
            Strategy::parse("ai_provider", "Local")
                .expect_err("bad")
                .field,
            "ai_provider"
        );
        for strategy in [Strategy::Hybrid, Strategy::Provider(ProviderName::OPENAI)] {
            assert_eq!(Strategy::parse("x", strategy.setting_name()), Ok(strategy));
        }
    }

    #[test]
    fn a_change_out_of_bounds_names_its_field_and_changes_nothing() {
        let settings = runtime(Strategy::Provider(ProviderName::LOCAL), None).settings;
        let bad = SettingsChange {
            ai_provider: Some(Strategy::Provider(ProviderName::OPENAI)),
            max_job_attempts: Some(0),
            ..SettingsChange::default()
        };
        assert_eq!(
            settings.apply(bad).expect_err("refused").field,
            "max_job_attempts"
        );
        let inverted = SettingsChange {
            retry_min_delay_ms: Some(6_000),
            ..SettingsChange::default()
        };
        assert_eq!(
            settings.apply(inverted).expect_err("refused").field,
            "retry_min_delay_ms"
        );
        let hybrid = SettingsChange {
            ai_hybrid_cloud: Some(ProviderName::LOCAL),
            ..SettingsChange::default()
        };
        assert_eq!(
            settings.apply(hybrid).expect_err("refused").field,
            "ai_hybrid_cloud"
        );
        let share = SettingsChange {
            ai_local_share: Some(Some(101)),
            ..SettingsChange::default()
        };
        assert_eq!(
            settings.apply(share).expect_err("refused").field,
            "ai_local_share"
        );
    }

    #[test]
    fn a_valid_change_applies_only_what_it_names() {
        let settings = runtime(
            Strategy::Provider(ProviderName::LOCAL),
            Some(ProviderName::OPENAI),
        )
        .settings;
        let change = SettingsChange {
            ai_provider: Some(Strategy::Hybrid),
            ai_fallback_provider: Some(None),
            ai_hybrid_cloud: Some(ProviderName::stored("groq")),
            circuit_cooldown_ms: Some(1_000),
            ai_local_share: Some(Some(70)),
            ..SettingsChange::default()
        };
        let next = settings.apply(change).expect("valid");
        assert_eq!(next.ai_provider, Strategy::Hybrid);
        assert_eq!(next.ai_fallback_provider, None);
        assert_eq!(next.ai_hybrid_cloud.as_str(), "groq");
        assert_eq!(next.circuit.cooldown, Duration::from_secs(1));
        assert_eq!(next.ai_local_share, Some(70));
        assert_eq!(next.ai_overflow_wait, settings.ai_overflow_wait);
        assert_eq!(next.retry, settings.retry);
        let back = next
            .apply(SettingsChange {
                ai_local_share: Some(None),
                ..SettingsChange::default()
            })
            .expect("valid");
        assert_eq!(back.ai_local_share, None);
    }
}
