//! `/v1/admin/providers`: the registry of upstreams (admin only) — the fleet, `local`, and named
//! cloud accounts of kind `openai` or `openai_compatible` (Groq, Together, Mistral, DeepSeek,
//! OpenRouter; Azure OpenAI with `api_version` and `key_header: "api-key"`). Adding, changing and
//! removing an account is audited and reaches every worker within a settings refresh; its key is
//! write-only. An account a route, a model's chain or a setting names cannot be removed (409
//! naming them).
//!
//! `POST /v1/admin/providers {"name": "groq", "kind": "openai_compatible", "base_url":
//! "https://api.groq.com/openai/v1", "api_key": "…", "max_concurrency": 32}`

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tollgate_core::db::audit::Action;
use tollgate_core::db::providers::{self, NAME_TAKEN, Removed};
use tollgate_core::db::tokens::Principal;
use tollgate_core::domain::{
    CloudAccount, CloudChange, CloudKind, KeyHeader, ProviderName, Runtime,
};
use tollgate_core::secret::Purpose;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::settings::KeyView;
use crate::AppState;
use crate::access::auth::Admin;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::{JsonBody, present};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, change, remove))
}

/// A cloud account as `POST` adds it (`name` and `kind` required) or `PATCH` changes it (absent
/// leaves a value alone; `name` and `kind` are fixed once added).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[schema(as = ProviderBody)]
struct ProviderFields {
    /// A lowercase letter, then up to 39 of a-z, 0-9, `_` and `-`; what routes, prices and
    /// settings call it
    name: Option<String>,
    /// `openai` or `openai_compatible` (`anthropic` is reserved)
    kind: Option<String>,
    /// Including `/v1` (`https://api.groq.com/openai/v1`); an Azure deployment's URL
    /// (`https://r.openai.azure.com/openai/deployments/gpt-4o`). Required for
    /// `openai_compatible`; OpenAI's own for `openai`
    base_url: Option<String>,
    /// Azure OpenAI: sent as `?api-version=` on every call; `null` removes it
    #[serde(default, deserialize_with = "present")]
    api_version: Option<Option<String>>,
    /// How the key is sent: `authorization` (Bearer, the default) or `api-key` (Azure OpenAI)
    key_header: Option<String>,
    /// Write-only, sealed; `null` removes it. Required for calls to an `openai` account
    #[serde(default, deserialize_with = "present")]
    api_key: Option<Option<String>>,
    /// Calls in flight per worker (default 256)
    #[schema(minimum = 1, maximum = 10000)]
    max_concurrency: Option<u32>,
    /// A call's time limit; `null`: the worker's PROVIDER_TIMEOUT_SECS
    #[schema(minimum = 100, maximum = 3600000)]
    #[serde(default, deserialize_with = "present")]
    timeout_ms: Option<Option<u32>>,
    /// Transient failures in a row that open its circuit; `null`: the settings'
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "present")]
    circuit_failure_threshold: Option<Option<u32>>,
    /// How long its open circuit refuses calls; `null`: the settings'
    #[schema(minimum = 100, maximum = 3600000)]
    #[serde(default, deserialize_with = "present")]
    circuit_cooldown_ms: Option<Option<u32>>,
    /// A disabled account is skipped, as if it had no route (default true)
    enabled: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Provider)]
struct ProviderView {
    name: ProviderName,
    /// `fleet` (the provider `local`: its hosts are at /v1/admin/hosts), `openai` or
    /// `openai_compatible`
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    base_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_header: Option<&'static str>,
    /// Write-only: whether a key is stored and its last four characters
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<KeyView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_concurrency: Option<u32>,
    /// `null`: the worker's PROVIDER_TIMEOUT_SECS
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<Option<u128>>,
    /// `null`: the settings'
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit_failure_threshold: Option<Option<u32>>,
    /// `null`: the settings'
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit_cooldown_ms: Option<Option<u128>>,
    /// For the fleet: `ai_local_enabled`
    enabled: bool,
    /// Whether a call may go to it as configured: enabled, with its key (an `openai` account)
    /// or an enabled host (the fleet)
    configured: bool,
    /// For the fleet: its hosts
    #[serde(skip_serializing_if = "Option::is_none")]
    hosts: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct ProviderList {
    data: Vec<ProviderView>,
}

impl From<CloudAccount> for ProviderView {
    fn from(account: CloudAccount) -> Self {
        Self {
            name: account.name,
            kind: account.kind.as_str(),
            configured: account.is_configured(),
            api_key: Some(KeyView::of(account.api_key.as_ref())),
            base_url: Some(account.base_url),
            api_version: account.api_version,
            key_header: Some(account.key_header.as_str()),
            max_concurrency: Some(account.max_concurrency),
            timeout_ms: Some(account.timeout.map(|t| t.as_millis())),
            circuit_failure_threshold: Some(account.circuit_failure_threshold),
            circuit_cooldown_ms: Some(account.circuit_cooldown.map(|t| t.as_millis())),
            enabled: account.enabled,
            hosts: None,
        }
    }
}

/// The fleet as a provider.
fn fleet_view(state: &AppState) -> ProviderView {
    let runtime = state.runtime.current();
    ProviderView {
        name: ProviderName::LOCAL,
        kind: "fleet",
        base_url: None,
        api_version: None,
        key_header: None,
        api_key: None,
        max_concurrency: None,
        timeout_ms: None,
        circuit_failure_threshold: None,
        circuit_cooldown_ms: None,
        enabled: runtime.settings.ai_local_enabled,
        configured: runtime.is_configured(ProviderName::LOCAL),
        hosts: Some(runtime.hosts.len()),
    }
}

impl ProviderFields {
    /// The change the body asks for (its name and kind taken out).
    fn change(self, state: &AppState) -> Result<CloudChange, ApiError> {
        let api_key = self
            .api_key
            .map(|key| {
                key.map(|key| super::settings::seal(state, "api_key", Purpose::OpenAiKey, &key))
                    .transpose()
            })
            .transpose()?;
        let key_header = self
            .key_header
            .map(|h| KeyHeader::parse("key_header", &h))
            .transpose()?;
        Ok(CloudChange {
            base_url: self.base_url,
            api_version: self.api_version,
            key_header,
            api_key,
            max_concurrency: self.max_concurrency,
            timeout_ms: self.timeout_ms,
            circuit_failure_threshold: self.circuit_failure_threshold,
            circuit_cooldown_ms: self.circuit_cooldown_ms,
            enabled: self.enabled,
        })
    }
}

/// Every provider: the fleet, then each cloud account by name
#[utoipa::path(get,
    path = "/v1/admin/providers",
    tag = "Admin",
    responses((status = 200, description = "Every provider", body = ProviderList)))]
async fn list(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Json<ProviderList>, ApiError> {
    let clouds = providers::clouds(&state.pool).await?;
    let data = std::iter::once(fleet_view(&state))
        .chain(clouds.into_values().map(ProviderView::from))
        .collect();
    Ok(Json(ProviderList { data }))
}

/// One provider
#[utoipa::path(get,
    path = "/v1/admin/providers/{name}",
    tag = "Admin",
    params(("name" = String, Path, description = "The provider's name")),
    responses(
        (status = 200, description = "The provider", body = ProviderView),
        (status = 404, description = "Not found (`not_found`)"),
    ))]
async fn show(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(name): Path<String>,
) -> Result<Json<ProviderView>, ApiError> {
    if name == ProviderName::LOCAL.as_str() {
        return Ok(Json(fleet_view(&state)));
    }
    Ok(Json(find(&state, &name).await?.into()))
}

/// Add a cloud account (audited)
#[utoipa::path(post,
    path = "/v1/admin/providers",
    tag = "Admin",
    description = "Every worker uses it within a settings refresh, for the models whose routes name it.",
    request_body = ProviderFields,
    responses(
        (status = 201, description = "The provider", body = ProviderView),
        (status = 409, description = "provider_exists"),
        (status = 422, description = "A field is refused (`invalid_field`, naming it); an unknown kind"),
    ))]
async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(mut body): JsonBody<ProviderFields>,
) -> Result<(StatusCode, Json<ProviderView>), ApiError> {
    let required = |field: &str| ApiError::invalid_field(field, "is required");
    let name = body.name.take().ok_or_else(|| required("name"))?;
    let name = ProviderName::parse("name", &name)?;
    let kind = body.kind.take().ok_or_else(|| required("kind"))?;
    let kind = CloudKind::parse("kind", &kind)?;
    let account = CloudAccount::create(name, kind, body.change(&state)?)?;
    let action = audited(&admin, "provider.create", &account);
    providers::create(&state.pool, &account, &action)
        .await
        .map_err(|error| match error {
            sqlx::Error::Database(e) if e.constraint() == Some(NAME_TAKEN) => ApiError::conflict(
                ErrorCode::ProviderExists,
                format!("a provider named {:?} exists", name.as_str()),
            ),
            other => other.into(),
        })?;
    super::reload(&state, "providers").await;
    Ok((StatusCode::CREATED, Json(account.into())))
}

/// Change a cloud account's address, key, limits or state (audited)
#[utoipa::path(patch,
    path = "/v1/admin/providers/{name}",
    tag = "Admin",
    params(("name" = String, Path, description = "The provider's name")),
    request_body = ProviderFields,
    responses(
        (status = 200, description = "The provider", body = ProviderView),
        (status = 404, description = "Not found (`not_found`)"),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
async fn change(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ProviderFields>,
) -> Result<Json<ProviderView>, ApiError> {
    if name == ProviderName::LOCAL.as_str() {
        return Err(fleet_is_not_an_account());
    }
    let account = find(&state, &name).await?;
    for (field, given) in [("name", &body.name), ("kind", &body.kind)] {
        if given.is_some() {
            return Err(ApiError::invalid_field(
                field,
                "is fixed once the provider is added",
            ));
        }
    }
    let change = body.change(&state)?;
    let audit = |_: &CloudAccount, after: &CloudAccount| audited(&admin, "provider.update", after);
    let account = providers::update(&state.pool, account.name, change, audit)
        .await?
        .ok_or_else(not_found)??;
    super::reload(&state, "providers").await;
    Ok(Json(account.into()))
}

/// Remove a cloud account and its prices (audited); refused while routes or settings name it
#[utoipa::path(delete,
    path = "/v1/admin/providers/{name}",
    tag = "Admin",
    params(("name" = String, Path, description = "The provider's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "Not found (`not_found`)"),
        (status = 409, description = "provider_in_use: the detail names the routes and settings that use it"),
    ))]
async fn remove(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if name == ProviderName::LOCAL.as_str() {
        return Err(fleet_is_not_an_account());
    }
    let account = find(&state, &name).await?;
    let action = super::audited_action(
        &admin,
        "provider.delete",
        account.name.as_str(),
        Value::Null,
    );
    match providers::delete(&state.pool, account.name, &action).await? {
        Removed::Removed => {}
        Removed::NotFound => return Err(not_found()),
        Removed::InUse { models, settings } => {
            return Err(ApiError::conflict(
                ErrorCode::ProviderInUse,
                in_use(account.name, &models, &settings),
            ));
        }
    }
    super::reload(&state, "providers").await;
    Ok(StatusCode::NO_CONTENT)
}

/// Says who names a provider that cannot go.
fn in_use(name: ProviderName, models: &[String], settings: &[&str]) -> String {
    let mut users = Vec::new();
    if !models.is_empty() {
        users.push(format!("the routes of {}", models.join(", ")));
    }
    if !settings.is_empty() {
        users.push(format!("the settings {}", settings.join(", ")));
    }
    format!(
        "provider {:?} is used by {}: change those first",
        name.as_str(),
        users.join(" and ")
    )
}

/// A provider an operator names as `field` of a body (a route's, a chain's, a price's): `local`
/// (or `ollama`, its name before providers were named) or a cloud account the registry has.
pub(super) fn named(runtime: &Runtime, field: &str, raw: &str) -> Result<ProviderName, ApiError> {
    let provider = match raw {
        "ollama" => ProviderName::LOCAL,
        other => ProviderName::parse(field, other)?,
    };
    if provider.is_local() || runtime.clouds.contains_key(&provider) {
        return Ok(provider);
    }
    Err(ApiError::invalid_field(
        field,
        format!("there is no provider named {raw:?} (see /v1/admin/providers)"),
    ))
}

fn fleet_is_not_an_account() -> ApiError {
    ApiError::invalid_field(
        "name",
        "`local` is the fleet: change its hosts at /v1/admin/hosts, switch it with \
         ai_local_enabled",
    )
}

fn not_found() -> ApiError {
    ApiError::not_found("no such provider")
}

async fn find(state: &AppState, name: &str) -> Result<CloudAccount, ApiError> {
    let name = ProviderName::parse("name", name).map_err(|_| not_found())?;
    providers::clouds(&state.pool)
        .await?
        .remove(&name)
        .ok_or_else(not_found)
}

fn audited<'a>(admin: &Principal, what: &'a str, account: &CloudAccount) -> Action<'a> {
    let details = json!({
        "kind": account.kind.as_str(),
        "base_url": account.base_url,
        "api_version": account.api_version,
        "key_header": account.key_header.as_str(),
        "api_key": account.api_key.as_ref().map(|k| json!({ "last4": k.last4 })),
        "max_concurrency": account.max_concurrency,
        "timeout_ms": account.timeout.map(|t| t.as_millis()),
        "circuit_failure_threshold": account.circuit_failure_threshold,
        "circuit_cooldown_ms": account.circuit_cooldown.map(|t| t.as_millis()),
        "enabled": account.enabled,
    });
    super::audited_action(admin, what, account.name.as_str(), details)
}
