//! The response cache's rules: who may use it ([`CachePolicy`], an operator's, per tenant and
//! token), what a request asks of it ([`CacheAsk`]: `no-cache`, `no-store`, a shorter time to
//! live), what it did for a job ([`CacheState`]), and what a job carries for it ([`JobCache`]:
//! the decision of [`JobCache::decide`]).
//!
//! The key ([`CacheKey::of`]) is the SHA-256 of everything that can change an answer: the tenant,
//! the caller's data policy, the route's definition (its chain and upstream models, not the
//! provider that happened to serve) and the whole canonical request — every field of the
//! conversation model (tools, tool choice, format and schema, reasoning, images by their hash,
//! sampling, `n`, `seed`) but the few on the deny-list ([`DENIED`]) that cannot. Canonical: object
//! keys sorted at every level, numbers and texts as JSON writes them, so the same request gives
//! the same key in every process, whatever order its client wrote its keys in.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::conversation::ImageSource;
use super::{DataPolicy, JobRequest, TenantId, ValidationError};

/// The longest an answer may serve identical requests: 90 days (the jobs' retention bounds it
/// further, as their partitions are dropped).
pub const MAX_CACHE_TTL_SECS: u32 = 90 * 24 * 3600;
/// The time to live of a policy that names none: a day.
pub const DEFAULT_CACHE_TTL_SECS: u32 = 24 * 3600;
/// The largest answer stored, in bytes of JSON: a bigger one is answered, not kept.
pub const MAX_CACHED_ANSWER_BYTES: i32 = 1024 * 1024;

/// Fields of a request that cannot change its answer, left out of its key: at the top of the
/// request and among the fields an Anthropic request carries as sent.
pub const DENIED: &[&str] = &[
    "user",
    "metadata",
    "stream",
    "stream_options",
    "webhook_url",
];

/// An operator's cache setting for a tenant or a token (`PATCH /v1/admin/tenants/{id}`, and
/// `/v1/admin/tokens/{id}`, whose setting overrides its tenant's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CachePolicy {
    /// Whether identical requests are answered from a stored answer (and identical jobs in
    /// flight make one provider call).
    pub enabled: bool,
    /// How long an answer serves identical requests, in seconds (default a day, at most 90
    /// days).
    #[serde(default = "default_ttl")]
    #[schema(minimum = 1, maximum = 7_776_000)]
    pub ttl_secs: u32,
    /// Whether sampled requests (a temperature above zero, or none: the provider's default
    /// samples) are cached too: a sampled answer is one of many.
    #[serde(default)]
    pub sampled: bool,
}

fn default_ttl() -> u32 {
    DEFAULT_CACHE_TTL_SECS
}

impl CachePolicy {
    /// The setting checked: a time to live of 1 second to 90 days.
    pub fn check(self, field: &str) -> Result<Self, ValidationError> {
        if self.ttl_secs == 0 || self.ttl_secs > MAX_CACHE_TTL_SECS {
            return Err(ValidationError::new(
                format!("{field}.ttl_secs"),
                format!("must be 1 to {MAX_CACHE_TTL_SECS} seconds"),
            ));
        }
        Ok(self)
    }
}

/// What one request asks of the cache: `Cache-Control`, or the native API's `cache` field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheAsk {
    pub mode: Option<CacheMode>,
    /// The oldest answer it takes and how long its own answer is kept, in seconds (at most its
    /// tenant's time to live).
    #[schema(minimum = 1)]
    pub ttl_secs: Option<u32>,
}

/// A request's opt-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum CacheMode {
    /// Not answered from the cache; its answer is stored.
    #[serde(rename = "no-cache")]
    NoCache,
    /// Neither answered from the cache nor stored.
    #[serde(rename = "no-store")]
    NoStore,
}

impl CacheAsk {
    /// What a `Cache-Control` header asks: `no-store` wins over `no-cache`; `max-age=N` is the
    /// time to live, and `max-age=0` (no answer is young enough) asks what `no-cache` does.
    /// Other directives are ignored.
    pub fn of_header(value: &str) -> Self {
        let mut ask = Self::default();
        let mut fresh_only = false;
        for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            match directive.as_str() {
                "no-store" => ask.mode = Some(CacheMode::NoStore),
                "no-cache" => fresh_only = true,
                _ => {
                    let age = directive.strip_prefix("max-age=");
                    match age.and_then(|a| a.trim_matches('"').parse::<u32>().ok()) {
                        Some(0) => fresh_only = true,
                        Some(secs) => ask.ttl_secs = Some(secs),
                        None => {}
                    }
                }
            }
        }
        if fresh_only && ask.mode.is_none() {
            ask.mode = Some(CacheMode::NoCache);
        }
        ask
    }

    /// This ask, with what `other` asks where this one asks nothing.
    pub fn or(self, other: Self) -> Self {
        Self {
            mode: self.mode.or(other.mode),
            ttl_secs: self.ttl_secs.or(other.ttl_secs),
        }
    }
}

/// What the cache did for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CacheState {
    /// Answered from a stored answer (or an identical job's, run meanwhile).
    Hit,
    /// No stored answer: the provider was called (its answer is stored).
    Miss,
    /// The request opted out, or is sampled and its tenant caches only deterministic ones.
    Bypass,
}

impl CacheState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hit" => Some(Self::Hit),
            "miss" => Some(Self::Miss),
            "bypass" => Some(Self::Bypass),
            _ => None,
        }
    }
}

/// A request's key: the SHA-256 of its canonical form, route, data policy and tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

/// Whose request it is and where it would go: what scopes a key besides the request.
#[derive(Debug, Clone, Copy)]
pub struct KeyScope<'a> {
    pub tenant: TenantId,
    pub policy: DataPolicy,
    /// The route's definition ([`super::Runtime::route_definition`]).
    pub route: &'a str,
}

impl CacheKey {
    /// The key of `request` in `scope`.
    pub fn of(request: &JobRequest, scope: KeyScope<'_>) -> Result<Self, serde_json::Error> {
        let mut value = serde_json::to_value(request)?;
        deny(&mut value);
        let mut hasher = Sha256::new();
        hasher.update(b"tollgate.cache.1\0");
        hasher.update(scope.tenant.0.as_bytes());
        hasher.update(scope.policy.as_str().as_bytes());
        hasher.update(b"\0");
        hasher.update(scope.route.as_bytes());
        hasher.update(b"\0");
        write_canonical(&value, &mut hasher);
        Ok(Self(hasher.finalize().into()))
    }

    /// The key in lowercase hex, as an operator names it.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A key an operator named in hex.
    pub fn parse_hex(field: &str, s: &str) -> Result<Self, ValidationError> {
        let bytes = hex::decode(s)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        bytes
            .map(Self)
            .ok_or_else(|| ValidationError::new(field, "must be 64 hexadecimal characters"))
    }
}

/// Leaves out the denied fields: the request's own, and an Anthropic request's as sent.
fn deny(value: &mut Value) {
    let Value::Object(request) = value else {
        return;
    };
    for field in DENIED {
        request.remove(*field);
    }
    let sent = request
        .get_mut("anthropic")
        .and_then(|a| a.get_mut("fields"))
        .and_then(Value::as_object_mut);
    if let Some(sent) = sent {
        for field in DENIED {
            sent.remove(*field);
        }
    }
}

/// Writes `value` as JSON with every object's keys sorted.
fn write_canonical(value: &Value, hasher: &mut Sha256) {
    match value {
        Value::Object(object) => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    hasher.update(b",");
                }
                write_canonical(&Value::String(key.clone()), hasher);
                hasher.update(b":");
                if let Some(field) = object.get(key) {
                    write_canonical(field, hasher);
                }
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    hasher.update(b",");
                }
                write_canonical(item, hasher);
            }
            hasher.update(b"]");
        }
        scalar => hasher.update(scalar.to_string().as_bytes()),
    }
}

/// What a job carries for the cache: what it did, and for a job that may read or write it, its
/// key and how long its answer is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCache {
    pub state: Option<CacheState>,
    pub key: Option<CacheKey>,
    pub ttl_secs: Option<u32>,
}

impl JobCache {
    /// What the cache does for `request`, asked `ask`, under the caller's `policy` (none: no
    /// cache). Bypassed: `no-store`; a sampled request when the policy caches only deterministic
    /// ones; a request showing an image by a URL not fetched yet (its bytes, which the key must
    /// name, are not known). `no-cache` bypasses the lookup but stores the answer.
    pub fn decide(
        policy: Option<CachePolicy>,
        ask: CacheAsk,
        request: &JobRequest,
        scope: KeyScope<'_>,
    ) -> Self {
        let Some(policy) = policy.filter(|p| p.enabled) else {
            return Self::default();
        };
        let bypass = Self {
            state: Some(CacheState::Bypass),
            ..Self::default()
        };
        if ask.mode == Some(CacheMode::NoStore)
            || (is_sampled(request) && !policy.sampled)
            || has_unfetched_image(request)
        {
            return bypass;
        }
        let Ok(key) = CacheKey::of(request, scope) else {
            return bypass;
        };
        let ttl = ask
            .ttl_secs
            .map_or(policy.ttl_secs, |t| t.min(policy.ttl_secs));
        let state = match ask.mode {
            Some(CacheMode::NoCache) => CacheState::Bypass,
            _ => CacheState::Miss,
        };
        Self {
            state: Some(state),
            key: Some(key),
            ttl_secs: Some(ttl),
        }
    }

    /// Whether the job looks for a stored answer (and waits for an identical one in flight).
    pub fn reads(&self) -> bool {
        self.state == Some(CacheState::Miss) && self.key.is_some()
    }
}

/// Whether the request samples: a temperature above zero, or none (the provider's default
/// samples). Embeddings never do.
pub fn is_sampled(request: &JobRequest) -> bool {
    let temperature = match request {
        JobRequest::Generate(r) => r.options.temperature,
        JobRequest::Chat(r) => r.options.temperature,
        JobRequest::Embedding(_) => return false,
    };
    temperature.is_none_or(|t| t > 0.0)
}

fn has_unfetched_image(request: &JobRequest) -> bool {
    request
        .images()
        .iter()
        .any(|image| matches!(image.source, ImageSource::Url(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: Value) -> JobRequest {
        serde_json::from_value(value).expect("a request")
    }

    fn chat(temperature: f64) -> Value {
        json!({"kind": "chat", "model": "llama3",
               "messages": [{"role": "user", "content": "Hi"}],
               "tools": [{"name": "f",
                          "parameters": {"type": "object", "properties": {"a": {"type": "string"},
                                                                          "b": {"type": "integer"}}}}],
               "options": {"temperature": temperature, "seed": 7}})
    }

    fn scope(route: &str) -> KeyScope<'_> {
        KeyScope {
            tenant: TenantId(uuid::Uuid::from_u128(1)),
            policy: DataPolicy::Any,
            route,
        }
    }

    fn key(value: Value) -> CacheKey {
        CacheKey::of(&request(value), scope("r")).expect("a key")
    }

    #[test]
    fn a_key_does_not_depend_on_the_order_of_keys() {
        let reordered = json!({"options": {"seed": 7, "temperature": 0.0}, "kind": "chat",
               "tools": [{"parameters": {"properties": {"b": {"type": "integer"},
                                                        "a": {"type": "string"}},
                                         "type": "object"}, "name": "f"}],
               "messages": [{"content": "Hi", "role": "user"}], "model": "llama3"});
        assert_eq!(key(chat(0.0)), key(reordered));
        // A fixed request's key, the same in every process and release of this key's version.
        assert_eq!(
            key(chat(0.0)).hex(),
            "4eb273735644f0fe585c77e936e28dea3b66b6cc552be9575ac2aac0419e56db"
        );
    }

    #[test]
    fn everything_that_can_change_an_answer_changes_the_key() {
        let base = key(chat(0.0));
        let mut changed = Vec::new();
        for (path, value) in [
            ("/options/seed", json!(8)),
            ("/options/temperature", json!(0.5)),
            ("/messages/0/content", json!("Hi!")),
            ("/tools/0/parameters/properties/a/type", json!("number")),
        ] {
            let mut v = chat(0.0);
            *v.pointer_mut(path).expect("a field") = value;
            changed.push(key(v));
        }
        let mut with_choice = chat(0.0);
        with_choice["tool_choice"] = json!("required");
        changed.push(key(with_choice));
        for other in changed {
            assert_ne!(other, base);
        }
        let request = request(chat(0.0));
        let other_route = CacheKey::of(&request, scope("s")).expect("a key");
        let other_tenant = CacheKey::of(
            &request,
            KeyScope {
                tenant: TenantId(uuid::Uuid::from_u128(2)),
                ..scope("r")
            },
        )
        .expect("a key");
        let local = CacheKey::of(
            &request,
            KeyScope {
                policy: DataPolicy::LocalOnly,
                ..scope("r")
            },
        )
        .expect("a key");
        for other in [other_route, other_tenant, local] {
            assert_ne!(other, base);
        }
    }

    #[test]
    fn denied_fields_leave_the_key_alone() {
        let mut value = serde_json::to_value(request(chat(0.0))).expect("json");
        let plain = value.clone();
        value["metadata"] = json!({"user_id": "u1"});
        value["user"] = json!("someone");
        deny(&mut value);
        assert_eq!(value, plain);
        let mut anthropic = json!({"anthropic": {"fields": {"metadata": {"user_id": "x"},
                                                            "context_management": {}}}});
        deny(&mut anthropic);
        assert_eq!(
            anthropic,
            json!({"anthropic": {"fields": {"context_management": {}}}})
        );
    }

    #[test]
    fn sampled_requests_and_opt_outs_bypass() {
        let on = CachePolicy {
            enabled: true,
            ttl_secs: 60,
            sampled: false,
        };
        let decide =
            |policy, ask, value| JobCache::decide(policy, ask, &request(value), scope("r"));
        let ask = CacheAsk::default();
        assert_eq!(decide(None, ask, chat(0.0)), JobCache::default());
        let off = CachePolicy {
            enabled: false,
            ..on
        };
        assert_eq!(decide(Some(off), ask, chat(0.0)), JobCache::default());
        let plain = decide(Some(on), ask, chat(0.0));
        assert!(plain.reads());
        assert_eq!(plain.ttl_secs, Some(60));
        let sampled = decide(Some(on), ask, chat(0.7));
        assert_eq!(sampled.state, Some(CacheState::Bypass));
        assert_eq!(sampled.key, None);
        let mut unset = chat(0.0);
        unset["options"] = json!({});
        assert_eq!(decide(Some(on), ask, unset.clone()).key, None);
        let sampling = CachePolicy {
            sampled: true,
            ..on
        };
        assert!(decide(Some(sampling), ask, unset).reads());
        let no_cache = CacheAsk::of_header("no-cache, max-age=30");
        let written = decide(Some(on), no_cache, chat(0.0));
        assert_eq!(written.state, Some(CacheState::Bypass));
        assert!(written.key.is_some() && !written.reads());
        assert_eq!(written.ttl_secs, Some(30));
        let longer = CacheAsk::of_header("max-age=3600");
        assert_eq!(decide(Some(on), longer, chat(0.0)).ttl_secs, Some(60));
        let no_store = decide(
            Some(on),
            CacheAsk::of_header("No-Store, no-cache"),
            chat(0.0),
        );
        assert_eq!(
            (no_store.state, no_store.key),
            (Some(CacheState::Bypass), None)
        );
        let still_no_store = CacheAsk::of_header("no-cache, no-store");
        assert_eq!(still_no_store.mode, Some(CacheMode::NoStore));
        let stale = decide(Some(on), CacheAsk::of_header("max-age=0"), chat(0.0));
        assert!(
            stale.key.is_some() && !stale.reads(),
            "max-age=0 reads nothing"
        );
        assert_eq!(CacheAsk::of_header("public, x=1"), CacheAsk::default());
    }

    #[test]
    fn a_policy_bounds_its_time_to_live() {
        let policy: CachePolicy = serde_json::from_value(json!({"enabled": true})).expect("ok");
        assert_eq!(policy.ttl_secs, DEFAULT_CACHE_TTL_SECS);
        assert!(!policy.sampled);
        let zero = CachePolicy {
            ttl_secs: 0,
            ..policy
        };
        assert_eq!(
            zero.check("cache").expect_err("refused").field,
            "cache.ttl_secs"
        );
        assert!(serde_json::from_value::<CachePolicy>(json!({"enabled": true, "x": 1})).is_err());
    }
}
