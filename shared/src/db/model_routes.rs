//! The `model_routes` table: which upstream model each provider runs for a model name (aliases),
//! and on the fleet, for each kind of host; and `model_chains`, a model's own order of providers.
//!
//! Every change bumps `settings.version` in the same transaction, so running processes pick it up
//! with the settings.

use std::collections::BTreeMap;

use sqlx::PgPool;

use crate::domain::{Capabilities, FleetRoute, HostKind, ModelRoutes, ProviderName};

/// One model name and what each provider runs for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub model: String,
    /// What the fleet runs on each kind of host.
    pub fleet: FleetRoute,
    /// What each cloud account runs.
    pub clouds: BTreeMap<ProviderName, String>,
    /// What each route's upstream model can do, where declared (the fleet's, under `local`,
    /// covers both kinds of host).
    pub capabilities: BTreeMap<ProviderName, Capabilities>,
    /// The `max_tokens` each route sends when the client gave none, where set.
    pub max_tokens: BTreeMap<ProviderName, u32>,
    /// The providers to try in order, overriding the settings, if the model has its own.
    pub chain: Option<Vec<ProviderName>>,
}

impl Alias {
    fn new(model: String) -> Self {
        Self {
            model,
            fleet: FleetRoute::default(),
            clouds: BTreeMap::new(),
            capabilities: BTreeMap::new(),
            max_tokens: BTreeMap::new(),
            chain: None,
        }
    }

    /// Whether `provider` has a route for the model.
    pub fn routes(&self, provider: ProviderName) -> bool {
        if provider.is_local() {
            self.fleet != FleetRoute::default()
        } else {
            self.clouds.contains_key(&provider)
        }
    }
}

/// One route as stored.
struct Route {
    model: String,
    provider: String,
    host_kind: Option<String>,
    upstream_model: String,
    capabilities: Option<Vec<String>>,
    default_max_tokens: Option<i32>,
}

async fn rows(pool: &PgPool, model: Option<&str>) -> Result<Vec<Route>, sqlx::Error> {
    sqlx::query_as!(
        Route,
        "select model, provider, host_kind, upstream_model, capabilities, default_max_tokens
           from model_routes
          where $1::text is null or model = $1
          order by model, provider, host_kind",
        model,
    )
    .fetch_all(pool)
    .await
}

async fn chains(
    pool: &PgPool,
    model: Option<&str>,
) -> Result<BTreeMap<String, Vec<ProviderName>>, sqlx::Error> {
    let rows = sqlx::query!(
        "select model, providers from model_chains where $1::text is null or model = $1",
        model,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let chain = row.providers.iter().map(|p| ProviderName::stored(p));
            (row.model, chain.collect())
        })
        .collect())
}

fn group(rows: Vec<Route>, mut chains: BTreeMap<String, Vec<ProviderName>>) -> Vec<Alias> {
    let mut aliases: Vec<Alias> = Vec::new();
    for route in rows {
        let provider = ProviderName::stored(&route.provider);
        if aliases.last().is_none_or(|a| a.model != route.model) {
            aliases.push(Alias::new(route.model));
        }
        let Some(alias) = aliases.last_mut() else {
            continue;
        };
        if provider.is_local() {
            // The check constraint gives every fleet route a kind of host.
            let kind = route.host_kind.as_deref().and_then(HostKind::parse);
            alias
                .fleet
                .set(kind.unwrap_or(HostKind::Ollama), route.upstream_model);
        } else {
            alias.clouds.insert(provider, route.upstream_model);
        }
        if let Some(names) = route.capabilities {
            alias
                .capabilities
                .insert(provider, Capabilities::from_names(&names));
        }
        if let Some(max) = route.default_max_tokens.and_then(|m| u32::try_from(m).ok()) {
            alias.max_tokens.insert(provider, max);
        }
    }
    for alias in &mut aliases {
        alias.chain = chains.remove(&alias.model);
    }
    aliases
}

/// Every alias, by model name.
pub async fn list(pool: &PgPool) -> Result<Vec<Alias>, sqlx::Error> {
    Ok(group(rows(pool, None).await?, chains(pool, None).await?))
}

pub async fn get(pool: &PgPool, model: &str) -> Result<Option<Alias>, sqlx::Error> {
    let chains = chains(pool, Some(model)).await?;
    Ok(group(rows(pool, Some(model)).await?, chains).pop())
}

/// All routes, for resolution.
pub async fn all(pool: &PgPool) -> Result<ModelRoutes, sqlx::Error> {
    let mut routes = ModelRoutes::default();
    for alias in list(pool).await? {
        for (kind, upstream) in alias.fleet.kinds() {
            routes.insert_fleet(alias.model.clone(), kind, upstream.to_owned());
        }
        for (provider, upstream) in alias.clouds {
            routes.insert(alias.model.clone(), provider, upstream);
        }
        for (provider, can) in alias.capabilities {
            routes.declare(alias.model.clone(), provider, can);
        }
        for (provider, max) in alias.max_tokens {
            routes.set_default_max_tokens(alias.model.clone(), provider, max);
        }
        if let Some(chain) = alias.chain {
            routes.set_chain(alias.model, chain);
        }
    }
    Ok(routes)
}

/// Replaces the routes and chain of `alias.model` with the given ones, in one transaction. A
/// provider the registry does not have (removed meanwhile) is the inner error, naming it.
pub async fn put(pool: &PgPool, alias: &Alias) -> Result<Result<(), ProviderName>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let known = super::providers::names(&mut tx).await?;
    let chain = alias.chain.iter().flatten();
    if let Some(unknown) = alias
        .clouds
        .keys()
        .chain(chain)
        .find(|p| !known.contains(p))
    {
        return Ok(Err(*unknown));
    }
    sqlx::query!("delete from model_routes where model = $1", alias.model)
        .execute(&mut *tx)
        .await?;
    let fleet = alias
        .fleet
        .kinds()
        .map(|(kind, upstream)| (ProviderName::LOCAL, Some(kind), upstream));
    let clouds = alias
        .clouds
        .iter()
        .map(|(provider, upstream)| (*provider, None, upstream.as_str()));
    for (provider, kind, upstream) in fleet.chain(clouds) {
        let declared: Option<Vec<String>> = alias
            .capabilities
            .get(&provider)
            .map(|can| can.names().into_iter().map(str::to_owned).collect());
        let max_tokens = alias
            .max_tokens
            .get(&provider)
            .and_then(|max| i32::try_from(*max).ok());
        sqlx::query!(
            "insert into model_routes (model, provider, host_kind, upstream_model, capabilities,
                                       default_max_tokens)
             values ($1, $2, $3, $4, $5, $6)",
            alias.model,
            provider.as_str(),
            kind.map(HostKind::as_str),
            upstream,
            declared.as_deref(),
            max_tokens,
        )
        .execute(&mut *tx)
        .await?;
    }
    let chain: Option<Vec<&str>> = alias
        .chain
        .as_ref()
        .map(|chain| chain.iter().map(|p| p.as_str()).collect());
    sqlx::query!("delete from model_chains where model = $1", alias.model)
        .execute(&mut *tx)
        .await?;
    if let Some(chain) = chain {
        sqlx::query!(
            "insert into model_chains (model, providers) values ($1, $2)",
            alias.model,
            &chain as &[&str],
        )
        .execute(&mut *tx)
        .await?;
    }
    super::version::bump(&mut tx).await?;
    tx.commit().await?;
    Ok(Ok(()))
}

/// Removes a model name; `false` if it had no routes.
pub async fn delete(pool: &PgPool, model: &str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let removed = sqlx::query!("delete from model_routes where model = $1", model)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query!("delete from model_chains where model = $1", model)
        .execute(&mut *tx)
        .await?;
    if removed > 0 {
        super::version::bump(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(removed > 0)
}
