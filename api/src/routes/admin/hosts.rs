//! `/v1/admin/hosts`: the fleet of Ollama hosts (admin only). Adding, changing and removing a host
//! is audited and reaches every worker within a settings refresh; a host's `slots` hold across all
//! workers, and the listing shows how many of each host's slots are held now.
//!
//! `POST /v1/admin/hosts {"name": "gpu-1", "base_url": "http://gpu-1:11434", "slots": 4}`

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tollgate_core::db::audit::Action;
use tollgate_core::db::host_slots;
use tollgate_core::db::hosts::{self, NAME_TAKEN};
use tollgate_core::db::tokens::Principal;
use tollgate_core::domain::{Host, HostChange, HostSpec};
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
    base_url: String,
    #[schema(minimum = 1, maximum = 10000)]
    slots: u32,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
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
}

#[derive(Serialize, ToSchema)]
#[schema(as = HostState)]
struct HostView {
    #[serde(flatten)]
    host: Host,
    /// Its slots held now, by every worker: its calls in flight, and for a moment after each, a
    /// slot a worker keeps for its next call.
    slots_held: i64,
}

#[derive(Serialize, ToSchema)]
struct HostList {
    data: Vec<HostView>,
}

/// The fleet's Ollama hosts with their slots held now
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

/// Add an Ollama host (audited)
#[utoipa::path(post,
    path = "/v1/admin/hosts",
    tag = "Admin",
    description = "Every worker uses it within a settings refresh.",
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
    let spec = HostSpec::parse(&body.name, &body.base_url, body.slots, body.enabled)?;
    let action = audited(&admin, "host.create", &spec);
    let host = hosts::create(&state.pool, &spec, &action)
        .await
        .map_err(|error| match error {
            sqlx::Error::Database(e) if e.constraint() == Some(NAME_TAKEN) => ApiError::conflict(
                ErrorCode::HostExists,
                format!("a host named {:?} exists", spec.name),
            ),
            other => other.into(),
        })?;
    reload(&state).await;
    Ok((
        StatusCode::CREATED,
        Json(HostView {
            host,
            slots_held: 0,
        }),
    ))
}

/// Change a host's address, slots or state (audited)
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
    let current = find(&state, &name).await?;
    let change = HostChange {
        base_url: patch.base_url,
        slots: patch.slots,
        enabled: patch.enabled,
    };
    let spec = HostSpec::from(current).changed(&change)?;
    let action = audited(&admin, "host.update", &spec);
    let host = hosts::update(&state.pool, &spec, &action)
        .await?
        .ok_or_else(|| ApiError::not_found("no such host"))?;
    reload(&state).await;
    viewed(&state, host).await
}

/// A host with its slots held now.
async fn viewed(state: &AppState, host: Host) -> Result<Json<HostView>, ApiError> {
    let held = host_slots::held(&state.pool).await?;
    Ok(Json(HostView {
        slots_held: held.get(&host.id).copied().unwrap_or(0),
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
    let action = action(&admin, "host.delete", &name, json!({}));
    if !hosts::delete(&state.pool, &name, &action).await? {
        return Err(ApiError::not_found("no such host"));
    }
    reload(&state).await;
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
        "base_url": spec.base_url,
        "slots": spec.slots,
        "enabled": spec.enabled,
    });
    action(admin, what, &spec.name, details)
}

fn action<'a>(admin: &Principal, what: &'a str, name: &str, details: Value) -> Action<'a> {
    Action {
        actor_token_id: admin.token_id,
        actor_tenant_id: admin.tenant_id,
        action: what,
        target: Some(name.to_owned()),
        details: Some(details),
    }
}

/// This instance sees its own change at once; the others within a refresh period.
async fn reload(state: &AppState) {
    if let Err(error) = state.runtime.reload().await {
        tracing::warn!(%error, "cannot reload the fleet just changed");
    }
}
