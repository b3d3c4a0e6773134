//! The `prices` table: a price per provider and upstream model with the time it takes effect.
//! Rows are only ever added, so history is kept and a job is priced by the row in force when it
//! finished.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;

use crate::billing::Price;
use crate::domain::ProviderName;

/// The prices in force now for these (provider, upstream model) pairs; a pair without one is
/// unpriced and absent from the answer.
pub async fn current(
    pool: &PgPool,
    pairs: &[(ProviderName, String)],
) -> Result<HashMap<(ProviderName, String), Price>, sqlx::Error> {
    let providers: Vec<&str> = pairs.iter().map(|(p, _)| p.as_str()).collect();
    let models: Vec<&str> = pairs.iter().map(|(_, m)| m.as_str()).collect();
    let rows: Vec<(i64, String, String, Decimal, Decimal)> = sqlx::query_as(
        "select distinct on (p.provider, p.model)
                p.id, p.provider, p.model, p.input_per_1k, p.output_per_1k
           from prices p
           join unnest($1::text[], $2::text[]) as wanted(provider, model)
             on p.provider = wanted.provider and p.model = wanted.model
          where p.effective_from <= now()
          order by p.provider, p.model, p.effective_from desc",
    )
    .bind(providers)
    .bind(models)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, provider, model, input_per_1k, output_per_1k)| {
            let price = Price {
                id,
                input_per_1k,
                output_per_1k,
            };
            Some(((ProviderName::parse(&provider)?, model), price))
        })
        .collect())
}

/// One row of the price list.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct PriceRow {
    pub provider: String,
    pub model: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub input_per_1k: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub output_per_1k: Decimal,
    pub effective_from: DateTime<Utc>,
    /// Whether this is the price in force now.
    pub current: bool,
}

/// Every price, newest first per provider and model, marking the ones in force.
pub async fn list(pool: &PgPool) -> Result<Vec<PriceRow>, sqlx::Error> {
    sqlx::query_as(
        "select provider, model, input_per_1k, output_per_1k, effective_from,
                id = (select c.id from prices c
                       where c.provider = p.provider and c.model = p.model
                         and c.effective_from <= now()
                       order by c.effective_from desc limit 1) as current
           from prices p
          order by provider, model, effective_from desc",
    )
    .fetch_all(pool)
    .await
}

/// Violated when a price for the same provider, model and instant exists.
pub const SAME_INSTANT: &str = "prices_provider_model_effective_from_key";

/// Adds a price taking effect at `effective_from` (now when `None`).
pub async fn insert(
    pool: &PgPool,
    provider: ProviderName,
    model: &str,
    input_per_1k: Decimal,
    output_per_1k: Decimal,
    effective_from: Option<DateTime<Utc>>,
) -> Result<PriceRow, sqlx::Error> {
    sqlx::query_as(
        "insert into prices (provider, model, input_per_1k, output_per_1k, effective_from)
         values ($1, $2, $3, $4, coalesce($5, now()))
         returning provider, model, input_per_1k, output_per_1k, effective_from,
                   effective_from <= now() as current",
    )
    .bind(provider.as_str())
    .bind(model)
    .bind(input_per_1k)
    .bind(output_per_1k)
    .bind(effective_from)
    .fetch_one(pool)
    .await
}
