//! The registry of providers: the local fleet, named `local`, and named cloud accounts, each of a
//! kind — `openai`, or `openai_compatible` at its own base URL (Groq, Together, Mistral, DeepSeek,
//! OpenRouter; Azure OpenAI with its `api-version` and `api-key` header) — with its key,
//! concurrency, circuit and timeout.
//!
//! A provider's name is interned: names come from the registry and from rows written with them,
//! so the set stays as small as the names an operator ever gave, and a name is `Copy` and compared
//! as cheaply as the closed enum it replaced.

use std::collections::HashSet;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ValidationError;
use super::upstream::{CircuitPolicy, SealedKey, check_base_url};

/// A provider's name: `local` (the fleet) or a cloud account's.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderName(&'static str);

static INTERNED: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(RwLock::default);

impl ProviderName {
    /// The local fleet.
    pub const LOCAL: Self = Self("local");
    /// The OpenAI account every deployment starts with.
    pub const OPENAI: Self = Self("openai");
    pub const MAX_CHARS: usize = 40;

    /// `raw` as a provider's name (a lowercase letter, then up to 39 of `a-z`, `0-9`, `_`, `-`);
    /// else the error names `field`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
        let mut chars = raw.chars();
        let well_formed = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
            && raw.len() <= Self::MAX_CHARS;
        if !well_formed {
            return Err(ValidationError::new(
                field,
                "must be a lowercase letter, then up to 39 of a-z, 0-9, _ and -",
            ));
        }
        Ok(Self::intern(raw))
    }

    /// A name as stored (a row's `provider` column): the same string, interned.
    pub fn stored(raw: &str) -> Self {
        Self::intern(raw)
    }

    fn intern(raw: &str) -> Self {
        for known in [Self::LOCAL, Self::OPENAI] {
            if known.0 == raw {
                return known;
            }
        }
        if let Some(name) = crate::sync::read(&INTERNED).get(raw) {
            return Self(name);
        }
        let mut names = crate::sync::write(&INTERNED);
        if let Some(name) = names.get(raw) {
            return Self(name);
        }
        let name: &'static str = Box::leak(raw.to_owned().into_boxed_str());
        names.insert(name);
        Self(name)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The fleet, whose calls go to its hosts.
    pub fn is_local(self) -> bool {
        self == Self::LOCAL
    }
}

impl std::fmt::Debug for ProviderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::fmt::Display for ProviderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for ProviderName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for ProviderName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::parse("provider", &raw).map_err(|e| serde::de::Error::custom(e.message))
    }
}

impl utoipa::PartialSchema for ProviderName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .description(Some(
                "A provider's name: `local` (the fleet) or a cloud account's",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ProviderName {}

/// How a cloud account is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudKind {
    /// OpenAI itself: the Responses API where it serves better, every OpenAI-only field.
    OpenAi,
    /// A server speaking OpenAI's Chat Completions, written for the common subset (see
    /// [`crate::provider::OpenAiClient::compatible`]).
    OpenAiCompatible,
    /// Anthropic's Messages API (see [`crate::provider::AnthropicClient`]).
    Anthropic,
}

impl CloudKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::OpenAiCompatible => "openai_compatible",
            Self::Anthropic => "anthropic",
        }
    }

    /// A kind an operator named for a new provider; the error says what the others are for.
    pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
        match raw {
            "openai" => Ok(Self::OpenAi),
            "openai_compatible" => Ok(Self::OpenAiCompatible),
            "anthropic" => Ok(Self::Anthropic),
            "fleet" | "ollama" => Err(ValidationError::new(
                field,
                "the fleet is the provider `local`: add its hosts at /v1/admin/hosts",
            )),
            _ => Err(ValidationError::new(
                field,
                "must be \"openai\", \"openai_compatible\" or \"anthropic\"",
            )),
        }
    }

    /// A kind as stored (the check constraint admits no other).
    pub fn stored(raw: &str) -> Option<Self> {
        Self::parse("kind", raw).ok()
    }
}

/// How a cloud account's key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyHeader {
    /// `Authorization: Bearer <key>`.
    #[default]
    Authorization,
    /// Azure OpenAI's `api-key: <key>`.
    ApiKey,
}

impl KeyHeader {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorization => "authorization",
            Self::ApiKey => "api-key",
        }
    }

    pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
        match raw {
            "authorization" => Ok(Self::Authorization),
            "api-key" => Ok(Self::ApiKey),
            _ => Err(ValidationError::new(
                field,
                "must be \"authorization\" (Bearer) or \"api-key\" (Azure OpenAI)",
            )),
        }
    }
}

/// A named cloud account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudAccount {
    pub name: ProviderName,
    pub kind: CloudKind,
    /// Without a trailing slash; an Azure deployment's URL included.
    pub base_url: String,
    /// Sent as `?api-version=` on every call (Azure OpenAI).
    pub api_version: Option<String>,
    pub key_header: KeyHeader,
    pub api_key: Option<SealedKey>,
    /// Calls in flight per worker.
    pub max_concurrency: u32,
    /// `None`: the worker's `PROVIDER_TIMEOUT_SECS`.
    pub timeout: Option<Duration>,
    /// Overrides of the settings' circuit policy.
    pub circuit_failure_threshold: Option<u32>,
    pub circuit_cooldown: Option<Duration>,
    pub enabled: bool,
}

/// A change to a cloud account (`None` leaves a value alone; `Some(None)` clears one).
#[derive(Debug, Clone, Default)]
pub struct CloudChange {
    pub base_url: Option<String>,
    pub api_version: Option<Option<String>>,
    pub key_header: Option<KeyHeader>,
    pub api_key: Option<Option<SealedKey>>,
    pub max_concurrency: Option<u32>,
    pub timeout_ms: Option<Option<u32>>,
    pub circuit_failure_threshold: Option<Option<u32>>,
    pub circuit_cooldown_ms: Option<Option<u32>>,
    pub enabled: Option<bool>,
}

impl CloudChange {
    /// Whether the change names nothing.
    pub fn is_empty(&self) -> bool {
        self.base_url.is_none()
            && self.api_version.is_none()
            && self.key_header.is_none()
            && self.api_key.is_none()
            && self.max_concurrency.is_none()
            && self.timeout_ms.is_none()
            && self.circuit_failure_threshold.is_none()
            && self.circuit_cooldown_ms.is_none()
            && self.enabled.is_none()
    }
}

/// OpenAI's own address, where an `openai` account goes unless told otherwise.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Anthropic's, likewise for an `anthropic` account (its SDKs' form: no `/v1`).
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

fn bounded(
    field: &str,
    value: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ValidationError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ValidationError::new(
            field,
            format!("must be between {} and {}", range.start(), range.end()),
        ))
    }
}

impl CloudAccount {
    /// A new account named `name` of `kind`, as `change` describes it: an `openai_compatible`
    /// account needs its `base_url`, an `openai` or `anthropic` one goes to OpenAI or Anthropic
    /// unless given another.
    pub fn create(
        name: ProviderName,
        kind: CloudKind,
        change: CloudChange,
    ) -> Result<Self, ValidationError> {
        if name.is_local() {
            return Err(ValidationError::new(
                "name",
                "`local` is the fleet: add its hosts at /v1/admin/hosts",
            ));
        }
        if kind == CloudKind::OpenAiCompatible && change.base_url.is_none() {
            return Err(ValidationError::new(
                "base_url",
                "is required for an openai_compatible provider",
            ));
        }
        let blank = Self {
            name,
            kind,
            base_url: match kind {
                CloudKind::Anthropic => ANTHROPIC_BASE_URL,
                CloudKind::OpenAi | CloudKind::OpenAiCompatible => OPENAI_BASE_URL,
            }
            .to_owned(),
            api_version: None,
            key_header: KeyHeader::Authorization,
            api_key: None,
            max_concurrency: 256,
            timeout: None,
            circuit_failure_threshold: None,
            circuit_cooldown: None,
            enabled: true,
        };
        blank.changed(change)
    }

    /// The account with `change` applied, refusing (and naming) the first value out of bounds.
    pub fn changed(&self, change: CloudChange) -> Result<Self, ValidationError> {
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        let mut next = self.clone();
        if let Some(url) = change.base_url {
            next.base_url = check_base_url("base_url", &url)?;
        }
        if let Some(version) = change.api_version {
            next.api_version = version
                .map(|v| match v.trim() {
                    v if v.is_empty() || v.len() > 40 => Err(ValidationError::new(
                        "api_version",
                        "must be 1 to 40 characters (e.g. 2024-10-21)",
                    )),
                    v => Ok(v.to_owned()),
                })
                .transpose()?;
        }
        if let Some(header) = change.key_header {
            next.key_header = header;
        }
        if let Some(key) = change.api_key {
            next.api_key = key;
        }
        if let Some(n) = change.max_concurrency {
            next.max_concurrency = bounded("max_concurrency", n, 1..=10_000)?;
        }
        if let Some(t) = change.timeout_ms {
            next.timeout = t
                .map(|n| bounded("timeout_ms", n, 100..=3_600_000).map(ms))
                .transpose()?;
        }
        if let Some(t) = change.circuit_failure_threshold {
            next.circuit_failure_threshold = t
                .map(|n| bounded("circuit_failure_threshold", n, 1..=1000))
                .transpose()?;
        }
        if let Some(c) = change.circuit_cooldown_ms {
            next.circuit_cooldown = c
                .map(|n| bounded("circuit_cooldown_ms", n, 100..=3_600_000).map(ms))
                .transpose()?;
        }
        if let Some(e) = change.enabled {
            next.enabled = e;
        }
        if next.kind != CloudKind::OpenAiCompatible && next.api_version.is_some() {
            return Err(ValidationError::new(
                "api_version",
                "is for Azure OpenAI: give the provider kind openai_compatible",
            ));
        }
        if next.kind == CloudKind::Anthropic && next.key_header != KeyHeader::Authorization {
            return Err(ValidationError::new(
                "key_header",
                "Anthropic takes its key as x-api-key, always",
            ));
        }
        Ok(next)
    }

    /// Whether a call may go to it: enabled, and with a key if it is OpenAI or Anthropic (a
    /// compatible server may take none).
    pub fn is_configured(&self) -> bool {
        self.enabled && (self.api_key.is_some() || self.kind == CloudKind::OpenAiCompatible)
    }

    /// The settings' circuit policy with this account's overrides.
    pub fn circuit(&self, settings: &CircuitPolicy) -> CircuitPolicy {
        CircuitPolicy {
            failure_threshold: self
                .circuit_failure_threshold
                .unwrap_or(settings.failure_threshold),
            cooldown: self.circuit_cooldown.unwrap_or(settings.cooldown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_then_interned_once() {
        let a = ProviderName::parse("name", "groq-eu_2").expect("a name");
        let b = ProviderName::stored("groq-eu_2");
        assert_eq!(a, b);
        assert!(std::ptr::eq(a.as_str(), b.as_str()), "one copy of the name");
        assert_eq!(ProviderName::stored("local"), ProviderName::LOCAL);
        assert!(ProviderName::LOCAL.is_local());
        for bad in ["", "Groq", "9x", "a b", "x/y", &"a".repeat(41)] {
            assert_eq!(
                ProviderName::parse("name", bad).expect_err(bad).field,
                "name"
            );
        }
        let json = serde_json::to_string(&a).expect("serializes");
        assert_eq!(json, "\"groq-eu_2\"");
        let back: ProviderName = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, a);
    }

    #[test]
    fn kinds_say_what_the_others_are_for() {
        assert_eq!(
            CloudKind::parse("kind", "openai_compatible"),
            Ok(CloudKind::OpenAiCompatible)
        );
        assert_eq!(
            CloudKind::parse("kind", "anthropic"),
            Ok(CloudKind::Anthropic)
        );
        let fleet = CloudKind::parse("kind", "fleet").expect_err("the fleet");
        assert!(
            fleet.message.contains("/v1/admin/hosts"),
            "{}",
            fleet.message
        );
        assert_eq!(
            CloudKind::parse("kind", "bedrock").expect_err("x").field,
            "kind"
        );
    }

    #[test]
    fn an_account_is_checked_as_it_is_created_and_changed() {
        let groq = ProviderName::parse("name", "groq").expect("a name");
        let missing =
            CloudAccount::create(groq, CloudKind::OpenAiCompatible, CloudChange::default());
        assert_eq!(missing.expect_err("no base URL").field, "base_url");
        let openai = CloudAccount::create(
            ProviderName::OPENAI,
            CloudKind::OpenAi,
            CloudChange::default(),
        )
        .expect("an OpenAI account");
        assert_eq!(openai.base_url, OPENAI_BASE_URL);
        assert!(!openai.is_configured(), "OpenAI needs a key");
        let azure = CloudAccount::create(
            groq,
            CloudKind::OpenAiCompatible,
            CloudChange {
                base_url: Some("https://r.openai.azure.com/openai/deployments/gpt4o/".into()),
                api_version: Some(Some("2024-10-21".into())),
                key_header: Some(KeyHeader::ApiKey),
                circuit_cooldown_ms: Some(Some(1_000)),
                ..CloudChange::default()
            },
        )
        .expect("an Azure account");
        assert_eq!(
            azure.base_url,
            "https://r.openai.azure.com/openai/deployments/gpt4o"
        );
        assert!(azure.is_configured(), "a compatible server may take no key");
        let settings = CircuitPolicy {
            failure_threshold: 5,
            cooldown: Duration::from_secs(30),
        };
        assert_eq!(
            azure.circuit(&settings),
            CircuitPolicy {
                failure_threshold: 5,
                cooldown: Duration::from_secs(1)
            }
        );
        let bad = azure.changed(CloudChange {
            max_concurrency: Some(0),
            ..CloudChange::default()
        });
        assert_eq!(bad.expect_err("out of bounds").field, "max_concurrency");
        let versioned = openai.changed(CloudChange {
            api_version: Some(Some("2024-10-21".into())),
            ..CloudChange::default()
        });
        assert_eq!(versioned.expect_err("not Azure").field, "api_version");
        let local = CloudAccount::create(
            ProviderName::LOCAL,
            CloudKind::OpenAi,
            CloudChange::default(),
        );
        assert_eq!(local.expect_err("the fleet").field, "name");
    }
}
