//! API tokens, for admins: `GET/POST /v1/admin/tenants/{id}/tokens`, `PATCH/DELETE
//! /v1/admin/tokens/{id}` (access rules; revoke).
//!
//! Each action and its audit entry commit together. A token's secret is shown once, in the answer
//! that created it; a revoked token stops working within the token cache's lifetime (a second) on
//! every api instance.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tollgate_core::db::access::{self, Holder};
use tollgate_core::db::audit;
use tollgate_core::db::tenants;
use tollgate_core::db::tokens::{self, TokenInfo};
use tollgate_core::domain::cache::CachePolicy;
use tollgate_core::domain::{Name, RateLimit, Role, TenantId, TokenId};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::audit::actor;
use super::rules::AccessPatch;
use crate::AppState;
use crate::access::auth::Admin;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;
use crate::http::path::{Path, not_found};
use crate::routes::paging::Listing;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(update_token, revoke_token))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// A label to tell tokens apart.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// One of `admin`, `client`.
    role: Role,
    /// Origins (hosts or `*.domain`) the token may be used from; absent: the tenant's default.
    #[schema(max_items = 100)]
    allowed_domains: Option<Vec<String>>,
    /// Client addresses or CIDR networks the token may be used from; absent: the tenant's.
    #[schema(max_items = 100)]
    allowed_ips: Option<Vec<String>>,
    /// `{per_minute, burst}` for this token alone; absent: only the tenant's limit applies.
    rate_limit: Option<RateLimit>,
    /// `any` or `local_only`; absent: the tenant's.
    data_policy: Option<String>,
    /// The token's own response cache; absent: the tenant's.
    cache: Option<CachePolicy>,
}

#[derive(Serialize, ToSchema)]
struct CreatedToken {
    #[serde(flatten)]
    info: TokenInfo,
    /// The token itself: shown in this answer only, stored only as its hash.
    token: String,
}

/// Create a token for a tenant (audited)
#[utoipa::path(post,
    path = "/v1/admin/tenants/{id}/tokens",
    tag = "Admin",
    description = "The token is shown in this answer only",
    params(("id" = TenantId, Path)),
    request_body = NewToken,
    responses(
        (status = 201, description = "The token, shown this once", body = CreatedToken),
        (status = 404, description = "Not found (`not_found`)"),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
async fn create_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(tenant_id): Path<TenantId>,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let name = Name::parse("name", &body.name)?;
    let rules = AccessPatch {
        allowed_domains: body.allowed_domains.map(Some),
        allowed_ips: body.allowed_ips.map(Some),
        rate_limit: body.rate_limit.map(Some),
        data_policy: body.data_policy.map(Some),
        batch_overflow: None,
        cache: body.cache.map(Some),
    }
    .parse(Holder::Token)?;
    let mut tx = state.pool.begin().await?;
    if tenants::get(&mut *tx, tenant_id).await?.is_none() {
        return Err(not_found::<TenantId>());
    }
    let token = tollgate_core::token::generate();
    let id = tokens::create(
        &mut *tx,
        tenant_id,
        name.as_str(),
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
        "tenant_id": tenant_id, "name": name.as_str(), "role": body.role,
        "allowed_domains": info.allowed_domains, "allowed_ips": info.allowed_ips,
        "data_policy": info.data_policy, "cache": info.cache,
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

/// A tenant's tokens, revoked ones included
#[utoipa::path(get,
    path = "/v1/admin/tenants/{id}/tokens",
    tag = "Admin",
    params(("id" = TenantId, Path)),
    responses(
        (status = 200, description = "The tenant's tokens", body = Listing<TokenInfo, TokenId>),
        (status = 404, description = "Not found (`not_found`)"),
    ))]
async fn list_tokens(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(tenant_id): Path<TenantId>,
) -> Result<Json<Listing<TokenInfo, TokenId>>, ApiError> {
    if tenants::get(&state.pool, tenant_id).await?.is_none() {
        return Err(not_found::<TenantId>());
    }
    let data = tokens::list(&state.pool, tenant_id).await?;
    Ok(Json(Listing {
        data,
        next_cursor: None,
    }))
}

/// Change a token's access rules (audited)
///
/// Changes a token's access rules; every api instance applies them within a second.
#[utoipa::path(patch,
    path = "/v1/admin/tokens/{id}",
    tag = "Admin",
    description = "Applied within a second on every api instance",
    params(("id" = TokenId, Path)),
    request_body = AccessPatch,
    responses(
        (status = 200, description = "The token", body = TokenInfo),
        (status = 404, description = "Not found (`not_found`)"),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
async fn update_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<TokenId>,
    JsonBody(body): JsonBody<AccessPatch>,
) -> Result<Json<TokenInfo>, ApiError> {
    let change = body.parse(Holder::Token)?;
    let mut tx = state.pool.begin().await?;
    if !access::change(&mut *tx, Holder::Token, id.0, &change).await? {
        return Err(not_found::<TokenId>());
    }
    let info = tokens::get(&mut *tx, id)
        .await?
        .ok_or_else(not_found::<TokenId>)?;
    let details = json!({
        "allowed_domains": info.allowed_domains, "allowed_ips": info.allowed_ips,
        "data_policy": info.data_policy, "cache": info.cache,
    });
    audit::record(
        &mut *tx,
        &actor(&admin, "token.update", id.to_string(), details),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(info))
}

/// Revoke a token (audited): refused within a second on every api instance
#[utoipa::path(delete,
    path = "/v1/admin/tokens/{id}",
    tag = "Admin",
    params(("id" = TokenId, Path)),
    responses(
        (status = 200, description = "The revoked token", body = TokenInfo),
        (status = 404, description = "Not found (`not_found`)"),
    ))]
async fn revoke_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<TokenId>,
) -> Result<Json<TokenInfo>, ApiError> {
    let mut tx = state.pool.begin().await?;
    let info = tokens::revoke(&mut *tx, id)
        .await?
        .ok_or_else(not_found::<TokenId>)?;
    audit::record(
        &mut *tx,
        &actor(&admin, "token.revoke", id.to_string(), json!({})),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(info))
}
