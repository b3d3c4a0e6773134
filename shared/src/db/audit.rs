//! The `audit_log` table: what operators did, written in the transaction of each action.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};

use crate::domain::{TenantId, TokenId};

/// One operator action, about to be recorded.
pub struct Action<'a> {
    pub actor_token_id: TokenId,
    pub actor_tenant_id: TenantId,
    /// What was done, e.g. `tenant.create`, `token.revoke`.
    pub action: &'a str,
    /// What it was done to, when it has a name or id.
    pub target: Option<String>,
    pub details: Option<Value>,
}

pub async fn record(conn: impl PgExecutor<'_>, action: &Action<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into audit_log (actor_token_id, actor_tenant_id, action, target, details)
         values ($1, $2, $3, $4, $5)",
        action.actor_token_id as TokenId,
        action.actor_tenant_id as TenantId,
        action.action,
        action.target,
        action.details,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An entry as admins read it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor_token_id: TokenId,
    pub actor_tenant_id: TenantId,
    pub action: String,
    pub target: Option<String>,
    pub details: Option<Value>,
}

/// Entries newest first, strictly before entry `before` when given (the cursor).
pub async fn list(
    pool: &PgPool,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as!(
        Entry,
        r#"select id, at, actor_token_id as "actor_token_id: TokenId",
                actor_tenant_id as "actor_tenant_id: TenantId", action, target, details
           from audit_log
          where ($1::bigint is null or id < $1)
          order by id desc
          limit $2"#,
        before,
        limit,
    )
    .fetch_all(pool)
    .await
}
