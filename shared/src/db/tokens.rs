//! The `api_tokens` table: creating tokens and finding who presents one.

use rust_decimal::Decimal;
use sqlx::PgPool;

use super::quotas::Limits;

use crate::domain::{Role, TenantId, TokenId};

/// Who a valid token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub token_id: TokenId,
    pub tenant_id: TenantId,
    pub role: Role,
    /// The tenant's monthly limits.
    pub limits: Limits,
}

pub async fn create(
    pool: &PgPool,
    tenant_id: TenantId,
    name: &str,
    role: Role,
    hash: &[u8; 32],
    display_prefix: &str,
) -> Result<TokenId, sqlx::Error> {
    let id = TokenId::new();
    sqlx::query(
        "insert into api_tokens (id, tenant_id, name, role, token_hash, prefix)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(name)
    .bind(role.as_str())
    .bind(hash.as_slice())
    .bind(display_prefix)
    .execute(pool)
    .await?;
    Ok(id)
}

/// The principal behind a token hash, if the token exists, is not revoked and its tenant is active.
pub async fn authenticate(
    pool: &PgPool,
    hash: &[u8; 32],
) -> Result<Option<Principal>, sqlx::Error> {
    type Row = (TokenId, TenantId, String, Option<Decimal>, Option<i64>);
    let row: Option<Row> = sqlx::query_as(
        "select t.id, t.tenant_id, t.role, n.monthly_cost_budget, n.monthly_token_quota
           from api_tokens t join tenants n on n.id = t.tenant_id
          where t.token_hash = $1 and t.revoked_at is null and n.disabled_at is null",
    )
    .bind(hash.as_slice())
    .fetch_optional(pool)
    .await?;
    Ok(
        row.and_then(|(token_id, tenant_id, role, cost_budget, token_quota)| {
            Some(Principal {
                token_id,
                tenant_id,
                role: Role::parse(&role)?,
                limits: Limits {
                    monthly_cost_budget: cost_budget,
                    monthly_token_quota: token_quota,
                },
            })
        }),
    )
}
