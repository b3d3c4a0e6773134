//! Billing arithmetic: what a call costs at a price, and token counts for the rare answer that
//! reports none.
//!
//! Money is `rust_decimal::Decimal` (exact, like Postgres `numeric`), never a float. Prices are per
//! 1,000 tokens; a cost keeps 10 decimal places, rounded half away from zero, which is what the
//! `numeric(20, 10)` columns hold.

use rust_decimal::{Decimal, RoundingStrategy};

pub use crate::domain::{Price, PriceList};

/// Decimal places a cost keeps.
pub const COST_SCALE: u32 = 10;

/// What `prompt_tokens` in and `completion_tokens` out cost at `price`.
pub fn cost(prompt_tokens: i64, completion_tokens: i64, price: &Price) -> Decimal {
    cost_with_cache(prompt_tokens, Cache::default(), completion_tokens, price)
}

/// The parts of a prompt's tokens its provider's cache had a hand in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cache {
    /// Read from the cache.
    pub read: i64,
    /// Written to it (Anthropic's cache creation).
    pub written: i64,
}

/// The same with the prompt's tokens read from the provider's cache and written to it, each
/// priced at the price's rate for it when it has one (else the input rate).
pub fn cost_with_cache(
    prompt_tokens: i64,
    cache: Cache,
    completion_tokens: i64,
    price: &Price,
) -> Decimal {
    let read = cache.read.clamp(0, prompt_tokens);
    let written = cache.written.clamp(0, prompt_tokens - read);
    let read_rate = price.cached_input_per_1k.unwrap_or(price.input_per_1k);
    let write_rate = price.cache_write_input_per_1k.unwrap_or(price.input_per_1k);
    let raw = (Decimal::from(prompt_tokens - read - written) * price.input_per_1k
        + Decimal::from(read) * read_rate
        + Decimal::from(written) * write_rate
        + Decimal::from(completion_tokens) * price.output_per_1k)
        / Decimal::ONE_THOUSAND;
    raw.round_dp_with_strategy(COST_SCALE, RoundingStrategy::MidpointAwayFromZero)
}

/// What a cache hit replaying an answer of `prompt_tokens` and `completion_tokens` costs at
/// `price`: its cache rate, the same for every token.
pub fn hit_cost(prompt_tokens: i64, completion_tokens: i64, price: &Price) -> Decimal {
    let raw = Decimal::from(prompt_tokens + completion_tokens) * price.cache_hit_per_1k
        / Decimal::ONE_THOUSAND;
    raw.round_dp_with_strategy(COST_SCALE, RoundingStrategy::MidpointAwayFromZero)
}

/// A cost as clients read it: a decimal string without trailing zeros (`"0.000104"`).
pub fn display(cost: Decimal) -> String {
    cost.normalize().to_string()
}

/// Tokens in `text` by OpenAI's `o200k_base` encoding: an estimate for a provider that reported
/// none (Ollama omits its prompt count when the prompt was cached).
pub fn estimate_tokens(text: &str) -> i32 {
    let count = tiktoken_rs::o200k_base_singleton()
        .encode_with_special_tokens(text)
        .len();
    i32::try_from(count).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use chrono::Utc;

    use super::*;
    use crate::domain::ProviderName;

    fn price(input: &str, output: &str) -> Price {
        Price {
            id: 1,
            input_per_1k: Decimal::from_str(input).expect("decimal"),
            output_per_1k: Decimal::from_str(output).expect("decimal"),
            cached_input_per_1k: None,
            cache_write_input_per_1k: None,
            cache_hit_per_1k: Decimal::ZERO,
        }
    }

    fn read(read: i64) -> Cache {
        Cache { read, written: 0 }
    }

    #[test]
    fn a_hit_costs_the_cache_rate_for_every_token() {
        let mut p = price("0.0004", "0.0016");
        assert_eq!(hit_cost(1000, 500, &p), Decimal::ZERO);
        p.cache_hit_per_1k = Decimal::from_str("0.0002").expect("decimal");
        // 1,500 tokens at 0.0002 per 1K
        assert_eq!(display(hit_cost(1000, 500, &p)), "0.0003");
    }

    #[test]
    fn cached_prompt_tokens_cost_the_cached_rate_when_the_price_has_one() {
        let mut p = price("0.0004", "0.0016");
        // Without a cached rate, a cached token costs what any prompt token does.
        assert_eq!(cost_with_cache(1000, read(600), 0, &p), cost(1000, 0, &p));
        p.cached_input_per_1k = Some(Decimal::from_str("0.0001").expect("decimal"));
        // 400 at 0.0004 and 600 at 0.0001 per 1K: 0.00016 + 0.00006
        assert_eq!(display(cost_with_cache(1000, read(600), 0, &p)), "0.00022");
        // More cached than the prompt holds is the prompt.
        assert_eq!(display(cost_with_cache(10, read(50), 0, &p)), "0.000001");
    }

    #[test]
    fn prompt_tokens_written_to_the_cache_cost_the_cache_write_rate() {
        // Anthropic's: $3 per million in, $3.75 written to the cache, $0.30 read from it.
        let mut p = price("0.003", "0.015");
        let cache = Cache {
            read: 2000,
            written: 1000,
        };
        assert_eq!(cost_with_cache(4000, cache, 0, &p), cost(4000, 0, &p));
        p.cached_input_per_1k = Some(Decimal::from_str("0.0003").expect("decimal"));
        p.cache_write_input_per_1k = Some(Decimal::from_str("0.00375").expect("decimal"));
        // 1000 at 0.003, 2000 at 0.0003 and 1000 at 0.00375 per 1K.
        assert_eq!(display(cost_with_cache(4000, cache, 0, &p)), "0.00735");
        // What was written is within what the cache did not give.
        let all = Cache {
            read: 3000,
            written: 5000,
        };
        assert_eq!(display(cost_with_cache(4000, all, 0, &p)), "0.00465");
    }

    #[test]
    fn cost_is_exact_to_the_last_decimal() {
        // 12 in and 40 out at $0.002/1K: 52 × 0.002 / 1000
        assert_eq!(display(cost(12, 40, &price("0.002", "0.002"))), "0.000104");
        // float arithmetic would give 0.30000000000000004 here
        let p = price("0.1", "0.2");
        assert_eq!(display(cost(1000, 1000, &p)), "0.3");
        assert_eq!(display(cost(0, 0, &p)), "0");
    }

    #[test]
    fn input_and_output_are_priced_apart() {
        let p = price("0.0004", "0.0016");
        assert_eq!(display(cost(1000, 0, &p)), "0.0004");
        assert_eq!(display(cost(0, 1000, &p)), "0.0016");
        assert_eq!(display(cost(2500, 500, &p)), "0.0018");
    }

    #[test]
    fn costs_round_half_away_from_zero_at_ten_places() {
        // 1 token at 0.00000000015/1K = 1.5e-13 → 0 at ten places; 5e-11 rounds up to 1e-10
        assert_eq!(cost(1, 0, &price("0.00000000015", "0")), Decimal::ZERO);
        assert_eq!(
            display(cost(1, 0, &price("0.00000005", "0"))),
            "0.0000000001"
        );
    }

    #[test]
    fn a_large_volume_stays_exact() {
        let p = price("0.0015", "0.0015");
        assert_eq!(display(cost(2_000_000_000, 2_000_000_000, &p)), "6000");
    }

    #[test]
    fn the_price_in_force_is_the_newest_that_has_taken_effect() {
        let now = Utc::now();
        let mut list = PriceList::default();
        let old = Price {
            id: 1,
            ..price("0.002", "0.002")
        };
        let new = Price {
            id: 2,
            ..price("0.01", "0.03")
        };
        let future = Price {
            id: 3,
            ..price("9", "9")
        };
        list.insert(
            ProviderName::LOCAL,
            "llama3".into(),
            now - chrono::Duration::days(30),
            old,
        );
        list.insert(
            ProviderName::LOCAL,
            "llama3".into(),
            now + chrono::Duration::hours(1),
            future,
        );
        list.insert(
            ProviderName::LOCAL,
            "llama3".into(),
            now - chrono::Duration::seconds(5),
            new,
        );
        assert_eq!(list.at(ProviderName::LOCAL, "llama3", now), Some(new));
        assert_eq!(
            list.at(
                ProviderName::LOCAL,
                "llama3",
                now - chrono::Duration::days(1)
            ),
            Some(old)
        );
        assert_eq!(
            list.at(
                ProviderName::LOCAL,
                "llama3",
                now - chrono::Duration::days(31)
            ),
            None
        );
        assert_eq!(
            list.at(ProviderName::OPENAI, "llama3", now),
            None,
            "per provider"
        );
    }

    #[test]
    fn token_estimates_come_from_a_real_tokenizer() {
        assert_eq!(estimate_tokens(""), 0);
        let words = estimate_tokens("Write a tagline for a bicycle shop");
        assert!((6..=10).contains(&words), "{words}");
    }
}
