//! The `hosts` table: the fleet (Ollama hosts and OpenAI-compatible servers) as operators change
//! it. Every change is one transaction
//! that also writes its audit entry, keeps the host's slot rows in step with its `slots`, and bumps
//! the settings version, so every api and worker reloads the fleet within a refresh period.

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::audit::{self, Action};
use crate::domain::{Host, HostKind, HostSpec, SealedKey, bulk_slots};

/// Violated when a host name is taken.
pub const NAME_TAKEN: &str = "hosts_name_key";

struct HostRow {
    id: Uuid,
    name: String,
    kind: String,
    base_url: String,
    slots: i32,
    bulk_slots: i32,
    enabled: bool,
    api_key_sealed: Option<Vec<u8>>,
    api_key_last4: Option<String>,
}

impl From<HostRow> for Host {
    fn from(row: HostRow) -> Self {
        // The check constraints keep both counts between 1 and 10,000, the kind one of the two,
        // and the key's halves together.
        let n = |v: i32| u32::try_from(v).unwrap_or(1);
        let api_key = match (row.api_key_sealed, row.api_key_last4) {
            (Some(sealed), Some(last4)) => Some(SealedKey { sealed, last4 }),
            _ => None,
        };
        Self {
            id: row.id,
            name: row.name,
            kind: HostKind::parse(&row.kind).unwrap_or(HostKind::Ollama),
            base_url: row.base_url,
            slots: n(row.slots),
            bulk_slots: n(row.bulk_slots),
            enabled: row.enabled,
            api_key,
        }
    }
}

/// Every host, by name.
pub async fn all(pool: &PgPool) -> Result<Vec<Host>, sqlx::Error> {
    let rows = sqlx::query_as!(
        HostRow,
        "select id, name, kind, base_url, slots, bulk_slots, enabled, api_key_sealed, api_key_last4
           from hosts order by name"
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Host::from).collect())
}

/// Adds a host. A taken name is a [`NAME_TAKEN`] violation.
pub async fn create(
    pool: &PgPool,
    spec: &HostSpec,
    action: &Action<'_>,
) -> Result<Host, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query_as!(
        HostRow,
        "insert into hosts (id, name, kind, base_url, slots, bulk_slots, enabled,
                            api_key_sealed, api_key_last4)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         returning id, name, kind, base_url, slots, bulk_slots, enabled, api_key_sealed,
                   api_key_last4",
        Uuid::now_v7(),
        spec.name,
        spec.kind.as_str(),
        spec.base_url,
        count(spec.slots),
        count(bulk_slots(spec.slots)),
        spec.enabled,
        spec.api_key.as_ref().map(|k| k.sealed.as_slice()),
        spec.api_key.as_ref().map(|k| k.last4.as_str()),
    )
    .fetch_one(&mut *tx)
    .await?;
    let host = Host::from(row);
    written(tx, &host, action).await?;
    Ok(host)
}

/// Replaces `name`'s address, slots, state and key with `spec`'s (its kind stays); `None` if there
/// is no such host.
pub async fn update(
    pool: &PgPool,
    spec: &HostSpec,
    action: &Action<'_>,
) -> Result<Option<Host>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query_as!(
        HostRow,
        "update hosts
            set base_url = $2, slots = $3, bulk_slots = $4, enabled = $5, api_key_sealed = $6,
                api_key_last4 = $7, updated_at = now()
          where name = $1
         returning id, name, kind, base_url, slots, bulk_slots, enabled, api_key_sealed,
                   api_key_last4",
        spec.name,
        spec.base_url,
        count(spec.slots),
        count(bulk_slots(spec.slots)),
        spec.enabled,
        spec.api_key.as_ref().map(|k| k.sealed.as_slice()),
        spec.api_key.as_ref().map(|k| k.last4.as_str()),
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let host = Host::from(row);
    written(tx, &host, action).await?;
    Ok(Some(host))
}

/// Removes a host (calls in flight on it finish; their slots go with it); `false` if there was
/// none.
pub async fn delete(pool: &PgPool, name: &str, action: &Action<'_>) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let removed = sqlx::query!("delete from hosts where name = $1", name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if removed == 0 {
        return Ok(false);
    }
    audit::record(&mut *tx, action).await?;
    super::version::bump(&mut tx).await?;
    tx.commit().await?;
    Ok(true)
}

/// Gives a host written in `tx` a slot row for each of its slots, records `action`, bumps the
/// settings version and commits.
async fn written(
    mut tx: Transaction<'_, Postgres>,
    host: &Host,
    action: &Action<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into host_slots (host_id, slot)
         select $1, generate_series(1, $2)
         on conflict do nothing",
        host.id,
        count(host.slots),
    )
    .execute(&mut *tx)
    .await?;
    audit::record(&mut *tx, action).await?;
    super::version::bump(&mut tx).await?;
    tx.commit().await
}

fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
