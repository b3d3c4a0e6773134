//! The `providers` table: the registry of named upstreams — the fleet's row, `local` (its hosts
//! are in `hosts`), and the cloud accounts. Every change is audited in its transaction and bumps
//! the settings version, so running processes pick it up with the settings.
//!
//! A provider the routes or the settings name cannot be removed: [`delete`] says who uses it.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};

use super::audit::{self, Action};
use crate::domain::{
    CloudAccount, CloudChange, CloudKind, KeyHeader, ProviderName, SealedKey, ValidationError,
};

/// Violated when a provider's name is taken.
pub const NAME_TAKEN: &str = "providers_pkey";

struct ProviderRow {
    name: String,
    kind: String,
    base_url: Option<String>,
    api_version: Option<String>,
    key_header: String,
    api_key_sealed: Option<Vec<u8>>,
    api_key_last4: Option<String>,
    max_concurrency: i32,
    timeout_ms: Option<i32>,
    circuit_failure_threshold: Option<i32>,
    circuit_cooldown_ms: Option<i32>,
    enabled: bool,
}

impl ProviderRow {
    /// The account, or `None` for the fleet's row (the check constraints admit nothing else).
    fn account(self) -> Option<CloudAccount> {
        let n = |v: i32| u32::try_from(v).unwrap_or(1);
        let ms = |v: i32| Duration::from_millis(u64::from(n(v)));
        Some(CloudAccount {
            name: ProviderName::stored(&self.name),
            kind: CloudKind::stored(&self.kind)?,
            base_url: self.base_url?,
            api_version: self.api_version,
            key_header: KeyHeader::parse("key_header", &self.key_header).unwrap_or_default(),
            api_key: self.api_key_sealed.map(|sealed| SealedKey {
                sealed,
                last4: self.api_key_last4.unwrap_or_default(),
            }),
            max_concurrency: n(self.max_concurrency),
            timeout: self.timeout_ms.map(ms),
            circuit_failure_threshold: self.circuit_failure_threshold.map(n),
            circuit_cooldown: self.circuit_cooldown_ms.map(ms),
            enabled: self.enabled,
        })
    }
}

/// Every cloud account, by name.
pub async fn clouds(pool: &PgPool) -> Result<BTreeMap<ProviderName, CloudAccount>, sqlx::Error> {
    let rows = sqlx::query_as!(
        ProviderRow,
        "select name, kind, base_url, api_version, key_header, api_key_sealed, api_key_last4,
                max_concurrency, timeout_ms, circuit_failure_threshold, circuit_cooldown_ms,
                enabled
           from providers order by name"
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(ProviderRow::account)
        .map(|account| (account.name, account))
        .collect())
}

/// Every provider's name, the fleet's included, as `tx` sees them; held against removal until
/// `tx` ends.
pub(super) async fn names(
    tx: &mut Transaction<'_, Postgres>,
) -> Result<Vec<ProviderName>, sqlx::Error> {
    let names = sqlx::query_scalar!("select name from providers for share")
        .fetch_all(&mut **tx)
        .await?;
    Ok(names.iter().map(|n| ProviderName::stored(n)).collect())
}

/// Adds a cloud account. A taken name is a [`NAME_TAKEN`] violation.
pub async fn create(
    pool: &PgPool,
    account: &CloudAccount,
    action: &Action<'_>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "insert into providers (name, kind, base_url) values ($1, $2, $3)",
        account.name.as_str(),
        account.kind.as_str(),
        account.base_url,
    )
    .execute(&mut *tx)
    .await?;
    write(&mut tx, account).await?;
    audit::record(&mut *tx, action).await?;
    super::version::bump(&mut tx).await?;
    tx.commit().await
}

/// Applies `change` to the cloud account `name` under a row lock; `None` if there is no such
/// account, the inner error (nothing written) if a value is out of bounds. `audit` is shown the
/// account before and after.
pub async fn update(
    pool: &PgPool,
    name: ProviderName,
    change: CloudChange,
    audit: impl FnOnce(&CloudAccount, &CloudAccount) -> Action<'static>,
) -> Result<Option<Result<CloudAccount, ValidationError>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(changed) = change_in(&mut tx, name, change).await? else {
        return Ok(None);
    };
    let (before, after) = match changed {
        Ok(pair) => pair,
        Err(invalid) => return Ok(Some(Err(invalid))),
    };
    audit::record(&mut *tx, &audit(&before, &after)).await?;
    super::version::bump(&mut tx).await?;
    tx.commit().await?;
    Ok(Some(Ok(after)))
}

/// The account before and after `change`, written in `tx` (the caller bumps the version).
pub(super) async fn change_in(
    tx: &mut Transaction<'_, Postgres>,
    name: ProviderName,
    change: CloudChange,
) -> Result<Option<Result<(CloudAccount, CloudAccount), ValidationError>>, sqlx::Error> {
    let Some(before) = locked(tx, name).await? else {
        return Ok(None);
    };
    let after = match before.changed(change) {
        Ok(after) => after,
        Err(invalid) => return Ok(Some(Err(invalid))),
    };
    write(tx, &after).await?;
    Ok(Some(Ok((before, after))))
}

/// The cloud account `name`, locked until `tx` ends; `None` if there is none.
pub(super) async fn locked(
    tx: &mut Transaction<'_, Postgres>,
    name: ProviderName,
) -> Result<Option<CloudAccount>, sqlx::Error> {
    let row = sqlx::query_as!(
        ProviderRow,
        "select name, kind, base_url, api_version, key_header, api_key_sealed, api_key_last4,
                max_concurrency, timeout_ms, circuit_failure_threshold, circuit_cooldown_ms,
                enabled
           from providers where name = $1 for update",
        name.as_str(),
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.and_then(ProviderRow::account))
}

/// Writes everything but the name and kind of `account`'s row.
async fn write(
    tx: &mut Transaction<'_, Postgres>,
    account: &CloudAccount,
) -> Result<(), sqlx::Error> {
    let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    sqlx::query!(
        "update providers
            set base_url = $2, api_version = $3, key_header = $4, api_key_sealed = $5,
                api_key_last4 = $6, max_concurrency = $7, timeout_ms = $8,
                circuit_failure_threshold = $9, circuit_cooldown_ms = $10, enabled = $11,
                updated_at = now()
          where name = $1",
        account.name.as_str(),
        account.base_url,
        account.api_version,
        account.key_header.as_str(),
        account.api_key.as_ref().map(|k| k.sealed.as_slice()),
        account.api_key.as_ref().map(|k| k.last4.as_str()),
        n(account.max_concurrency),
        account.timeout.map(ms),
        account.circuit_failure_threshold.map(n),
        account.circuit_cooldown.map(ms),
        account.enabled,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What became of a removal.
#[derive(Debug, PartialEq, Eq)]
pub enum Removed {
    Removed,
    NotFound,
    /// Still named by these model routes and settings; nothing was removed.
    InUse {
        models: Vec<String>,
        settings: Vec<&'static str>,
    },
}

/// Removes a cloud account and its prices (the fleet, `local`, is not one), unless a route, a
/// model's chain or a setting names it. The settings row is locked first, so a concurrent change
/// cannot name the account while it goes.
pub async fn delete(
    pool: &PgPool,
    name: ProviderName,
    action: &Action<'_>,
) -> Result<Removed, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let named = sqlx::query!(
        "select ai_provider, ai_fallback_provider, ai_hybrid_cloud from settings for update"
    )
    .fetch_one(&mut *tx)
    .await?;
    let settings: Vec<&'static str> = [
        ("ai_provider", named.ai_provider),
        ("ai_fallback_provider", named.ai_fallback_provider),
        ("ai_hybrid_cloud", named.ai_hybrid_cloud),
    ]
    .into_iter()
    .filter(|(_, value)| value == name.as_str())
    .map(|(setting, _)| setting)
    .collect();
    let models = sqlx::query_scalar!(
        r#"select model as "model!" from model_routes where provider = $1
           union
           select model from model_chains where $1 = any(providers)
           order by 1"#,
        name.as_str(),
    )
    .fetch_all(&mut *tx)
    .await?;
    if !models.is_empty() || !settings.is_empty() {
        return Ok(Removed::InUse { models, settings });
    }
    let removed = sqlx::query!(
        "delete from providers where name = $1 and kind <> 'fleet'",
        name.as_str()
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if removed == 0 {
        return Ok(Removed::NotFound);
    }
    audit::record(&mut *tx, action).await?;
    super::version::bump(&mut tx).await?;
    tx.commit().await?;
    Ok(Removed::Removed)
}
