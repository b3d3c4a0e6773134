//! The access-rule columns (`allowed_domains`, `allowed_ips`, the rate limit, the data policy)
//! that tenants and tokens both carry, and a tenant's `batch_overflow`.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::AccessChange;

/// Whose lists to change.
#[derive(Debug, Clone, Copy)]
pub enum Holder {
    Tenant,
    Token,
}

/// Applies `change` to the tenant's or token's lists; `false` if there is no such row.
pub async fn change(
    conn: impl PgExecutor<'_>,
    holder: Holder,
    id: Uuid,
    change: &AccessChange,
) -> Result<bool, sqlx::Error> {
    let domains = change.allowed_domains.clone().flatten();
    let ips = change.allowed_ips.clone().flatten();
    let limit = change.rate_limit.flatten();
    let per_minute = limit.map(|l| i32::try_from(l.per_minute).unwrap_or(i32::MAX));
    let burst = limit.map(|l| i32::try_from(l.burst).unwrap_or(i32::MAX));
    let policy = change.data_policy.flatten().map(|p| p.as_str());
    let cache = change
        .cache
        .flatten()
        .map(|c| serde_json::to_value(c).unwrap_or_default());
    // The same change to either table, written twice so that each is checked against its table;
    // only tenants have `batch_overflow` (a token's change never carries one).
    let done = match holder {
        Holder::Tenant => {
            sqlx::query!(
                "update tenants
                    set allowed_domains = case when $2 then $3::text[] else allowed_domains end,
                        allowed_ips = case when $4 then $5::text[]::inet[] else allowed_ips end,
                        rate_limit_per_minute = case when $6 then $7 else rate_limit_per_minute end,
                        rate_limit_burst = case when $6 then $8 else rate_limit_burst end,
                        data_policy = case when $9 then $10 else data_policy end,
                        batch_overflow = case when $11 then $12 else batch_overflow end,
                        cache = case when $13 then $14 else cache end
                  where id = $1",
                id,
                change.allowed_domains.is_some(),
                domains.as_deref(),
                change.allowed_ips.is_some(),
                ips.as_deref(),
                change.rate_limit.is_some(),
                per_minute,
                burst,
                change.data_policy.is_some(),
                policy,
                change.batch_overflow.is_some(),
                change.batch_overflow.unwrap_or(false),
                change.cache.is_some(),
                cache,
            )
            .execute(conn)
            .await?
        }
        Holder::Token => {
            sqlx::query!(
                "update api_tokens
                    set allowed_domains = case when $2 then $3::text[] else allowed_domains end,
                        allowed_ips = case when $4 then $5::text[]::inet[] else allowed_ips end,
                        rate_limit_per_minute = case when $6 then $7 else rate_limit_per_minute end,
                        rate_limit_burst = case when $6 then $8 else rate_limit_burst end,
                        data_policy = case when $9 then $10 else data_policy end,
                        cache = case when $11 then $12 else cache end
                  where id = $1",
                id,
                change.allowed_domains.is_some(),
                domains.as_deref(),
                change.allowed_ips.is_some(),
                ips.as_deref(),
                change.rate_limit.is_some(),
                per_minute,
                burst,
                change.data_policy.is_some(),
                policy,
                change.cache.is_some(),
                cache,
            )
            .execute(conn)
            .await?
        }
    };
    Ok(done.rows_affected() == 1)
}
