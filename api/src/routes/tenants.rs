//! Tenants and their tokens, for admins: `GET/POST /v1/admin/tenants`, `PATCH
//! /v1/admin/tenants/{id}` (default access rules), `POST /v1/admin/tenants/{id}/disable|enable`,
//! `GET/POST /v1/admin/tenants/{id}/tokens`, `PATCH/DELETE /v1/admin/tokens/{id}` (access rules;
//! revoke), and the audit log of these actions, `GET /v1/admin/audit`. Access rules include the
//! data policy (`local_only` keeps jobs on the local fleet) and a tenant's `batch_overflow`.
//!
//! Each action and its audit entry commit together. A token's secret is shown once, in the answer
//! that created it; a revoked token or a disabled tenant's tokens stop working within the token
//! cache's lifetime (a second) on every api instance.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tollgate_core::db::access::{self, Holder};
use tollgate_core::db::audit::{self, Action, Entry};
use tollgate_core::db::tenants::{self, NAME_TAKEN, Tenant};
use tollgate_core::db::tokens::{self, Principal, TokenInfo};
use tollgate_core::domain::{AccessChange, DataPolicy, RateLimit, Role, TenantId, TokenId};

use crate::AppState;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::{JsonBody, QueryParams};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/tenants", get(list_tenants).post(create_tenant))
        .route("/v1/admin/tenants/{id}", patch(update_tenant))
        .route("/v1/admin/tenants/{id}/disable", post(disable_tenant))
        .route("/v1/admin/tenants/{id}/enable", post(enable_tenant))
        .route(
            "/v1/admin/tenants/{id}/tokens",
            get(list_tokens).post(create_token),
        )
        .route(
            "/v1/admin/tokens/{id}",
            patch(update_token).delete(revoke_token),
        )
        .route("/v1/admin/audit", get(audit_log))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// A label to tell tokens apart.
    name: String,
    role: Role,
    /// Origins (hosts or `*.domain`) the token may be used from; absent: the tenant's default.
    allowed_domains: Option<Vec<String>>,
    /// Client addresses or CIDR networks the token may be used from; absent: the tenant's.
    allowed_ips: Option<Vec<String>>,
    /// `{per_minute, burst}` for this token alone; absent: only the tenant's limit applies.
    rate_limit: Option<RateLimit>,
    /// `any` or `local_only`; absent: the tenant's.
    data_policy: Option<String>,
}

/// A change of access rules: a list replaces, `null` clears, an absent field is left alone.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessPatch {
    #[serde(default, deserialize_with = "crate::extract::present")]
    allowed_domains: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "crate::extract::present")]
    allowed_ips: Option<Option<Vec<String>>>,
    /// `{per_minute, burst}`; a token's applies to it alone, a tenant's to all its tokens together.
    #[serde(default, deserialize_with = "crate::extract::present")]
    rate_limit: Option<Option<RateLimit>>,
    /// `any` or `local_only`: whether the jobs may leave the local fleet. A token's `null` goes
    /// back to its tenant's.
    #[serde(default, deserialize_with = "crate::extract::present")]
    data_policy: Option<Option<String>>,
    /// A tenant's alone: whether its batch items may overflow to the cloud under hybrid routing.
    batch_overflow: Option<bool>,
}

impl AccessPatch {
    fn parse(self, holder: Holder) -> Result<AccessChange, ApiError> {
        const POLICY: &str = "data_policy";
        let data_policy = match (self.data_policy, holder) {
            (Some(None), Holder::Tenant) => {
                return Err(ApiError::invalid_field(
                    POLICY,
                    "a tenant's must be \"any\" or \"local_only\"",
                ));
            }
            (policy, _) => policy
                .map(|p| p.map(|p| DataPolicy::parse(POLICY, &p)).transpose())
                .transpose()?,
        };
        if self.batch_overflow.is_some() && matches!(holder, Holder::Token) {
            return Err(ApiError::invalid_field(
                "batch_overflow",
                "is a tenant's setting, not a token's",
            ));
        }
        Ok(AccessChange {
            data_policy,
            batch_overflow: self.batch_overflow,
            ..AccessChange::parse(self.allowed_domains, self.allowed_ips, self.rate_limit)?
        })
    }
}

#[derive(Serialize)]
struct CreatedToken {
    #[serde(flatten)]
    info: TokenInfo,
    /// The token itself: shown in this answer only, stored only as its hash.
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page<C> {
    limit: Option<i64>,
    cursor: Option<C>,
}

#[derive(Serialize)]
struct Listing<T, C> {
    data: Vec<T>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    next_cursor: Option<C>,
}

async fn create_tenant(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(body): JsonBody<NewTenant>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 100 characters",
        ));
    }
    let mut tx = state.pool.begin().await?;
    let id = tenants::create(&mut *tx, name)
        .await
        .map_err(|error| match error {
            sqlx::Error::Database(e) if e.constraint() == Some(NAME_TAKEN) => {
                ApiError::conflict("tenant_exists", format!("a tenant named {name:?} exists"))
            }
            other => other.into(),
        })?;
    let tenant = tenants::get(&mut *tx, id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the tenant just created is missing")))?;
    let action = actor(
        &admin,
        "tenant.create",
        id.to_string(),
        json!({ "name": name }),
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
    let limit = page_limit(page.limit)?;
    let data = tenants::list(&state.pool, page.cursor, limit).await?;
    let next_cursor = super::paging::next_cursor(&data, limit, |t| t.id);
    Ok(Json(Listing { data, next_cursor }))
}

async fn disable_tenant(
    state: State<AppState>,
    admin: Admin,
    id: Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    set_disabled(state, admin, id, true).await
}

async fn enable_tenant(
    state: State<AppState>,
    admin: Admin,
    id: Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    set_disabled(state, admin, id, false).await
}

/// Disables or enables a tenant. An admin cannot disable its own tenant: that would lock every
/// operator out.
async fn set_disabled(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    disabled: bool,
) -> Result<Json<Tenant>, ApiError> {
    let id = super::ids::tenant_id(&id)?;
    if disabled && id == admin.tenant_id {
        return Err(ApiError::conflict(
            "own_tenant",
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

async fn create_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let tenant_id = super::ids::tenant_id(&id)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 100 characters",
        ));
    }
    let rules = AccessPatch {
        allowed_domains: body.allowed_domains.map(Some),
        allowed_ips: body.allowed_ips.map(Some),
        rate_limit: body.rate_limit.map(Some),
        data_policy: body.data_policy.map(Some),
        batch_overflow: None,
    }
    .parse(Holder::Token)?;
    let mut tx = state.pool.begin().await?;
    if tenants::get(&mut *tx, tenant_id).await?.is_none() {
        return Err(ApiError::not_found("no such tenant"));
    }
    let token = tollgate_core::token::generate();
    let id = tokens::create(
        &mut *tx,
        tenant_id,
        name,
        body.role,
        &token.hash,
        &token.display_prefix,
    )
    .await?;
    access::change(&mut *tx, Holder::Token, id.0, &rules).await?;
    let info = tokens::get(&mut *tx, id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the token just created is missing")))?;
    let details = json!({
        "tenant_id": tenant_id, "name": name, "role": body.role,
        "allowed_domains": info.allowed_domains, "allowed_ips": info.allowed_ips,
        "data_policy": info.data_policy,
    });
    audit::record(
        &mut *tx,
        &actor(&admin, "token.create", id.to_string(), details),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            info,
            token: token.secret,
        }),
    ))
}

async fn list_tokens(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<String>,
) -> Result<Json<Listing<TokenInfo, TokenId>>, ApiError> {
    let tenant_id = super::ids::tenant_id(&id)?;
    if tenants::get(&state.pool, tenant_id).await?.is_none() {
        return Err(ApiError::not_found("no such tenant"));
    }
    let data = tokens::list(&state.pool, tenant_id).await?;
    Ok(Json(Listing {
        data,
        next_cursor: None,
    }))
}

/// Changes a tenant's default access rules (for its tokens without lists of their own).
async fn update_tenant(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AccessPatch>,
) -> Result<Json<Tenant>, ApiError> {
    let id = super::ids::tenant_id(&id)?;
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

/// Changes a token's access rules; every api instance applies them within a second.
async fn update_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AccessPatch>,
) -> Result<Json<TokenInfo>, ApiError> {
    let not_found = || ApiError::not_found("no such token");
    let id: TokenId = id.parse().map_err(|_| not_found())?;
    let change = body.parse(Holder::Token)?;
    let mut tx = state.pool.begin().await?;
    if !access::change(&mut *tx, Holder::Token, id.0, &change).await? {
        return Err(not_found());
    }
    let info = tokens::get(&mut *tx, id).await?.ok_or_else(not_found)?;
    let details = json!({
        "allowed_domains": info.allowed_domains, "allowed_ips": info.allowed_ips,
        "data_policy": info.data_policy,
    });
    audit::record(
        &mut *tx,
        &actor(&admin, "token.update", id.to_string(), details),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(info))
}

async fn revoke_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let not_found = || ApiError::not_found("no such token");
    let id: TokenId = id.parse().map_err(|_| not_found())?;
    let mut tx = state.pool.begin().await?;
    let info = tokens::revoke(&mut *tx, id).await?.ok_or_else(not_found)?;
    audit::record(
        &mut *tx,
        &actor(&admin, "token.revoke", id.to_string(), json!({})),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(info))
}

async fn audit_log(
    State(state): State<AppState>,
    Admin(_): Admin,
    QueryParams(page): QueryParams<Page<i64>>,
) -> Result<Json<Listing<Entry, i64>>, ApiError> {
    let limit = page_limit(page.limit)?;
    let data = audit::list(&state.pool, page.cursor, limit).await?;
    let next_cursor = super::paging::next_cursor(&data, limit, |e| e.id);
    Ok(Json(Listing { data, next_cursor }))
}

fn actor<'a>(
    admin: &Principal,
    action: &'a str,
    target: String,
    details: serde_json::Value,
) -> Action<'a> {
    Action {
        actor_token_id: admin.token_id,
        actor_tenant_id: admin.tenant_id,
        action,
        target: Some(target),
        details: Some(details),
    }
}

fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 500",
        ));
    }
    Ok(limit)
}
