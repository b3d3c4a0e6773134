//! The `settings` table: one row of runtime settings, its version, and seeding it from the
//! environment on first start.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::audit::Action;
use crate::domain::{
    CircuitPolicy, CloudAccount, CloudChange, ProviderName, Retention, RetryPolicy, SealedKey,
    Settings, SettingsChange, Strategy, ValidationError,
};

/// The row as stored; every statement reading it names these columns, checked against the table.
struct SettingsRow {
    version: i64,
    ai_provider: String,
    ai_fallback_provider: String,
    ai_local_enabled: bool,
    ai_overflow_wait_ms: i32,
    ai_local_share: Option<i32>,
    ai_hybrid_cloud: String,
    provider_attempts: i32,
    retry_min_delay_ms: i32,
    retry_max_delay_ms: i32,
    max_job_attempts: i32,
    structured_output_attempts: i32,
    circuit_failure_threshold: i32,
    circuit_cooldown_ms: i32,
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
            other => Some(ProviderName::stored(other)),
        };
        Ok(Self {
            version: row.version,
            ai_provider: Strategy::parse("ai_provider", &row.ai_provider)
                .map_err(|_| bad("ai_provider"))?,
            ai_fallback_provider: fallback,
            ai_local_enabled: row.ai_local_enabled,
            ai_overflow_wait: Duration::from_millis(
                u64::try_from(row.ai_overflow_wait_ms).unwrap_or(0),
            ),
            ai_local_share: row.ai_local_share.map(|n| u8::try_from(n).unwrap_or(100)),
            ai_hybrid_cloud: ProviderName::stored(&row.ai_hybrid_cloud),
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
            updated_at: row.updated_at,
        })
    }
}

/// The settings with the OpenAI account, whose settings they were before providers were named
/// (`None` once an operator removed it).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub settings: Settings,
    pub openai: Option<CloudAccount>,
}

pub async fn get(pool: &PgPool) -> Result<Settings, sqlx::Error> {
    let row = sqlx::query_as!(
        SettingsRow,
        "select version, ai_provider, ai_fallback_provider, ai_local_enabled, ai_overflow_wait_ms,
                ai_local_share, ai_hybrid_cloud, provider_attempts, retry_min_delay_ms,
                retry_max_delay_ms, max_job_attempts, structured_output_attempts,
                circuit_failure_threshold, circuit_cooldown_ms, job_retention_days,
                usage_retention_days, updated_at
           from settings"
    )
    .fetch_one(pool)
    .await?;
    row.try_into()
}

/// The settings with the OpenAI account.
pub async fn snapshot(pool: &PgPool) -> Result<Snapshot, sqlx::Error> {
    let settings = get(pool).await?;
    let mut clouds = super::providers::clouds(pool).await?;
    Ok(Snapshot {
        settings,
        openai: clouds.remove(&ProviderName::OPENAI),
    })
}

/// Applies `change` under a row lock, so concurrent changes never lose one another, and bumps the
/// version; a change to the OpenAI account (the settings that were its own) goes to the provider
/// `openai` in the same transaction. `audit` is shown the settings before and after and names the
/// entry to record, in the same transaction (an operator's change is audited; a test's or a
/// seed's need not be). A value out of bounds, or a provider the registry does not have, is the
/// inner error and nothing is written.
pub async fn update(
    pool: &PgPool,
    mut change: SettingsChange,
    audit: impl FnOnce(&Snapshot, &Snapshot) -> Option<Action<'static>>,
) -> Result<Result<Snapshot, ValidationError>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query_as!(
        SettingsRow,
        "select version, ai_provider, ai_fallback_provider, ai_local_enabled, ai_overflow_wait_ms,
                ai_local_share, ai_hybrid_cloud, provider_attempts, retry_min_delay_ms,
                retry_max_delay_ms, max_job_attempts, structured_output_attempts,
                circuit_failure_threshold, circuit_cooldown_ms, job_retention_days,
                usage_retention_days, updated_at
           from settings for update"
    )
    .fetch_one(&mut *tx)
    .await?;
    let current = Settings::try_from(row)?;
    let openai = std::mem::take(&mut change.openai);
    let next = match current.apply(change) {
        Ok(next) => next,
        Err(invalid) => return Ok(Err(invalid)),
    };
    if let Err(unknown) = known_providers(&mut tx, &next).await? {
        return Ok(Err(unknown));
    }
    let accounts = match change_openai(&mut tx, openai).await? {
        Ok(accounts) => accounts,
        Err(invalid) => return Ok(Err(invalid)),
    };
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let row = sqlx::query_as!(
        SettingsRow,
        "update settings
            set version = version + 1, ai_provider = $1, ai_fallback_provider = $2,
                ai_local_enabled = $3, ai_hybrid_cloud = $4, ai_overflow_wait_ms = $5,
                provider_attempts = $6, retry_min_delay_ms = $7, retry_max_delay_ms = $8,
                max_job_attempts = $9, circuit_failure_threshold = $10, circuit_cooldown_ms = $11,
                ai_local_share = $12, job_retention_days = $13, usage_retention_days = $14,
                structured_output_attempts = $15, updated_at = now()
         returning version, ai_provider, ai_fallback_provider, ai_local_enabled, ai_overflow_wait_ms,
                ai_local_share, ai_hybrid_cloud, provider_attempts, retry_min_delay_ms,
                retry_max_delay_ms, max_job_attempts, structured_output_attempts,
                circuit_failure_threshold, circuit_cooldown_ms, job_retention_days,
                usage_retention_days, updated_at",
        next.ai_provider.setting_name(),
        next.ai_fallback_provider.map_or("none", ProviderName::as_str),
        next.ai_local_enabled,
        next.ai_hybrid_cloud.as_str(),
        ms(next.ai_overflow_wait),
        n(next.retry.provider_attempts),
        ms(next.retry.min_delay),
        ms(next.retry.max_delay),
        n(next.retry.max_job_attempts),
        n(next.circuit.failure_threshold),
        ms(next.circuit.cooldown),
        next.ai_local_share.map(i32::from),
        n(next.retention.job_days),
        n(next.retention.usage_days),
        n(next.retry.structured_output_attempts),
    )
    .fetch_one(&mut *tx)
    .await?;
    let before = Snapshot {
        settings: current,
        openai: accounts.0,
    };
    let after = Snapshot {
        settings: Settings::try_from(row)?,
        openai: accounts.1,
    };
    if let Some(action) = audit(&before, &after) {
        super::audit::record(&mut *tx, &action).await?;
    }
    tx.commit().await?;
    Ok(Ok(after))
}

/// The OpenAI account before and after `change`, written in `tx` (whatever its name as settings
/// fields, the error names one); both `None` once an operator removed it and nothing is asked of
/// it.
async fn change_openai(
    tx: &mut Transaction<'_, Postgres>,
    change: CloudChange,
) -> Result<Result<(Option<CloudAccount>, Option<CloudAccount>), ValidationError>, sqlx::Error> {
    if change.is_empty() {
        let account = super::providers::locked(tx, ProviderName::OPENAI).await?;
        return Ok(Ok((account.clone(), account)));
    }
    let field = match (change.api_key.is_some(), change.base_url.is_some()) {
        (true, _) => "ai_openai_api_key",
        (false, true) => "openai_base_url",
        (false, false) => "openai_max_concurrency",
    };
    Ok(
        match super::providers::change_in(tx, ProviderName::OPENAI, change).await? {
            Some(Ok((before, after))) => Ok((Some(before), Some(after))),
            Some(Err(invalid)) => Err(invalid.prefixed("openai_")),
            None => Err(ValidationError::new(
                field,
                "there is no provider `openai` any more: change cloud accounts at \
                 /v1/admin/providers",
            )),
        },
    )
}

/// Refuses settings that name a provider the registry does not have (held until `tx` ends).
async fn known_providers(
    tx: &mut Transaction<'_, Postgres>,
    next: &Settings,
) -> Result<Result<(), ValidationError>, sqlx::Error> {
    let known = super::providers::names(tx).await?;
    let named = [
        ("ai_provider", next.ai_provider.provider()),
        ("ai_fallback_provider", next.ai_fallback_provider),
        ("ai_hybrid_cloud", Some(next.ai_hybrid_cloud)),
    ];
    for (field, name) in named {
        if let Some(name) = name
            && !known.contains(&name)
        {
            return Ok(Err(ValidationError::new(
                field,
                format!(
                    "there is no provider named {:?} (see /v1/admin/providers)",
                    name.as_str()
                ),
            )));
        }
    }
    Ok(Ok(()))
}

/// What the environment says on a deployment's first start.
pub struct Seed {
    pub ollama_base_url: String,
    pub openai_base_url: String,
    pub openai_api_key: Option<SealedKey>,
}

/// Copies the environment's values in, once: the first process to start wins, and later starts
/// (and every other process) leave the operator's settings alone. `OLLAMA_BASE_URL` becomes the
/// address of the fleet's first host, `default`; `OPENAI_BASE_URL` and `OPENAI_API_KEY` the
/// provider `openai`'s. With an OpenAI key, OpenAI becomes the fallback of the local provider,
/// which is how Tollgate behaved before settings. Returns whether this call seeded.
pub async fn seed(pool: &PgPool, seed: &Seed) -> Result<bool, sqlx::Error> {
    let seeded = sqlx::query_scalar!(
        r#"with seeded as (
            update settings
               set ai_fallback_provider = case when $3::bytea is null then ai_fallback_provider
                                               else 'openai' end,
                   seeded_at = now(), version = version + 1, updated_at = now()
             where seeded_at is null
         returning 1
         ), host as (
            update hosts set base_url = $1, updated_at = now()
             where name = 'default' and exists (select from seeded)
         ), openai as (
            update providers
               set base_url = $2, api_key_sealed = $3, api_key_last4 = $4, updated_at = now()
             where name = 'openai' and exists (select from seeded)
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
