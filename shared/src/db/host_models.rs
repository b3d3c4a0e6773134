//! `host_models`: the models each fleet host has and what each can do, as the host's listing
//! said (see `migrations/0020_host_models.sql`). Workers record a host's listing when it differs
//! from what they last recorded; a change bumps the settings version, so every process reloads
//! [`FleetModels`] with its runtime settings.

use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{Capabilities, FleetModels, HostKind};

/// One model of a host's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Ollama's full name (`llama3:latest`); an OpenAI-compatible server's id.
    pub model: String,
    pub digest: Option<String>,
    /// Its capabilities as Ollama names them; `None` when the host did not say.
    pub capabilities: Option<Vec<String>>,
}

/// Records `host_id`'s whole listing: models it no longer has are forgotten, new or changed ones
/// written. Returns whether anything changed (then the settings version is bumped with it).
pub async fn record(pool: &PgPool, host_id: Uuid, listed: &[Listed]) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let models: Vec<String> = listed.iter().map(|m| m.model.clone()).collect();
    let mut changed = sqlx::query!(
        "delete from host_models where host_id = $1 and model <> all($2)",
        host_id,
        &models,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    for model in listed {
        changed += sqlx::query!(
            "insert into host_models (host_id, model, digest, capabilities)
             values ($1, $2, $3, $4)
             on conflict (host_id, model) do update
                set digest = excluded.digest, capabilities = excluded.capabilities,
                    listed_at = now()
              where (host_models.digest, host_models.capabilities)
                    is distinct from (excluded.digest, excluded.capabilities)",
            host_id,
            model.model,
            model.digest,
            model.capabilities.as_deref(),
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    if changed > 0 {
        super::version::bump(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(changed > 0)
}

/// What the enabled hosts' models can do.
pub async fn fleet(pool: &PgPool) -> Result<FleetModels, sqlx::Error> {
    let rows = sqlx::query!(
        "select h.kind, m.model, m.capabilities
           from host_models m join hosts h on h.id = m.host_id
          where h.enabled",
    )
    .fetch_all(pool)
    .await?;
    let mut fleet = FleetModels::default();
    for row in rows {
        let Some(kind) = HostKind::parse(&row.kind) else {
            continue; // the check constraint admits no other kind
        };
        let capabilities = row.capabilities.as_deref().map(Capabilities::from_names);
        fleet.add(kind, &row.model, capabilities);
    }
    Ok(fleet)
}
