//! The `model_routes` table: which upstream model each provider runs for a model name (aliases).
//!
//! Every change bumps `settings.version` in the same transaction, so running processes pick it up
//! with the settings.

use sqlx::PgPool;

use crate::domain::{Capabilities, ModelRoutes, ProviderName};

/// One model name and what each provider runs for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub model: String,
    /// Indexed by [`ProviderName::index`].
    pub upstream: [Option<String>; 2],
    /// What each route's upstream model can do, where declared; indexed likewise.
    pub capabilities: [Option<Capabilities>; 2],
}

/// One route as stored.
struct Route {
    model: String,
    provider: String,
    upstream_model: String,
    capabilities: Option<Vec<String>>,
}

async fn rows(pool: &PgPool, model: Option<&str>) -> Result<Vec<Route>, sqlx::Error> {
    sqlx::query_as!(
        Route,
        "select model, provider, upstream_model, capabilities from model_routes
          where $1::text is null or model = $1
          order by model, provider",
        model,
    )
    .fetch_all(pool)
    .await
}

fn group(rows: Vec<Route>) -> Vec<Alias> {
    let mut aliases: Vec<Alias> = Vec::new();
    for Route {
        model,
        provider,
        upstream_model,
        capabilities,
    } in rows
    {
        let Some(provider) = ProviderName::parse(&provider) else {
            continue; // the check constraint admits no other name
        };
        if aliases.last().is_none_or(|a| a.model != model) {
            aliases.push(Alias {
                model,
                upstream: [None, None],
                capabilities: [None, None],
            });
        }
        if let Some(alias) = aliases.last_mut() {
            alias.upstream[provider.index()] = Some(upstream_model);
            alias.capabilities[provider.index()] =
                capabilities.as_deref().map(Capabilities::from_names);
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
        for provider in ProviderName::ALL {
            if let Some(upstream) = &alias.upstream[provider.index()] {
                routes.insert(alias.model.clone(), provider, upstream.clone());
            }
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
    for provider in ProviderName::ALL {
        if let Some(upstream) = &alias.upstream[provider.index()] {
            let declared: Option<Vec<String>> = alias.capabilities[provider.index()]
                .map(|can| can.names().into_iter().map(str::to_owned).collect());
            sqlx::query!(
                "insert into model_routes (model, provider, upstream_model, capabilities)
                 values ($1, $2, $3, $4)",
                alias.model,
                provider.as_str(),
                upstream,
                declared.as_deref(),
            )
            .execute(&mut *tx)
            .await?;
        }
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
