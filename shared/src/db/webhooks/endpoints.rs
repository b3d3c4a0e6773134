//! A tenant's webhook endpoint (columns of `tenants`) and its signing secrets (`webhook_secrets`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::domain::TenantId;

/// A tenant's endpoint as admins see it: never a secret, only when each was made and expires.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub url: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub secrets: Vec<SecretInfo>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SecretInfo {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    /// Set once rotated out: until then deliveries are signed with it too.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The tenant's endpoint; `None` if there is no such tenant.
pub async fn endpoint(pool: &PgPool, tenant_id: TenantId) -> Result<Option<Endpoint>, sqlx::Error> {
    let row = sqlx::query!(
        "select webhook_url, webhook_disabled_at, webhook_disabled_reason from tenants where id = $1",
        tenant_id as TenantId,
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let secrets = sqlx::query_as!(
        SecretInfo,
        "select id, created_at, expires_at from webhook_secrets
          where tenant_id = $1 and (expires_at is null or expires_at > now())
          order by id desc",
        tenant_id as TenantId,
    )
    .fetch_all(pool)
    .await?;
    Ok(Some(Endpoint {
        url: row.webhook_url,
        disabled_at: row.webhook_disabled_at,
        disabled_reason: row.webhook_disabled_reason,
        secrets,
    }))
}

/// Sets (or clears) the tenant's endpoint and enables it again, and stores `candidate` (a sealed
/// new secret) if the tenant has no signing secret yet. Returns whether the tenant exists and
/// whether `candidate` became its secret.
pub async fn set_endpoint(
    pool: &PgPool,
    tenant_id: TenantId,
    url: Option<&str>,
    candidate: &[u8],
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"with tenant as (
            update tenants set webhook_url = $2, webhook_disabled_at = null,
                               webhook_disabled_reason = null
             where id = $1
         returning id
         ), secret as (
            insert into webhook_secrets (tenant_id, sealed)
            select id, $3 from tenant
             where not exists (select 1 from webhook_secrets
                                where tenant_id = $1 and expires_at is null)
         returning id
         )
         select exists (select 1 from secret) as "created!" from tenant"#,
        tenant_id as TenantId,
        url,
        candidate,
    )
    .fetch_optional(pool)
    .await
}

/// Makes `sealed` the tenant's signing secret; the secrets it replaces keep signing for `overlap`.
/// Returns when they stop, or `None` if there is no such tenant.
pub async fn rotate_secret(
    pool: &PgPool,
    tenant_id: TenantId,
    sealed: &[u8],
    overlap: Duration,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"with tenant as (
            select id from tenants where id = $1
         ), retired as (
            update webhook_secrets set expires_at = now() + make_interval(secs => $3)
             where tenant_id = $1 and expires_at is null
         ), added as (
            insert into webhook_secrets (tenant_id, sealed) select id, $2 from tenant
         )
         select now() + make_interval(secs => $3) as "stops!" from tenant"#,
        tenant_id as TenantId,
        sealed,
        overlap.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await
}

/// Whether the tenant can sign webhooks (has a secret): a job may name a URL only then.
pub async fn has_secret(pool: &PgPool, tenant_id: TenantId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from webhook_secrets
                         where tenant_id = $1 and (expires_at is null or expires_at > now()))
                  as "exists!""#,
        tenant_id as TenantId,
    )
    .fetch_one(pool)
    .await
}

/// The sealed secrets a delivery is signed with, newest first.
pub async fn signing_secrets(
    pool: &PgPool,
    tenant_id: TenantId,
) -> Result<Vec<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar!(
        "select sealed from webhook_secrets
          where tenant_id = $1 and (expires_at is null or expires_at > now())
          order by id desc",
        tenant_id as TenantId,
    )
    .fetch_all(pool)
    .await
}
