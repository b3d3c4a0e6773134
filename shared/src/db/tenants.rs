//! The `tenants` table.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use super::tokens::StoredRate;
use crate::domain::TenantId;

/// Violated when a tenant name is taken.
pub const NAME_TAKEN: &str = "tenants_name_key";

/// A tenant as admins see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Set while the tenant is disabled: none of its tokens authenticates.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Defaults for its tokens that have no lists of their own; `null` allows everything.
    pub allowed_domains: Option<Vec<String>>,
    pub allowed_ips: Option<Vec<String>>,
    /// The tenant-wide rate limit, shared by all its tokens; `null` is unlimited.
    #[sqlx(flatten)]
    pub rate_limit: StoredRate,
    /// `any`, or `local_only`: its jobs never go to a cloud provider (its tokens may override).
    pub data_policy: String,
    /// Whether its batch items may overflow to the cloud under hybrid routing.
    pub batch_overflow: bool,
}

const COLUMNS: &str = "id, name, created_at, disabled_at, allowed_domains, \
     allowed_ips::text[] as allowed_ips, rate_limit_per_minute, rate_limit_burst, data_policy, \
     batch_overflow";

pub async fn create(conn: impl PgExecutor<'_>, name: &str) -> Result<TenantId, sqlx::Error> {
    let id = TenantId::new();
    sqlx::query("insert into tenants (id, name) values ($1, $2)")
        .bind(id)
        .bind(name)
        .execute(conn)
        .await?;
    Ok(id)
}

pub async fn find_by_name(pool: &PgPool, name: &str) -> Result<Option<TenantId>, sqlx::Error> {
    sqlx::query_scalar("select id from tenants where name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
}

pub async fn get(conn: impl PgExecutor<'_>, id: TenantId) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as(&format!("select {COLUMNS} from tenants where id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Tenants newest first, strictly older than `before` when given (the cursor).
pub async fn list(
    pool: &PgPool,
    before: Option<TenantId>,
    limit: i64,
) -> Result<Vec<Tenant>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from tenants
          where ($1::uuid is null or id < $1)
          order by id desc
          limit $2"
    ))
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Disables (or enables again) a tenant; `None` if there is no such tenant. Disabling keeps the
/// time it first happened.
pub async fn set_disabled(
    conn: impl PgExecutor<'_>,
    id: TenantId,
    disabled: bool,
) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as(&format!(
        "update tenants
            set disabled_at = case when $2 then coalesce(disabled_at, now()) end
          where id = $1
      returning {COLUMNS}"
    ))
    .bind(id)
    .bind(disabled)
    .fetch_optional(conn)
    .await
}
