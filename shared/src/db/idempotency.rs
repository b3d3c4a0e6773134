//! `idempotency_keys`: the first answer to a POST sent with an `Idempotency-Key`, kept a day and
//! replayed to retries. Statements run inside the transaction that writes the request's work, so
//! the answer is recorded exactly when the work is.

use serde_json::Value;
use sqlx::PgConnection;

use crate::domain::TenantId;

/// How long a key is remembered.
const KEPT_HOURS: i32 = 24;

/// A key's first answer.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub request_hash: Vec<u8>,
    pub status_code: i16,
    pub location: Option<String>,
    pub response: Value,
}

/// Takes the key's lock for the caller's transaction; `false` while another request holds it.
pub async fn try_lock(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    key: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select pg_try_advisory_xact_lock(hashtextextended($1::uuid || ':' || $2, 0)) as "locked!""#,
        tenant_id as TenantId,
        key,
    )
    .fetch_one(conn)
    .await
}

/// The key's first answer, if it was used within the last day (an older one is forgotten here).
pub async fn find(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    key: &str,
) -> Result<Option<Recorded>, sqlx::Error> {
    sqlx::query!(
        "delete from idempotency_keys
          where tenant_id = $1 and key = $2 and created_at < now() - make_interval(hours => $3)",
        tenant_id as TenantId,
        key,
        KEPT_HOURS,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_as!(
        Recorded,
        "select request_hash, status_code, location, response from idempotency_keys
          where tenant_id = $1 and key = $2",
        tenant_id as TenantId,
        key,
    )
    .fetch_optional(conn)
    .await
}

/// Records the key's first answer.
pub async fn record(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    key: &str,
    request_hash: &[u8],
    status_code: i16,
    location: Option<&str>,
    response: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into idempotency_keys (tenant_id, key, request_hash, status_code, location, response)
         values ($1, $2, $3, $4, $5, $6)",
        tenant_id as TenantId,
        key,
        request_hash,
        status_code,
        location,
        response,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// Forgets keys older than a day, at most `limit` of them; returns how many.
pub async fn forget_expired(pool: &sqlx::PgPool, limit: i64) -> Result<u64, sqlx::Error> {
    sqlx::query!(
        "delete from idempotency_keys where ctid in (
            select ctid from idempotency_keys
             where created_at < now() - make_interval(hours => $1) limit $2)",
        KEPT_HOURS,
        limit,
    )
    .execute(pool)
    .await
    .map(|r| r.rows_affected())
}
