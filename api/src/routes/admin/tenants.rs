//! Tenants, for admins: `GET/POST /v1/admin/tenants`, `PATCH /v1/admin/tenants/{id}` (default
//! access rules), `POST /v1/admin/tenants/{id}/disable|enable`. Access rules include the data
//! policy (`local_only` keeps jobs on the local fleet) and a tenant's `batch_overflow`.
//!
//! Each action and its audit entry commit together; a disabled tenant's tokens stop working within
//! the token cache's lifetime (a second) on every api instance.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tollgate_core::db::access::{self, Holder};
use tollgate_core::db::audit;
use tollgate_core::db::tenants::{self, NAME_TAKEN, Tenant};
use tollgate_core::domain::{Name, TenantId};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::audit::actor;
use super::rules::AccessPatch;
use crate::AppState;
use crate::access::auth::Admin;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::{JsonBody, QueryParams};
use crate::http::path::Path;
use crate::routes::paging::{self, Listing, Page};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(update_tenant))
        .routes(routes!(disable_tenant))
        .routes(routes!(enable_tenant))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    #[schema(min_length = 1, max_length = 100)]
    name: String,
}

/// Create a tenant (audited)
#[utoipa::path(post,
    path = "/v1/admin/tenants",
    tag = "Admin",
    request_body = NewTenant,
    responses(
        (status = 201, description = "The tenant", body = Tenant),
        (status = 409, description = "`tenant_exists`: a tenant has that name"),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
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

/// Tenants, newest first
#[utoipa::path(get,
    path = "/v1/admin/tenants",
    tag = "Admin",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size, 1 to 500 (50 unless given)"),
        ("cursor" = Option<TenantId>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of tenants", body = Listing<Tenant, TenantId>),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
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

/// Change a tenant's default access rules (audited)
///
/// Changes a tenant's default access rules (for its tokens without lists of their own).
#[utoipa::path(patch,
    path = "/v1/admin/tenants/{id}",
    tag = "Admin",
    params(("id" = TenantId, Path)),
    request_body = AccessPatch,
    responses(
        (status = 200, description = "The tenant", body = Tenant),
        (status = 404, description = "Not found (`not_found`)"),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
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
        "cache": tenant.cache,
    });
    audit::record(
        &mut *tx,
        &actor(&admin, "tenant.update", id.to_string(), details),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(tenant))
}

/// Disable a tenant (audited): its tokens stop working within a second
#[utoipa::path(post,
    path = "/v1/admin/tenants/{id}/disable",
    tag = "Admin",
    description = "An admin cannot disable its own tenant (409)",
    params(("id" = TenantId, Path)),
    responses(
        (status = 200, description = "The tenant", body = Tenant),
        (status = 404, description = "Not found (`not_found`)"),
        (status = 409, description = "`own_tenant`: an admin cannot disable its own tenant"),
    ))]
async fn disable_tenant(
    state: State<AppState>,
    admin: Admin,
    id: Path<TenantId>,
) -> Result<Json<Tenant>, ApiError> {
    set_disabled(state, admin, id, true).await
}

/// Enable a tenant (audited)
#[utoipa::path(post,
    path = "/v1/admin/tenants/{id}/enable",
    tag = "Admin",
    params(("id" = TenantId, Path)),
    responses(
        (status = 200, description = "The tenant", body = Tenant),
        (status = 404, description = "Not found (`not_found`)"),
    ))]
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
