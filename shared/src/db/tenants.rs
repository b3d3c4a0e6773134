//! The `tenants` table.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use super::tokens::StoredRate;
use serde_json::Value;

use crate::domain::TenantId;
use crate::domain::cache::CachePolicy;

/// Violated when a tenant name is taken.
pub const NAME_TAKEN: &str = "tenants_name_key";

/// A tenant as admins see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    #[schema(value_type = Option<crate::domain::RateLimit>)]
    pub rate_limit: StoredRate,
    /// `any`, or `local_only`: its jobs never go to a cloud provider (its tokens may override).
    pub data_policy: String,
    /// Whether its batch items may overflow to the cloud under hybrid routing.
    pub batch_overflow: bool,
    /// Its response cache (its tokens may override); `null`: off.
    pub cache: Option<CachePolicy>,
}

/// A tenant as stored: the columns every statement returning one names.
struct TenantRow {
    id: TenantId,
    name: String,
    created_at: DateTime<Utc>,
    disabled_at: Option<DateTime<Utc>>,
    allowed_domains: Option<Vec<String>>,
    allowed_ips: Option<Vec<String>>,
    rate_limit_per_minute: Option<i32>,
    rate_limit_burst: Option<i32>,
    data_policy: String,
    batch_overflow: bool,
    cache: Option<Value>,
}

impl From<TenantRow> for Tenant {
    fn from(row: TenantRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            created_at: row.created_at,
            disabled_at: row.disabled_at,
            allowed_domains: row.allowed_domains,
            allowed_ips: row.allowed_ips,
            rate_limit: StoredRate {
                rate_limit_per_minute: row.rate_limit_per_minute,
                rate_limit_burst: row.rate_limit_burst,
            },
            data_policy: row.data_policy,
            batch_overflow: row.batch_overflow,
            cache: row.cache.and_then(|c| serde_json::from_value(c).ok()),
        }
    }
}

pub async fn create(conn: impl PgExecutor<'_>, name: &str) -> Result<TenantId, sqlx::Error> {
    let id = TenantId::new();
    sqlx::query!(
        "insert into tenants (id, name) values ($1, $2)",
        id as TenantId,
        name
    )
    .execute(conn)
    .await?;
    Ok(id)
}

pub async fn find_by_name(pool: &PgPool, name: &str) -> Result<Option<TenantId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select id as "id: TenantId" from tenants where name = $1"#,
        name
    )
    .fetch_optional(pool)
    .await
}

pub async fn get(conn: impl PgExecutor<'_>, id: TenantId) -> Result<Option<Tenant>, sqlx::Error> {
    let row = sqlx::query_as!(
        TenantRow,
        r#"select id as "id: TenantId", name, created_at, disabled_at, allowed_domains,
                allowed_ips::text[] as allowed_ips, rate_limit_per_minute, rate_limit_burst,
                data_policy, batch_overflow, cache
           from tenants where id = $1"#,
        id as TenantId,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Tenant::from))
}

/// Tenants newest first, strictly older than `before` when given (the cursor).
pub async fn list(
    pool: &PgPool,
    before: Option<TenantId>,
    limit: i64,
) -> Result<Vec<Tenant>, sqlx::Error> {
    let rows = sqlx::query_as!(
        TenantRow,
        r#"select id as "id: TenantId", name, created_at, disabled_at, allowed_domains,
                allowed_ips::text[] as allowed_ips, rate_limit_per_minute, rate_limit_burst,
                data_policy, batch_overflow, cache
           from tenants
          where ($1::uuid is null or id < $1)
          order by id desc
          limit $2"#,
        before as Option<TenantId>,
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Tenant::from).collect())
}

/// Disables (or enables again) a tenant; `None` if there is no such tenant. Disabling keeps the
/// time it first happened.
pub async fn set_disabled(
    conn: impl PgExecutor<'_>,
    id: TenantId,
    disabled: bool,
) -> Result<Option<Tenant>, sqlx::Error> {
    let row = sqlx::query_as!(
        TenantRow,
        r#"update tenants
            set disabled_at = case when $2 then coalesce(disabled_at, now()) end
          where id = $1
      returning id as "id: TenantId", name, created_at, disabled_at, allowed_domains,
                allowed_ips::text[] as allowed_ips, rate_limit_per_minute, rate_limit_burst,
                data_policy, batch_overflow, cache"#,
        id as TenantId,
        disabled,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Tenant::from))
}
