//! The `settings` table: one row of runtime settings, its version, and seeding it from the
//! environment on first start.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::audit::Action;
use crate::domain::{
    CircuitPolicy, ProviderName, Retention, RetryPolicy, SealedKey, Settings, SettingsChange,
    Strategy, ValidationError,
};

/// The row as stored; every statement reading it names these columns, checked against the table.
struct SettingsRow {
    version: i64,
    ai_provider: String,
    ai_fallback_provider: String,
    ai_local_enabled: bool,
    openai_api_key_sealed: Option<Vec<u8>>,
    openai_api_key_last4: Option<String>,
    ai_overflow_wait_ms: i32,
    ai_local_share: Option<i32>,
    openai_base_url: String,
    provider_attempts: i32,
    retry_min_delay_ms: i32,
    retry_max_delay_ms: i32,
    max_job_attempts: i32,
    structured_output_attempts: i32,
    circuit_failure_threshold: i32,
    circuit_cooldown_ms: i32,
    openai_max_concurrency: i32,
    job_retention_days: i32,
    usage_retention_days: i32,
    updated_at: DateTime<Utc>,
}

impl TryFrom<SettingsRow> for Settings {
    type Error = sqlx::Error;

    fn try_from(row: SettingsRow) -> Result<Self, Self::Error> {
        let bad = |what: &str| sqlx::Error::Decode(format!("settings row: bad {what}").into());
        // The check constraints keep every number positive.
        let n = |v: i32| u32::try_from(v).unwrap_or(1);
        let ms = |v: i32| Duration::from_millis(u64::from(n(v)));
        let fallback = match row.ai_fallback_provider.as_str() {
            "none" => None,
            other => Some(ProviderName::from_setting(other).ok_or_else(|| bad("fallback"))?),
        };
        let openai_api_key = match (row.openai_api_key_sealed, row.openai_api_key_last4) {
            (Some(sealed), last4) => Some(SealedKey {
                sealed,
                last4: last4.unwrap_or_default(),
            }),
            (None, _) => None,
        };
        Ok(Self {
            version: row.version,
            ai_provider: Strategy::from_setting(&row.ai_provider)
                .ok_or_else(|| bad("ai_provider"))?,
            ai_fallback_provider: fallback,
            ai_local_enabled: row.ai_local_enabled,
            ai_overflow_wait: Duration::from_millis(
                u64::try_from(row.ai_overflow_wait_ms).unwrap_or(0),
            ),
            ai_local_share: row.ai_local_share.map(|n| u8::try_from(n).unwrap_or(100)),
            openai_api_key,
            openai_base_url: row.openai_base_url,
            retry: RetryPolicy {
                provider_attempts: n(row.provider_attempts),
                min_delay: ms(row.retry_min_delay_ms),
                max_delay: ms(row.retry_max_delay_ms),
                max_job_attempts: n(row.max_job_attempts),
                structured_output_attempts: n(row.structured_output_attempts),
            },
            retention: Retention {
                job_days: n(row.job_retention_days),
                usage_days: n(row.usage_retention_days),
            },
            circuit: CircuitPolicy {
                failure_threshold: n(row.circuit_failure_threshold),
                cooldown: ms(row.circuit_cooldown_ms),
            },
            openai_max_concurrency: n(row.openai_max_concurrency),
            updated_at: row.updated_at,
        })
    }
}

pub async fn get(pool: &PgPool) -> Result<Settings, sqlx::Error> {
    let row = sqlx::query_as!(
        SettingsRow,
        "select version, ai_provider, ai_fallback_provider, ai_local_enabled, openai_api_key_sealed,
                openai_api_key_last4, ai_overflow_wait_ms, ai_local_share, openai_base_url,
                provider_attempts, retry_min_delay_ms, retry_max_delay_ms, max_job_attempts,
                structured_output_attempts,
                circuit_failure_threshold, circuit_cooldown_ms, openai_max_concurrency,
                job_retention_days, usage_retention_days, updated_at
           from settings"
    )
    .fetch_one(pool)
    .await?;
    row.try_into()
}

/// The current version: what processes poll to learn that their copy is stale.
pub async fn version(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!("select version from settings")
        .fetch_one(pool)
        .await
}

/// Marks the runtime settings changed (a route or a host was written in `tx`), so every process
/// reloads them.
pub(super) async fn bump_version(tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query!("update settings set version = version + 1, updated_at = now()")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Applies `change` under a row lock, so concurrent changes never lose one another, and bumps the
/// version. `audit` is shown the settings before and after and names the entry to record, in the
/// same transaction (an operator's change is audited; a test's or a seed's need not be). A value
/// out of bounds is the inner error and nothing is written.
pub async fn update(
    pool: &PgPool,
    change: SettingsChange,
    audit: impl FnOnce(&Settings, &Settings) -> Option<Action<'static>>,
) -> Result<Result<Settings, ValidationError>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query_as!(
        SettingsRow,
        "select version, ai_provider, ai_fallback_provider, ai_local_enabled, openai_api_key_sealed,
                openai_api_key_last4, ai_overflow_wait_ms, ai_local_share, openai_base_url,
                provider_attempts, retry_min_delay_ms, retry_max_delay_ms, max_job_attempts,
                structured_output_attempts,
                circuit_failure_threshold, circuit_cooldown_ms, openai_max_concurrency,
                job_retention_days, usage_retention_days, updated_at
           from settings for update"
    )
    .fetch_one(&mut *tx)
    .await?;
    let current = Settings::try_from(row)?;
    let next = match current.apply(change) {
        Ok(next) => next,
        Err(invalid) => return Ok(Err(invalid)),
    };
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let row = sqlx::query_as!(
        SettingsRow,
        "update settings
            set version = version + 1, ai_provider = $1, ai_fallback_provider = $2,
                ai_local_enabled = $3, openai_api_key_sealed = $4, openai_api_key_last4 = $5,
                ai_overflow_wait_ms = $6, openai_base_url = $7, provider_attempts = $8,
                retry_min_delay_ms = $9, retry_max_delay_ms = $10, max_job_attempts = $11,
                circuit_failure_threshold = $12, circuit_cooldown_ms = $13,
                ai_local_share = $14, openai_max_concurrency = $15, job_retention_days = $16,
                usage_retention_days = $17, structured_output_attempts = $18, updated_at = now()
         returning version, ai_provider, ai_fallback_provider, ai_local_enabled, openai_api_key_sealed,
                openai_api_key_last4, ai_overflow_wait_ms, ai_local_share, openai_base_url,
                provider_attempts, retry_min_delay_ms, retry_max_delay_ms, max_job_attempts,
                structured_output_attempts,
                circuit_failure_threshold, circuit_cooldown_ms, openai_max_concurrency,
                job_retention_days, usage_retention_days, updated_at",
        next.ai_provider.setting_name(),
        next.ai_fallback_provider
            .map_or("none", ProviderName::setting_name),
        next.ai_local_enabled,
        next.openai_api_key.as_ref().map(|k| k.sealed.as_slice()),
        next.openai_api_key.as_ref().map(|k| k.last4.as_str()),
        ms(next.ai_overflow_wait),
        next.openai_base_url,
        n(next.retry.provider_attempts),
        ms(next.retry.min_delay),
        ms(next.retry.max_delay),
        n(next.retry.max_job_attempts),
        n(next.circuit.failure_threshold),
        ms(next.circuit.cooldown),
        next.ai_local_share.map(i32::from),
        n(next.openai_max_concurrency),
        n(next.retention.job_days),
        n(next.retention.usage_days),
        n(next.retry.structured_output_attempts),
    )
    .fetch_one(&mut *tx)
    .await?;
    let next = Settings::try_from(row)?;
    if let Some(action) = audit(&current, &next) {
        super::audit::record(&mut *tx, &action).await?;
    }
    tx.commit().await?;
    Ok(Ok(next))
}

/// What the environment says on a deployment's first start.
pub struct Seed {
    pub ollama_base_url: String,
    pub openai_base_url: String,
    pub openai_api_key: Option<SealedKey>,
}

/// Copies the environment's values in, once: the first process to start wins, and later starts
/// (and every other process) leave the operator's settings alone. `OLLAMA_BASE_URL` becomes the
/// address of the fleet's first host, `default`. With an OpenAI key, OpenAI becomes the fallback
/// of the local provider, which is how Tollgate behaved before settings. Returns whether this
/// call seeded.
pub async fn seed(pool: &PgPool, seed: &Seed) -> Result<bool, sqlx::Error> {
    let seeded = sqlx::query_scalar!(
        r#"with seeded as (
            update settings
               set openai_base_url = $2,
                   openai_api_key_sealed = $3, openai_api_key_last4 = $4,
                   ai_fallback_provider = case when $3::bytea is null then ai_fallback_provider
                                               else 'openai' end,
                   seeded_at = now(), version = version + 1, updated_at = now()
             where seeded_at is null
         returning 1
         ), host as (
            update hosts set base_url = $1, updated_at = now()
             where name = 'default' and exists (select from seeded)
         )
         select count(*) as "seeded!" from seeded"#,
        seed.ollama_base_url,
        seed.openai_base_url,
        seed.openai_api_key.as_ref().map(|k| k.sealed.as_slice()),
        seed.openai_api_key.as_ref().map(|k| k.last4.as_str()),
    )
    .fetch_one(pool)
    .await?;
    Ok(seeded == 1)
}
