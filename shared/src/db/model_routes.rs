//! The `model_routes` table: which upstream model each provider runs for a model name (aliases),
//! and on the fleet, for each kind of host.
//!
//! Every change bumps `settings.version` in the same transaction, so running processes pick it up
//! with the settings.

use sqlx::PgPool;

use crate::domain::{Capabilities, FleetRoute, HostKind, ModelRoutes, ProviderName};

/// One model name and what each provider runs for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub model: String,
    /// What the fleet runs on each kind of host.
    pub fleet: FleetRoute,
    /// What OpenAI runs.
    pub openai: Option<String>,
    /// What each route's upstream model can do, where declared; indexed by
    /// [`ProviderName::index`] (the fleet's declaration covers both kinds of host).
    pub capabilities: [Option<Capabilities>; 2],
}

/// One route as stored.
struct Route {
    model: String,
    provider: String,
    host_kind: Option<String>,
    upstream_model: String,
    capabilities: Option<Vec<String>>,
}

async fn rows(pool: &PgPool, model: Option<&str>) -> Result<Vec<Route>, sqlx::Error> {
    sqlx::query_as!(
        Route,
        "select model, provider, host_kind, upstream_model, capabilities from model_routes
          where $1::text is null or model = $1
          order by model, provider, host_kind",
        model,
    )
    .fetch_all(pool)
    .await
}

fn group(rows: Vec<Route>) -> Vec<Alias> {
    let mut aliases: Vec<Alias> = Vec::new();
    for route in rows {
        let Some(provider) = ProviderName::parse(&route.provider) else {
            continue; // the check constraint admits no other name
        };
        if aliases.last().is_none_or(|a| a.model != route.model) {
            aliases.push(Alias {
                model: route.model,
                fleet: FleetRoute::default(),
                openai: None,
                capabilities: [None, None],
            });
        }
        let Some(alias) = aliases.last_mut() else {
            continue;
        };
        match provider {
            ProviderName::Ollama => {
                // The check constraint gives every fleet route a kind of host.
                let kind = route.host_kind.as_deref().and_then(HostKind::parse);
                alias
                    .fleet
                    .set(kind.unwrap_or(HostKind::Ollama), route.upstream_model);
            }
            ProviderName::OpenAi => alias.openai = Some(route.upstream_model),
        }
        if let Some(names) = route.capabilities {
            alias.capabilities[provider.index()] = Some(Capabilities::from_names(&names));
        }
    }
    aliases
}

/// Every alias, by model name.
pub async fn list(pool: &PgPool) -> Result<Vec<Alias>, sqlx::Error> {
    Ok(group(rows(pool, None).await?))
}

pub async fn get(pool: &PgPool, model: &str) -> Result<Option<Alias>, sqlx::Error> {
    Ok(group(rows(pool, Some(model)).await?).pop())
}

/// All routes, for resolution.
pub async fn all(pool: &PgPool) -> Result<ModelRoutes, sqlx::Error> {
    let mut routes = ModelRoutes::default();
    for alias in list(pool).await? {
        for (kind, upstream) in alias.fleet.kinds() {
            routes.insert_fleet(alias.model.clone(), kind, upstream.to_owned());
        }
        if let Some(upstream) = alias.openai {
            routes.insert(alias.model.clone(), ProviderName::OpenAi, upstream);
        }
        for provider in ProviderName::ALL {
            if let Some(can) = alias.capabilities[provider.index()] {
                routes.declare(alias.model.clone(), provider, can);
            }
        }
    }
    Ok(routes)
}

/// Replaces the routes of `alias.model` with the given ones, in one transaction.
pub async fn put(pool: &PgPool, alias: &Alias) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("delete from model_routes where model = $1", alias.model)
        .execute(&mut *tx)
        .await?;
    let fleet = alias
        .fleet
        .kinds()
        .map(|(kind, upstream)| (ProviderName::Ollama, Some(kind), upstream));
    let cloud = alias
        .openai
        .as_deref()
        .map(|upstream| (ProviderName::OpenAi, None, upstream));
    for (provider, kind, upstream) in fleet.chain(cloud) {
        let declared: Option<Vec<String>> = alias.capabilities[provider.index()]
            .map(|can| can.names().into_iter().map(str::to_owned).collect());
        sqlx::query!(
            "insert into model_routes (model, provider, host_kind, upstream_model, capabilities)
             values ($1, $2, $3, $4, $5)",
            alias.model,
            provider.as_str(),
            kind.map(HostKind::as_str),
            upstream,
            declared.as_deref(),
        )
        .execute(&mut *tx)
        .await?;
    }
    super::settings::bump_version(&mut tx).await?;
    tx.commit().await
}

/// Removes a model name; `false` if it had no routes.
pub async fn delete(pool: &PgPool, model: &str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let removed = sqlx::query!("delete from model_routes where model = $1", model)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if removed > 0 {
        super::settings::bump_version(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(removed > 0)
}
