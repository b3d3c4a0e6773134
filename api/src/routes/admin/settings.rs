//! `GET/PATCH /v1/admin/settings`: the operator's runtime settings (admin only).
//!
//! `ai_provider`, `ai_fallback_provider` and `ai_hybrid_cloud` name providers of the registry
//! (`/v1/admin/providers`). The `openai_*` fields are the provider `openai`'s, kept here as they
//! were before providers were named. Its key is write-only: it is sealed before it is stored, and
//! reads show only whether one is set and its last four characters. Every change is audited
//! (`settings.update`) with each field's value before and after, in the change's transaction.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tollgate_core::db::audit::Action;
use tollgate_core::db::settings::Snapshot;
use tollgate_core::domain::{CloudChange, ProviderName, SealedKey, SettingsChange, Strategy};
use tollgate_core::secret::{Purpose, last4};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::access::auth::Admin;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;

/// Longest OpenAI key accepted.
const MAX_KEY_CHARS: usize = 512;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show, change))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SettingsPatch {
    /// `local` (the fleet), a cloud provider's name (`openai`), or `hybrid`: the local fleet
    /// first; a job that would wait longer than ai_overflow_wait_ms for a host slot goes to
    /// ai_hybrid_cloud (or a fixed ai_local_share). ai_fallback_provider is not used under hybrid.
    ai_provider: Option<String>,
    /// A provider's name, or `none`.
    ai_fallback_provider: Option<String>,
    ai_local_enabled: Option<bool>,
    /// hybrid: the cloud provider that takes what the fleet does not (default `openai`)
    ai_hybrid_cloud: Option<String>,
    /// The provider `openai`'s key. A string stores a key; `null` removes it; absent leaves it.
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    ai_openai_api_key: Option<Option<String>>,
    /// hybrid: how long a job may wait for a local slot before it overflows to OpenAI (default
    /// 1000)
    #[schema(minimum = 0, maximum = 600000)]
    ai_overflow_wait_ms: Option<u32>,
    /// A percentage sets a fixed share; `null` goes back to overflow; absent leaves it.
    #[schema(minimum = 0, maximum = 100)]
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    ai_local_share: Option<Option<u32>>,
    /// The provider `openai`'s address, including /v1
    openai_base_url: Option<String>,
    /// Calls to one provider in one run: the first and its quick retries
    #[schema(minimum = 1, maximum = 10)]
    provider_attempts: Option<u32>,
    /// First backoff between quick retries (exponential, with jitter)
    #[schema(minimum = 1, maximum = 60000)]
    retry_min_delay_ms: Option<u32>,
    /// Longest backoff between quick retries
    #[schema(minimum = 1, maximum = 60000)]
    retry_max_delay_ms: Option<u32>,
    /// Runs of a job (through the delay queues) before it fails with its last error
    #[schema(minimum = 1, maximum = 50)]
    max_job_attempts: Option<u32>,
    /// Calls to one provider in one run for a structured answer (a JSON schema or object):
    /// the first, and those made again while its answers do not match
    #[schema(minimum = 1, maximum = 10)]
    structured_output_attempts: Option<u32>,
    /// Transient failures in a row that open a provider's circuit
    #[schema(minimum = 1, maximum = 1000)]
    circuit_failure_threshold: Option<u32>,
    /// How long an open circuit refuses calls before one trial call
    #[schema(minimum = 100, maximum = 3600000)]
    circuit_cooldown_ms: Option<u32>,
    /// The provider `openai`'s calls in flight per worker (a host's slots hold across workers)
    #[schema(minimum = 1, maximum = 10000)]
    openai_max_concurrency: Option<u32>,
    /// Days a job (its prompt, result and attempts) is kept; older days are dropped whole
    #[schema(minimum = 1, maximum = 3650)]
    job_retention_days: Option<u32>,
    /// Days usage records are kept (daily rollups are kept for good)
    #[schema(minimum = 1, maximum = 36500)]
    usage_retention_days: Option<u32>,
}

/// Write-only: whether a key is stored, and its last four characters.
#[derive(Serialize, ToSchema)]
pub(super) struct KeyView {
    set: bool,
    last4: Option<String>,
}

impl KeyView {
    pub(super) fn of(key: Option<&SealedKey>) -> Self {
        Self {
            set: key.is_some(),
            last4: key.map(|k| k.last4.clone()),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Settings)]
struct SettingsView {
    /// Grows with every change of the settings or the aliases
    version: i64,
    /// `local` (the fleet), a cloud provider's name, or `hybrid`: the local fleet first; a job
    /// that would wait longer than ai_overflow_wait_ms for a host slot goes to ai_hybrid_cloud
    /// (or a fixed ai_local_share). ai_fallback_provider is not used under hybrid.
    ai_provider: &'static str,
    /// A provider's name, or `none`.
    ai_fallback_provider: &'static str,
    ai_local_enabled: bool,
    /// hybrid: the cloud provider that takes what the fleet does not
    ai_hybrid_cloud: &'static str,
    /// The provider `openai`'s key, write-only: whether one is stored and its last four
    /// characters
    ai_openai_api_key: KeyView,
    /// hybrid: how long a job may wait for a local slot before it overflows to OpenAI (default
    /// 1000)
    #[schema(minimum = 0, maximum = 600000)]
    ai_overflow_wait_ms: u128,
    /// hybrid: the percentage of jobs sent to the fleet first (the rest to OpenAI first), instead
    /// of overflow; null: overflow
    #[schema(minimum = 0, maximum = 100)]
    ai_local_share: Option<u8>,
    /// The provider `openai`'s address (null once it is removed)
    openai_base_url: Option<String>,
    /// Calls to one provider in one run: the first and its quick retries
    #[schema(minimum = 1, maximum = 10)]
    provider_attempts: u32,
    /// First backoff between quick retries (exponential, with jitter)
    #[schema(minimum = 1, maximum = 60000)]
    retry_min_delay_ms: u128,
    /// Longest backoff between quick retries
    #[schema(minimum = 1, maximum = 60000)]
    retry_max_delay_ms: u128,
    /// Runs of a job (through the delay queues) before it fails with its last error
    #[schema(minimum = 1, maximum = 50)]
    max_job_attempts: u32,
    /// Calls to one provider in one run for a structured answer (a JSON schema or object):
    /// the first, and those made again while its answers do not match
    #[schema(minimum = 1, maximum = 10)]
    structured_output_attempts: u32,
    /// Transient failures in a row that open a provider's circuit
    #[schema(minimum = 1, maximum = 1000)]
    circuit_failure_threshold: u32,
    /// How long an open circuit refuses calls before one trial call
    #[schema(minimum = 100, maximum = 3600000)]
    circuit_cooldown_ms: u128,
    /// The provider `openai`'s calls in flight per worker (a host's slots hold across workers)
    #[schema(minimum = 1, maximum = 10000)]
    openai_max_concurrency: Option<u32>,
    /// Days a job (its prompt, result and attempts) is kept (default 30); older days are dropped
    /// whole, and their job ids answer 410 `job_expired`
    #[schema(minimum = 1, maximum = 3650)]
    job_retention_days: u32,
    /// Days usage records are kept (default 400); daily rollups are kept for good
    #[schema(minimum = 1, maximum = 36500)]
    usage_retention_days: u32,
    updated_at: DateTime<Utc>,
}

impl From<Snapshot> for SettingsView {
    fn from(snapshot: Snapshot) -> Self {
        let Snapshot {
            settings: s,
            openai,
        } = snapshot;
        Self {
            version: s.version,
            ai_provider: s.ai_provider.setting_name(),
            ai_fallback_provider: s.ai_fallback_provider.map_or("none", ProviderName::as_str),
            ai_local_enabled: s.ai_local_enabled,
            ai_hybrid_cloud: s.ai_hybrid_cloud.as_str(),
            ai_openai_api_key: KeyView::of(openai.as_ref().and_then(|a| a.api_key.as_ref())),
            ai_overflow_wait_ms: s.ai_overflow_wait.as_millis(),
            ai_local_share: s.ai_local_share,
            openai_base_url: openai.as_ref().map(|a| a.base_url.clone()),
            provider_attempts: s.retry.provider_attempts,
            retry_min_delay_ms: s.retry.min_delay.as_millis(),
            retry_max_delay_ms: s.retry.max_delay.as_millis(),
            max_job_attempts: s.retry.max_job_attempts,
            structured_output_attempts: s.retry.structured_output_attempts,
            circuit_failure_threshold: s.circuit.failure_threshold,
            circuit_cooldown_ms: s.circuit.cooldown.as_millis(),
            openai_max_concurrency: openai.as_ref().map(|a| a.max_concurrency),
            job_retention_days: s.retention.job_days,
            usage_retention_days: s.retention.usage_days,
            updated_at: s.updated_at,
        }
    }
}

/// The runtime settings
#[utoipa::path(get,
    path = "/v1/admin/settings",
    tag = "Admin",
    responses(
        (status = 200, description = "The settings in force", body = SettingsView),
    ))]
async fn show(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Json<SettingsView>, ApiError> {
    Ok(Json(
        tollgate_core::db::settings::snapshot(&state.pool)
            .await?
            .into(),
    ))
}

/// Change runtime settings: active and fallback provider, OpenAI key, base URLs, retry, circuit and concurrency knobs
#[utoipa::path(patch,
    path = "/v1/admin/settings",
    tag = "Admin",
    description = "Every change is audited (`settings.update`, each changed field with its value before and after; the OpenAI key as `{set, last4}`).",
    request_body = SettingsPatch,
    responses(
        (status = 200, description = "The settings after the change", body = SettingsView),
        (status = 422, description = "a value out of bounds, named in field; nothing was changed"),
    ))]
async fn change(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(patch): JsonBody<SettingsPatch>,
) -> Result<Json<SettingsView>, ApiError> {
    let change = parse(&state, patch)?;
    let audit = |before: &Snapshot, after: &Snapshot| {
        Some(Action {
            actor_token_id: admin.token_id,
            actor_tenant_id: admin.tenant_id,
            action: "settings.update",
            target: None,
            details: Some(changes(before, after)),
        })
    };
    let settings = tollgate_core::db::settings::update(&state.pool, change, audit)
        .await?
        .map_err(|invalid| ApiError::invalid_field(invalid.field, invalid.message))?;
    tracing::info!(
        token_id = %admin.token_id,
        version = settings.settings.version,
        "runtime settings changed"
    );
    // This instance sees its own change at once; the others within a refresh period.
    if let Err(error) = state.runtime.reload().await {
        tracing::warn!(%error, "cannot reload the settings just changed");
    }
    Ok(Json(settings.into()))
}

fn parse(state: &AppState, patch: SettingsPatch) -> Result<SettingsChange, ApiError> {
    let ai_provider = patch
        .ai_provider
        .map(|p| Strategy::parse("ai_provider", &p))
        .transpose()?;
    let ai_fallback_provider = patch
        .ai_fallback_provider
        .map(|p| match p.as_str() {
            "none" => Ok(None),
            other => ProviderName::parse("ai_fallback_provider", other).map(Some),
        })
        .transpose()?;
    let ai_hybrid_cloud = patch
        .ai_hybrid_cloud
        .map(|p| ProviderName::parse("ai_hybrid_cloud", &p))
        .transpose()?;
    let openai_api_key = patch
        .ai_openai_api_key
        .map(|key| {
            key.map(|key| seal(state, "ai_openai_api_key", Purpose::OpenAiKey, &key))
                .transpose()
        })
        .transpose()?;
    Ok(SettingsChange {
        ai_provider,
        ai_fallback_provider,
        ai_local_enabled: patch.ai_local_enabled,
        ai_overflow_wait_ms: patch.ai_overflow_wait_ms,
        ai_local_share: patch.ai_local_share,
        ai_hybrid_cloud,
        openai: CloudChange {
            api_key: openai_api_key,
            base_url: patch.openai_base_url,
            max_concurrency: patch.openai_max_concurrency,
            ..CloudChange::default()
        },
        provider_attempts: patch.provider_attempts,
        retry_min_delay_ms: patch.retry_min_delay_ms,
        retry_max_delay_ms: patch.retry_max_delay_ms,
        max_job_attempts: patch.max_job_attempts,
        structured_output_attempts: patch.structured_output_attempts,
        circuit_failure_threshold: patch.circuit_failure_threshold,
        circuit_cooldown_ms: patch.circuit_cooldown_ms,
        job_retention_days: patch.job_retention_days,
        usage_retention_days: patch.usage_retention_days,
    })
}

/// Seals a new provider key given as `field`, for `purpose`; the key itself goes no further than
/// this function.
pub(super) fn seal(
    state: &AppState,
    field: &str,
    purpose: Purpose,
    key: &str,
) -> Result<SealedKey, ApiError> {
    let key = key.trim();
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS || key.contains(char::is_whitespace) {
        return Err(ApiError::invalid_field(
            field,
            format!("must be 1 to {MAX_KEY_CHARS} characters without spaces"),
        ));
    }
    let secret_key = state.secret_key.as_ref().ok_or_else(|| {
        ApiError::invalid_field(
            field,
            "cannot be stored: this server has no TOLLGATE_SECRET_KEY to seal it with",
        )
    })?;
    Ok(SealedKey {
        sealed: secret_key.seal_as(purpose, key),
        last4: last4(key),
    })
}

/// What a change did, field by field as `GET` shows them: `{"field": {"from", "to"}}`. The
/// OpenAI key appears as the view shows it (whether one is set, its last four characters).
fn changes(old: &Snapshot, new: &Snapshot) -> Value {
    let view = |snapshot: &Snapshot| {
        serde_json::to_value(SettingsView::from(snapshot.clone())).unwrap_or_default()
    };
    let (Value::Object(before), Value::Object(after)) = (view(old), view(new)) else {
        return Value::Null;
    };
    // A new key with the same last four characters reads the same: it is told by its seal.
    let sealed = |s: &Snapshot| {
        let key = s.openai.as_ref().and_then(|a| a.api_key.as_ref());
        key.map(|k| k.sealed.clone())
    };
    let key_replaced = |field: &str| field == "ai_openai_api_key" && sealed(old) != sealed(new);
    let changed = after
        .into_iter()
        .filter(|(field, _)| !matches!(field.as_str(), "version" | "updated_at"))
        .filter(|(field, to)| before.get(field) != Some(to) || key_replaced(field))
        .map(|(field, to)| {
            let from = before.get(&field).cloned().unwrap_or(Value::Null);
            (field, json!({ "from": from, "to": to }))
        });
    Value::Object(changed.collect())
}
