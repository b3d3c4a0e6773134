//! What a provider's models refused to do lately — an OpenAI-compatible server started without
//! tool calling does not list it, it says so when asked — believed for five minutes, after which
//! one call finds out whether the server was started again with it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tollgate_core::domain::{Capabilities, Capability};
use tollgate_core::provider::model_key;

/// How long a refusal is believed.
const KEPT: Duration = Duration::from_secs(300);

/// The refusals of one host's or one cloud account's models, by [`model_key`].
#[derive(Default)]
pub struct Refusals(Mutex<HashMap<String, (Capabilities, Instant)>>);

impl Refusals {
    /// `model` refused a call that needed `lacking`.
    pub fn record(&self, model: &str, lacking: Capability) {
        let mut refused = tollgate_core::sync::lock(&self.0);
        let entry = refused
            .entry(model_key(model))
            .or_insert((Capabilities::NONE, Instant::now()));
        *entry = (entry.0.union(Capabilities::of([lacking])), Instant::now());
    }

    /// What `model` refused lately (nothing, once the refusal is old).
    pub fn of(&self, model: &str) -> Capabilities {
        match tollgate_core::sync::lock(&self.0).get(&model_key(model)) {
            Some((cannot, at)) if at.elapsed() < KEPT => *cannot,
            _ => Capabilities::NONE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_kept_per_model_and_adds_up() {
        let refusals = Refusals::default();
        assert_eq!(refusals.of("qwen"), Capabilities::NONE);
        refusals.record("qwen", Capability::Tools);
        refusals.record("qwen", Capability::Vision);
        assert_eq!(
            refusals.of("qwen"),
            Capabilities::of([Capability::Tools, Capability::Vision])
        );
        assert_eq!(refusals.of("llama3"), Capabilities::NONE);
    }
}
