//! The prices in force: per provider and upstream model, each from the time it takes effect. What a
//! call costs at one is [`crate::billing`]'s arithmetic.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::ProviderName;

/// A price in force for one provider and upstream model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub id: i64,
    pub input_per_1k: Decimal,
    pub output_per_1k: Decimal,
    /// What a prompt token read from the provider's cache costs; `None`: the input rate.
    pub cached_input_per_1k: Option<Decimal>,
    /// What a prompt token written to the provider's cache costs; `None`: the input rate.
    pub cache_write_input_per_1k: Option<Decimal>,
    /// What a response-cache hit costs per 1,000 tokens of the answer it replays (default 0).
    pub cache_hit_per_1k: Decimal,
}

/// Every price with the time it takes effect, held in memory by each process (with the runtime
/// settings, reloaded when an admin adds one) so pricing a job costs no query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceList {
    /// Per provider and upstream model, newest `effective_from` first.
    prices: HashMap<(ProviderName, String), Vec<PriceFrom>>,
}

/// A price and when it takes effect.
type PriceFrom = (DateTime<Utc>, Price);

impl PriceList {
    pub fn insert(
        &mut self,
        provider: ProviderName,
        model: String,
        effective_from: DateTime<Utc>,
        price: Price,
    ) {
        let history = self.prices.entry((provider, model)).or_default();
        history.push((effective_from, price));
        history.sort_by_key(|&(from, _)| std::cmp::Reverse(from));
    }

    /// The price of `model` on `provider` in force at `at`, if any.
    pub fn at(&self, provider: ProviderName, model: &str, at: DateTime<Utc>) -> Option<Price> {
        self.prices
            .get(&(provider, model.to_owned()))?
            .iter()
            .find(|(from, _)| *from <= at)
            .map(|(_, price)| *price)
    }
}
