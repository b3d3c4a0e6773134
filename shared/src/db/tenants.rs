//! The `tenants` table.

use sqlx::PgPool;

use crate::domain::TenantId;

/// Violated when a tenant name is taken.
pub const NAME_TAKEN: &str = "tenants_name_key";

pub async fn create(pool: &PgPool, name: &str) -> Result<TenantId, sqlx::Error> {
    let id = TenantId::new();
    sqlx::query("insert into tenants (id, name) values ($1, $2)")
        .bind(id)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(id)
}

pub async fn find_by_name(pool: &PgPool, name: &str) -> Result<Option<TenantId>, sqlx::Error> {
    sqlx::query_scalar("select id from tenants where name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
}
