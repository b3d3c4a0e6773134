//! `/v1/admin/cache/purge`: an operator ends stored answers of the response cache — a tenant's, a
//! model's, one key's, or any of them together (audited). Route and price changes need no purge:
//! the route is in every key, so a changed route never serves the old one's answers.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tollgate_core::db::audit;
use tollgate_core::db::cache::{self, Purge};
use tollgate_core::domain::cache::CacheKey;
use tollgate_core::domain::{ModelName, TenantId};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::audit::actor;
use crate::AppState;
use crate::access::auth::Admin;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(purge))
}

/// Which stored answers to end: at least one field; those given must all match.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    tenant_id: Option<TenantId>,
    /// The model clients asked for.
    model: Option<String>,
    /// A key as 64 hexadecimal characters.
    key: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct Purged {
    /// How many stored answers stopped serving.
    purged: u64,
}

/// Purge the response cache (audited)
#[utoipa::path(post,
    path = "/v1/admin/cache/purge",
    tag = "Admin",
    request_body = PurgeBody,
    responses(
        (status = 200, description = "How many stored answers were purged", body = Purged),
        (status = 422, description = "A field is refused (`invalid_field`, naming it), or none was given"),
    ))]
async fn purge(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(body): JsonBody<PurgeBody>,
) -> Result<Json<Purged>, ApiError> {
    let model = body
        .model
        .as_deref()
        .map(ModelName::parse)
        .transpose()?
        .map(|m| m.as_str().to_owned());
    let key = body
        .key
        .as_deref()
        .map(|k| CacheKey::parse_hex("key", k))
        .transpose()?;
    if body.tenant_id.is_none() && model.is_none() && key.is_none() {
        return Err(ApiError::invalid_field(
            "tenant_id",
            "name a tenant, a model or a key (or several) to purge",
        ));
    }
    let what = Purge {
        tenant: body.tenant_id,
        model,
        key,
    };
    let mut tx = state.pool.begin().await?;
    let purged = cache::purge(&mut *tx, &what).await?;
    let details = json!({
        "tenant_id": what.tenant, "model": what.model, "key": what.key.map(|k| k.hex()),
        "purged": purged,
    });
    audit::record(
        &mut *tx,
        &actor(&admin, "cache.purge", "cache".into(), details),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(Purged { purged }))
}
