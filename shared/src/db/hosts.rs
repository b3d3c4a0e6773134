//! The `ollama_hosts` table: the fleet as operators change it. Every change is one transaction
//! that also writes its audit entry, keeps the host's slot rows in step with its `slots`, and bumps
//! the settings version, so every api and worker reloads the fleet within a refresh period.

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::audit::{self, Action};
use crate::domain::{Host, HostSpec, bulk_slots};

/// Violated when a host name is taken.
pub const NAME_TAKEN: &str = "ollama_hosts_name_key";

struct HostRow {
    id: Uuid,
    name: String,
    base_url: String,
    slots: i32,
    bulk_slots: i32,
    enabled: bool,
}

impl From<HostRow> for Host {
    fn from(row: HostRow) -> Self {
        // The check constraints keep both counts between 1 and 10,000.
        let n = |v: i32| u32::try_from(v).unwrap_or(1);
        Self {
            id: row.id,
            name: row.name,
            base_url: row.base_url,
            slots: n(row.slots),
            bulk_slots: n(row.bulk_slots),
            enabled: row.enabled,
        }
    }
}

/// Every host, by name.
pub async fn all(pool: &PgPool) -> Result<Vec<Host>, sqlx::Error> {
    let rows = sqlx::query_as!(
        HostRow,
        "select id, name, base_url, slots, bulk_slots, enabled from ollama_hosts order by name"
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
        "insert into ollama_hosts (id, name, base_url, slots, bulk_slots, enabled)
         values ($1, $2, $3, $4, $5, $6)
         returning id, name, base_url, slots, bulk_slots, enabled",
        Uuid::now_v7(),
        spec.name,
        spec.base_url,
        count(spec.slots),
        count(bulk_slots(spec.slots)),
        spec.enabled,
    )
    .fetch_one(&mut *tx)
    .await?;
    let host = Host::from(row);
    written(tx, &host, action).await?;
    Ok(host)
}

/// Replaces `name`'s address, slots and state with `spec`'s; `None` if there is no such host.
pub async fn update(
    pool: &PgPool,
    spec: &HostSpec,
    action: &Action<'_>,
) -> Result<Option<Host>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query_as!(
        HostRow,
        "update ollama_hosts
            set base_url = $2, slots = $3, bulk_slots = $4, enabled = $5, updated_at = now()
          where name = $1
         returning id, name, base_url, slots, bulk_slots, enabled",
        spec.name,
        spec.base_url,
        count(spec.slots),
        count(bulk_slots(spec.slots)),
        spec.enabled,
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
    let removed = sqlx::query!("delete from ollama_hosts where name = $1", name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if removed == 0 {
        return Ok(false);
    }
    audit::record(&mut *tx, action).await?;
    super::settings::bump_version(&mut tx).await?;
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
    super::settings::bump_version(&mut tx).await?;
    tx.commit().await
}

fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
