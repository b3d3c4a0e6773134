//! `files`: the JSONL inputs of OpenAI-style batches, uploaded whole and read back whole.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::{FileId, TenantId};

/// A file about to be stored.
pub struct NewFile<'a> {
    pub id: FileId,
    pub tenant_id: TenantId,
    pub filename: &'a str,
    pub content: &'a [u8],
    pub line_count: i32,
}

/// What is known of a stored file without reading its content.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub id: FileId,
    pub purpose: String,
    pub filename: String,
    pub bytes: i64,
    pub line_count: i32,
    pub created_at: DateTime<Utc>,
}

pub async fn insert(pool: &PgPool, file: &NewFile<'_>) -> Result<StoredFile, sqlx::Error> {
    sqlx::query_as!(
        StoredFile,
        r#"insert into files (id, tenant_id, purpose, filename, content, line_count)
         values ($1, $2, 'batch', $3, $4, $5)
         returning id as "id: FileId", purpose, filename,
                   octet_length(content)::bigint as "bytes!", line_count, created_at"#,
        file.id as FileId,
        file.tenant_id as TenantId,
        file.filename,
        file.content,
        file.line_count,
    )
    .fetch_one(pool)
    .await
}

/// A tenant's file; another tenant's is `None`, like one that does not exist.
pub async fn get(
    pool: &PgPool,
    tenant_id: TenantId,
    id: FileId,
) -> Result<Option<StoredFile>, sqlx::Error> {
    sqlx::query_as!(
        StoredFile,
        r#"select id as "id: FileId", purpose, filename, octet_length(content)::bigint as "bytes!",
                line_count, created_at
           from files
          where id = $1 and tenant_id = $2"#,
        id as FileId,
        tenant_id as TenantId,
    )
    .fetch_optional(pool)
    .await
}

/// Which way a listing runs, by creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Newest,
    Oldest,
}

/// A tenant's files in `order`, strictly after the file `after` in it when given (the cursor).
pub async fn list(
    pool: &PgPool,
    tenant_id: TenantId,
    order: Order,
    after: Option<FileId>,
    limit: i64,
) -> Result<Vec<StoredFile>, sqlx::Error> {
    match order {
        Order::Newest => {
            sqlx::query_as!(
                StoredFile,
                r#"select id as "id: FileId", purpose, filename, octet_length(content)::bigint as "bytes!",
                line_count, created_at
           from files
                  where tenant_id = $1 and ($2::uuid is null or id < $2)
                  order by id desc limit $3"#,
                tenant_id as TenantId,
                after as Option<FileId>,
                limit,
            )
            .fetch_all(pool)
            .await
        }
        Order::Oldest => {
            sqlx::query_as!(
                StoredFile,
                r#"select id as "id: FileId", purpose, filename, octet_length(content)::bigint as "bytes!",
                line_count, created_at
           from files
                  where tenant_id = $1 and ($2::uuid is null or id > $2)
                  order by id limit $3"#,
                tenant_id as TenantId,
                after as Option<FileId>,
                limit,
            )
            .fetch_all(pool)
            .await
        }
    }
}

/// Deletes a tenant's file; `false` if there was none. Batches made from it keep running (their
/// items hold the requests).
pub async fn delete(pool: &PgPool, tenant_id: TenantId, id: FileId) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query!(
        "delete from files where id = $1 and tenant_id = $2",
        id as FileId,
        tenant_id as TenantId,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(deleted == 1)
}

/// A tenant's file's content.
pub async fn content(
    pool: &PgPool,
    tenant_id: TenantId,
    id: FileId,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar!(
        "select content from files where id = $1 and tenant_id = $2",
        id as FileId,
        tenant_id as TenantId,
    )
    .fetch_optional(pool)
    .await
}
