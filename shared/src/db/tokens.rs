//! The `api_tokens` table: creating, listing and revoking tokens, and finding who presents one.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use std::sync::Arc;

use super::quotas::Limits;

use crate::domain::cache::CachePolicy;
use crate::domain::{AccessRules, DataPolicy, RateLimit, Role, TenantId, TokenId};
use serde_json::Value;

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: TokenId,
    pub tenant_id: TenantId,
    pub role: Role,
    /// The tenant's monthly limits.
    pub limits: Limits,
    /// Where the token may be used from: its own lists, else its tenant's.
    pub access: Arc<AccessRules>,
    /// The token's own rate limit, and its tenant's (shared by all the tenant's tokens).
    pub token_rate: Option<RateLimit>,
    pub tenant_rate: Option<RateLimit>,
    /// Whether its jobs may leave the local fleet: the token's policy, else its tenant's.
    pub data_policy: DataPolicy,
    /// Its response cache: the token's, else its tenant's (`None`: off).
    pub cache: Option<CachePolicy>,
}

pub async fn create(
    conn: impl PgExecutor<'_>,
    tenant_id: TenantId,
    name: &str,
    role: Role,
    hash: &[u8; 32],
    display_prefix: &str,
) -> Result<TokenId, sqlx::Error> {
    let id = TokenId::new();
    sqlx::query!(
        "insert into api_tokens (id, tenant_id, name, role, token_hash, prefix)
         values ($1, $2, $3, $4, $5, $6)",
        id as TokenId,
        tenant_id as TenantId,
        name,
        role.as_str(),
        hash.as_slice(),
        display_prefix,
    )
    .execute(conn)
    .await?;
    Ok(id)
}

/// A token as admins see it: never the secret, nor its hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: TokenId,
    pub tenant_id: TenantId,
    pub name: String,
    pub role: String,
    /// The token's first characters, to tell tokens apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// Updated at most once a minute.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The token's own lists; `null` uses its tenant's.
    pub allowed_domains: Option<Vec<String>>,
    pub allowed_ips: Option<Vec<String>>,
    #[schema(value_type = Option<crate::domain::RateLimit>)]
    pub rate_limit: StoredRate,
    /// The token's own data policy; `null` uses its tenant's.
    pub data_policy: Option<String>,
    /// The token's own response cache; `null` uses its tenant's.
    pub cache: Option<CachePolicy>,
}

/// A token as stored: the columns every statement returning one names.
struct TokenRow {
    id: TokenId,
    tenant_id: TenantId,
    name: String,
    role: String,
    prefix: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    allowed_domains: Option<Vec<String>>,
    allowed_ips: Option<Vec<String>>,
    rate_limit_per_minute: Option<i32>,
    rate_limit_burst: Option<i32>,
    data_policy: Option<String>,
    cache: Option<Value>,
}

impl From<TokenRow> for TokenInfo {
    fn from(row: TokenRow) -> Self {
        Self {
            id: row.id,
            tenant_id: row.tenant_id,
            name: row.name,
            role: row.role,
            prefix: row.prefix,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
            allowed_domains: row.allowed_domains,
            allowed_ips: row.allowed_ips,
            rate_limit: StoredRate {
                rate_limit_per_minute: row.rate_limit_per_minute,
                rate_limit_burst: row.rate_limit_burst,
            },
            data_policy: row.data_policy,
            cache: row.cache.and_then(|c| serde_json::from_value(c).ok()),
        }
    }
}

/// A rate limit as stored: both columns or neither.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoredRate {
    pub rate_limit_per_minute: Option<i32>,
    pub rate_limit_burst: Option<i32>,
}

impl StoredRate {
    pub fn limit(self) -> Option<RateLimit> {
        Some(RateLimit {
            per_minute: u32::try_from(self.rate_limit_per_minute?).ok()?,
            burst: u32::try_from(self.rate_limit_burst?).ok()?,
        })
    }
}

impl Serialize for StoredRate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.limit().serialize(serializer)
    }
}

pub async fn get(conn: impl PgExecutor<'_>, id: TokenId) -> Result<Option<TokenInfo>, sqlx::Error> {
    let row = sqlx::query_as!(
        TokenRow,
        r#"select id as "id: TokenId", tenant_id as "tenant_id: TenantId", name, role, prefix,
                created_at, last_used_at, revoked_at, allowed_domains,
                allowed_ips::text[] as allowed_ips, rate_limit_per_minute, rate_limit_burst,
                data_policy, cache
           from api_tokens where id = $1"#,
        id as TokenId,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(TokenInfo::from))
}

/// A tenant's tokens, newest first, revoked ones included.
pub async fn list(pool: &PgPool, tenant_id: TenantId) -> Result<Vec<TokenInfo>, sqlx::Error> {
    let rows = sqlx::query_as!(
        TokenRow,
        r#"select id as "id: TokenId", tenant_id as "tenant_id: TenantId", name, role, prefix,
                created_at, last_used_at, revoked_at, allowed_domains,
                allowed_ips::text[] as allowed_ips, rate_limit_per_minute, rate_limit_burst,
                data_policy, cache
           from api_tokens where tenant_id = $1 order by id desc"#,
        tenant_id as TenantId,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(TokenInfo::from).collect())
}

/// Revokes a token (keeping the time of the first revocation); `None` if there is no such token.
/// Every api instance stops accepting it within its cache's lifetime (a second).
pub async fn revoke(
    conn: impl PgExecutor<'_>,
    id: TokenId,
) -> Result<Option<TokenInfo>, sqlx::Error> {
    let row = sqlx::query_as!(
        TokenRow,
        r#"update api_tokens set revoked_at = coalesce(revoked_at, now()) where id = $1
      returning id as "id: TokenId", tenant_id as "tenant_id: TenantId", name, role, prefix,
                created_at, last_used_at, revoked_at, allowed_domains,
                allowed_ips::text[] as allowed_ips, rate_limit_per_minute, rate_limit_burst,
                data_policy, cache"#,
        id as TokenId,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(TokenInfo::from))
}

/// The principal behind a token hash, if the token exists, is not revoked and its tenant is active.
/// Notes the token's use, at most once a minute (callers cache the answer for a second, so this
/// writes rarely).
pub async fn authenticate(
    pool: &PgPool,
    hash: &[u8; 32],
) -> Result<Option<Principal>, sqlx::Error> {
    let row = sqlx::query!(
        r#"with found as (
            select t.id, t.tenant_id, t.role, t.last_used_at, n.monthly_cost_budget,
                   n.monthly_token_quota,
                   coalesce(t.allowed_domains, n.allowed_domains) as allowed_domains,
                   coalesce(t.allowed_ips, n.allowed_ips)::text[] as allowed_ips,
                   t.rate_limit_per_minute, t.rate_limit_burst,
                   n.rate_limit_per_minute as tenant_per_minute,
                   n.rate_limit_burst as tenant_burst,
                   coalesce(t.data_policy, n.data_policy) as data_policy,
                   coalesce(t.cache, n.cache) as cache
              from api_tokens t join tenants n on n.id = t.tenant_id
             where t.token_hash = $1 and t.revoked_at is null and n.disabled_at is null
         ), used as (
            update api_tokens set last_used_at = now()
             where id in (select id from found
                           where last_used_at is null
                              or last_used_at < now() - interval '1 minute')
         )
         select id as "id!: TokenId", tenant_id as "tenant_id!: TenantId", role as "role!",
                monthly_cost_budget, monthly_token_quota, allowed_domains, allowed_ips,
                rate_limit_per_minute, rate_limit_burst, tenant_per_minute, tenant_burst,
                data_policy as "data_policy!", cache
           from found"#,
        hash.as_slice(),
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|row| {
        Some(Principal {
            token_id: row.id,
            tenant_id: row.tenant_id,
            role: Role::parse(&row.role)?,
            limits: Limits {
                monthly_cost_budget: row.monthly_cost_budget,
                monthly_token_quota: row.monthly_token_quota,
            },
            access: Arc::new(AccessRules::from_lists(
                row.allowed_domains,
                row.allowed_ips,
            )),
            token_rate: StoredRate {
                rate_limit_per_minute: row.rate_limit_per_minute,
                rate_limit_burst: row.rate_limit_burst,
            }
            .limit(),
            tenant_rate: StoredRate {
                rate_limit_per_minute: row.tenant_per_minute,
                rate_limit_burst: row.tenant_burst,
            }
            .limit(),
            data_policy: DataPolicy::parse("data_policy", &row.data_policy).ok()?,
            cache: row.cache.and_then(|c| serde_json::from_value(c).ok()),
        })
    }))
}
