//! Tenants, for admins: `GET/POST /v1/admin/tenants`, `PATCH /v1/admin/tenants/{id}` (default
//! access rules), `POST /v1/admin/tenants/{id}/disable|enable`. Access rules include the data
//! policy (`local_only` keeps jobs on the local fleet) and a tenant's `batch_overflow`.
//!
//! Each action and its audit entry commit together; a disabled tenant's tokens stop working within
//! the token cache's lifetime (a second) on every api instance.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tollgate_core::db::access::{self, Holder};
use tollgate_core::db::audit;
use tollgate_core::db::tenants::{self, NAME_TAKEN, Tenant};
use tollgate_core::domain::{Name, TenantId};

use super::audit::actor;
use super::rules::AccessPatch;
use crate::AppState;
use crate::access::auth::Admin;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::{JsonBody, QueryParams};
use crate::http::path::Path;
use crate::routes::paging::{self, Listing, Page};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/tenants", get(list_tenants).post(create_tenant))
        .route("/v1/admin/tenants/{id}", patch(update_tenant))
        .route("/v1/admin/tenants/{id}/disable", post(disable_tenant))
        .route("/v1/admin/tenants/{id}/enable", post(enable_tenant))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
}

async fn create_tenant(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(body): JsonBody<NewTenant>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    let name = Name::parse("name", &body.name)?;
    let mut tx = state.pool.begin().await?;
    let id = tenants::create(&mut *tx, name.as_str())
        .await
        .map_err(|error| match error {
            sqlx::Error::Database(e) if e.constraint() == Some(NAME_TAKEN) => ApiError::conflict(
                ErrorCode::TenantExists,
                format!("a tenant named {:?} exists", name.as_str()),
            ),
            other => other.into(),
        })?;
    let tenant = tenants::get(&mut *tx, id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the tenant just created is missing")))?;
    let action = actor(
        &admin,
        "tenant.create",
        id.to_string(),
        json!({ "name": name.as_str() }),
    );
    audit::record(&mut *tx, &action).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(tenant)))
}

async fn list_tenants(
    State(state): State<AppState>,
    Admin(_): Admin,
    QueryParams(page): QueryParams<Page<TenantId>>,
) -> Result<Json<Listing<Tenant, TenantId>>, ApiError> {
    let limit = paging::page_limit(page.limit)?;
    let data = tenants::list(&state.pool, page.cursor, limit).await?;
    let next_cursor = paging::next_cursor(&data, limit, |t| t.id);
    Ok(Json(Listing { data, next_cursor }))
}

/// Changes a tenant's default access rules (for its tokens without lists of their own).
async fn update_tenant(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<TenantId>,
    JsonBody(body): JsonBody<AccessPatch>,
) -> Result<Json<Tenant>, ApiError> {
    let change = body.parse(Holder::Tenant)?;
    let mut tx = state.pool.begin().await?;
    if !access::change(&mut *tx, Holder::Tenant, id.0, &change).await? {
        return Err(ApiError::not_found("no such tenant"));
    }
    let tenant = tenants::get(&mut *tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such tenant"))?;
    let details = json!({
        "allowed_domains": tenant.allowed_domains, "allowed_ips": tenant.allowed_ips,
        "data_policy": tenant.data_policy, "batch_overflow": tenant.batch_overflow,
    });
    audit::record(
        &mut *tx,
        &actor(&admin, "tenant.update", id.to_string(), details),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(tenant))
}

async fn disable_tenant(
    state: State<AppState>,
    admin: Admin,
    id: Path<TenantId>,
) -> Result<Json<Tenant>, ApiError> {
    set_disabled(state, admin, id, true).await
}

async fn enable_tenant(
    state: State<AppState>,
    admin: Admin,
    id: Path<TenantId>,
) -> Result<Json<Tenant>, ApiError> {
    set_disabled(state, admin, id, false).await
}

/// Disables or enables a tenant. An admin cannot disable its own tenant: that would lock every
/// operator out.
async fn set_disabled(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<TenantId>,
    disabled: bool,
) -> Result<Json<Tenant>, ApiError> {
    if disabled && id == admin.tenant_id {
        return Err(ApiError::conflict(
            ErrorCode::OwnTenant,
            "an admin cannot disable its own tenant",
        ));
    }
    let mut tx = state.pool.begin().await?;
    let tenant = tenants::set_disabled(&mut *tx, id, disabled)
        .await?
        .ok_or_else(|| ApiError::not_found("no such tenant"))?;
    let name = if disabled {
        "tenant.disable"
    } else {
        "tenant.enable"
    };
    audit::record(&mut *tx, &actor(&admin, name, id.to_string(), json!({}))).await?;
    tx.commit().await?;
    Ok(Json(tenant))
}
