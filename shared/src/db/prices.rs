//! The `prices` table: a price per provider and upstream model with the time it takes effect.
//! Rows are only ever added, so history is kept and a job is priced by the row in force when it
//! finished. Processes hold the whole list in memory (see [`crate::runtime`]).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;

use crate::billing::{Price, PriceList};
use crate::domain::ProviderName;

/// Every price, for the in-memory list each process prices jobs with.
pub async fn all(pool: &PgPool) -> Result<PriceList, sqlx::Error> {
    let rows = sqlx::query!(
        "select id, provider, model, input_per_1k, output_per_1k, cached_input_per_1k,
                cache_write_input_per_1k, cache_hit_per_1k, effective_from
           from prices",
    )
    .fetch_all(pool)
    .await?;
    let mut list = PriceList::default();
    for row in rows {
        let provider = ProviderName::stored(&row.provider);
        let price = Price {
            id: row.id,
            input_per_1k: row.input_per_1k,
            output_per_1k: row.output_per_1k,
            cached_input_per_1k: row.cached_input_per_1k,
            cache_write_input_per_1k: row.cache_write_input_per_1k,
            cache_hit_per_1k: row.cache_hit_per_1k,
        };
        list.insert(provider, row.model, row.effective_from, price);
    }
    Ok(list)
}

/// One row of the price list.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PriceRow {
    pub provider: String,
    pub model: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub input_per_1k: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub output_per_1k: Decimal,
    /// What a prompt token read from the provider's cache costs; `null`: the input rate.
    #[serde(with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>)]
    pub cached_input_per_1k: Option<Decimal>,
    /// What a prompt token written to the provider's cache costs; `null`: the input rate.
    #[serde(with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>)]
    pub cache_write_input_per_1k: Option<Decimal>,
    /// What a response-cache hit costs per 1,000 tokens of the answer it replays.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String)]
    pub cache_hit_per_1k: Decimal,
    pub effective_from: DateTime<Utc>,
    /// Whether this is the price in force now.
    pub current: bool,
}

/// Every price, newest first per provider and model, marking the ones in force.
pub async fn list(pool: &PgPool) -> Result<Vec<PriceRow>, sqlx::Error> {
    sqlx::query_as!(
        PriceRow,
        r#"select provider, model, input_per_1k, output_per_1k, cached_input_per_1k,
                cache_write_input_per_1k, cache_hit_per_1k, effective_from,
                -- false, not null, for a model whose only prices are still to come
                coalesce(id = (select c.id from prices c
                                where c.provider = p.provider and c.model = p.model
                                  and c.effective_from <= now()
                                order by c.effective_from desc limit 1), false) as "current!"
           from prices p
          order by provider, model, effective_from desc"#,
    )
    .fetch_all(pool)
    .await
}

/// Violated when a price for the same provider, model and instant exists.
pub const SAME_INSTANT: &str = "prices_provider_model_effective_from_key";

/// How far ahead a price added without an `effective_from` takes effect: every process reloads its
/// price list within a second of the change, so by then all of them bill at it, exactly from
/// that instant.
pub const DEFAULT_LEAD_SECS: f64 = 2.0;

/// A price's rates, per 1,000 tokens.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub input_per_1k: Decimal,
    pub output_per_1k: Decimal,
    /// `None`: a cached prompt token costs the input rate.
    pub cached_input_per_1k: Option<Decimal>,
    /// `None`: a prompt token written to the cache costs the input rate.
    pub cache_write_input_per_1k: Option<Decimal>,
    pub cache_hit_per_1k: Decimal,
}

/// Adds a price taking effect at `effective_from` (or [`DEFAULT_LEAD_SECS`] from now), and bumps the
/// settings version so every process reloads its price list.
pub async fn insert(
    pool: &PgPool,
    provider: ProviderName,
    model: &str,
    rates: Rates,
    effective_from: Option<DateTime<Utc>>,
) -> Result<PriceRow, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query_as!(
        PriceRow,
        r#"insert into prices (provider, model, input_per_1k, output_per_1k, cached_input_per_1k,
                               cache_write_input_per_1k, cache_hit_per_1k, effective_from)
         values ($1, $2, $3, $4, $5, $8, $9, coalesce($6, now() + make_interval(secs => $7)))
         returning provider, model, input_per_1k, output_per_1k, cached_input_per_1k,
                   cache_write_input_per_1k, cache_hit_per_1k, effective_from,
                   effective_from <= now() as "current!""#,
        provider.as_str(),
        model,
        rates.input_per_1k,
        rates.output_per_1k,
        rates.cached_input_per_1k,
        effective_from,
        DEFAULT_LEAD_SECS,
        rates.cache_write_input_per_1k,
        rates.cache_hit_per_1k,
    )
    .fetch_one(&mut *tx)
    .await?;
    super::version::bump(&mut tx).await?;
    tx.commit().await?;
    Ok(row)
}
