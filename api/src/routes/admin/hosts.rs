//! `/v1/admin/hosts`: the fleet's hosts (admin only) — Ollama hosts and OpenAI-compatible servers
//! (vLLM, llama.cpp's server, SGLang, TGI, LM Studio). Adding, changing and removing a host is
//! audited and reaches every worker within a settings refresh; a host's `slots` hold across all
//! workers, and the listing shows how many of each host's slots are held now.
//!
//! A host is probed before it is written, when it is added enabled and when its address or key
//! changes or it is enabled: it must answer as its kind (Ollama's `GET /api/version`, the server's
//! `GET {base_url}/models`), else the change is a 422 naming `base_url`. A host added disabled is
//! not asked until it is enabled (the machine may still be on its way).
//!
//! `POST /v1/admin/hosts {"name": "gpu-1", "base_url": "http://gpu-1:11434", "slots": 4}`;
//! `{"name": "vllm-1", "kind": "openai_compatible", "base_url": "http://gpu-3:8000/v1", "slots":
//! 16, "api_key": "…"}`

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tollgate_core::db::audit::Action;
use tollgate_core::db::host_slots;
use tollgate_core::db::hosts::{self, NAME_TAKEN};
use tollgate_core::db::tokens::Principal;
use tollgate_core::domain::{Host, HostChange, HostKind, HostSpec, SealedKey};
use tollgate_core::secret::Purpose;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::access::auth::Admin;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::JsonBody;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, change, remove))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewHost)]
struct HostBody {
    name: String,
    /// `ollama` (the default) or `openai_compatible`; fixed once added
    #[serde(default = "ollama_by_default")]
    kind: HostKind,
    /// Ollama's address (`http://gpu-1:11434`); for an OpenAI-compatible server, its API's base
    /// with `/v1` (`http://gpu-3:8000/v1`)
    base_url: String,
    #[schema(minimum = 1, maximum = 10000)]
    slots: u32,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    /// An OpenAI-compatible server's key (write-only, sealed)
    api_key: Option<String>,
}

fn ollama_by_default() -> HostKind {
    HostKind::Ollama
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct HostPatch {
    base_url: Option<String>,
    #[schema(minimum = 1, maximum = 10000)]
    slots: Option<u32>,
    enabled: Option<bool>,
    /// A string stores a key; `null` removes it; absent leaves it.
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    api_key: Option<Option<String>>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = HostState)]
struct HostView {
    #[serde(flatten)]
    host: Host,
    /// Write-only: whether a key is stored and its last four characters
    api_key: super::settings::KeyView,
    /// Its slots held now, by every worker: its calls in flight, and for a moment after each, a
    /// slot a worker keeps for its next call.
    slots_held: i64,
}

#[derive(Serialize, ToSchema)]
struct HostList {
    data: Vec<HostView>,
}

/// The fleet's hosts with their slots held now
#[utoipa::path(get,
    path = "/v1/admin/hosts",
    tag = "Admin",
    responses(
        (status = 200, description = "Every host, with its slots held now", body = HostList),
    ))]
async fn list(State(state): State<AppState>, Admin(_): Admin) -> Result<Json<HostList>, ApiError> {
    let held = host_slots::held(&state.pool).await?;
    let data = hosts::all(&state.pool)
        .await?
        .into_iter()
        .map(|host| HostView {
            slots_held: held.get(&host.id).copied().unwrap_or(0),
            api_key: super::settings::KeyView::of(host.api_key.as_ref()),
            host,
        })
        .collect();
    Ok(Json(HostList { data }))
}

/// One host
#[utoipa::path(get,
    path = "/v1/admin/hosts/{name}",
    tag = "Admin",
    params(("name" = String, Path, description = "The host's name")),
    responses(
        (status = 200, description = "The host", body = HostView),
        (status = 404, description = "Not found (`not_found`)"),
    ))]
async fn show(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(name): Path<String>,
) -> Result<Json<HostView>, ApiError> {
    let host = find(&state, &name).await?;
    viewed(&state, host).await
}

/// Add a host: Ollama or OpenAI-compatible (audited)
#[utoipa::path(post,
    path = "/v1/admin/hosts",
    tag = "Admin",
    description = "Probed first (an enabled host must answer as its kind, else a 422 naming `base_url`); every worker uses it within a settings refresh.",
    request_body = HostBody,
    responses(
        (status = 201, description = "The host", body = HostView),
        (status = 409, description = "host_exists"),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(body): JsonBody<HostBody>,
) -> Result<(StatusCode, Json<HostView>), ApiError> {
    let api_key = body.api_key.map(|key| seal(&state, &key)).transpose()?;
    let spec = HostSpec::parse(
        &body.name,
        body.kind,
        &body.base_url,
        body.slots,
        body.enabled,
        api_key,
    )?;
    let taken = || {
        ApiError::conflict(
            ErrorCode::HostExists,
            format!("a host named {:?} exists", spec.name),
        )
    };
    // A taken name is said before the host is asked anything.
    if find(&state, &spec.name).await.is_ok() {
        return Err(taken());
    }
    if spec.enabled {
        probe(&state, &spec).await?;
    }
    let action = audited(&admin, "host.create", &spec);
    let host = hosts::create(&state.pool, &spec, &action)
        .await
        .map_err(|error| match error {
            sqlx::Error::Database(e) if e.constraint() == Some(NAME_TAKEN) => taken(),
            other => other.into(),
        })?;
    super::reload(&state, "fleet").await;
    Ok((
        StatusCode::CREATED,
        Json(HostView {
            api_key: super::settings::KeyView::of(host.api_key.as_ref()),
            host,
            slots_held: 0,
        }),
    ))
}

/// Change a host's address, slots, state or key (audited)
#[utoipa::path(patch,
    path = "/v1/admin/hosts/{name}",
    tag = "Admin",
    params(("name" = String, Path, description = "The host's name")),
    request_body = HostPatch,
    responses(
        (status = 200, description = "The host", body = HostView),
        (status = 404, description = "Not found (`not_found`)"),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
async fn change(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    JsonBody(patch): JsonBody<HostPatch>,
) -> Result<Json<HostView>, ApiError> {
    let current = HostSpec::from(find(&state, &name).await?);
    let api_key = patch
        .api_key
        .map(|key| key.map(|key| seal(&state, &key)).transpose())
        .transpose()?;
    let change = HostChange {
        base_url: patch.base_url,
        slots: patch.slots,
        enabled: patch.enabled,
        api_key,
    };
    let spec = current.changed(change)?;
    let reached_differently =
        spec.base_url != current.base_url || spec.api_key != current.api_key || !current.enabled;
    if spec.enabled && reached_differently {
        probe(&state, &spec).await?;
    }
    let action = audited(&admin, "host.update", &spec);
    let host = hosts::update(&state.pool, &spec, &action)
        .await?
        .ok_or_else(|| ApiError::not_found("no such host"))?;
    super::reload(&state, "fleet").await;
    viewed(&state, host).await
}

/// A host with its slots held now.
async fn viewed(state: &AppState, host: Host) -> Result<Json<HostView>, ApiError> {
    let held = host_slots::held(&state.pool).await?;
    Ok(Json(HostView {
        slots_held: held.get(&host.id).copied().unwrap_or(0),
        api_key: super::settings::KeyView::of(host.api_key.as_ref()),
        host,
    }))
}

/// Remove a host (audited)
#[utoipa::path(delete,
    path = "/v1/admin/hosts/{name}",
    tag = "Admin",
    description = "Calls in flight on it finish",
    params(("name" = String, Path, description = "The host's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "Not found (`not_found`)"),
    ))]
async fn remove(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let action = super::audited_action(&admin, "host.delete", &name, Value::Null);
    if !hosts::delete(&state.pool, &name, &action).await? {
        return Err(ApiError::not_found("no such host"));
    }
    super::reload(&state, "fleet").await;
    Ok(StatusCode::NO_CONTENT)
}

async fn find(state: &AppState, name: &str) -> Result<Host, ApiError> {
    hosts::all(&state.pool)
        .await?
        .into_iter()
        .find(|h| h.name == name)
        .ok_or_else(|| ApiError::not_found("no such host"))
}

/// The audit entry of a host written as `spec`.
fn audited<'a>(admin: &Principal, what: &'a str, spec: &HostSpec) -> Action<'a> {
    let details = json!({
        "kind": spec.kind,
        "base_url": spec.base_url,
        "slots": spec.slots,
        "enabled": spec.enabled,
        "api_key": spec.api_key.as_ref().map(|k| json!({ "last4": k.last4 })),
    });
    super::audited_action(admin, what, &spec.name, details)
}

/// Seals an OpenAI-compatible host's key.
fn seal(state: &AppState, key: &str) -> Result<SealedKey, ApiError> {
    super::settings::seal(state, "api_key", Purpose::HostKey, key)
}

/// Asks the host described by `spec` whether it answers as its kind; a 422 naming `base_url`
/// when it does not.
async fn probe(state: &AppState, spec: &HostSpec) -> Result<(), ApiError> {
    let asked = match spec.kind {
        HostKind::Ollama => "GET /api/version",
        HostKind::OpenaiCompatible => "GET {base_url}/models",
    };
    crate::fleet::listing(state, spec.kind, &spec.base_url, spec.api_key.as_ref())
        .probe()
        .await
        .map_err(|failure| {
            ApiError::invalid_field(
                "base_url",
                format!(
                    "does not answer as an {} host ({asked}: {})",
                    spec.kind.label(),
                    failure.message
                ),
            )
        })
}
