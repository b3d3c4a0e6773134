//! What a request in Anthropic's dialect carries that the conversation model has no place for,
//! kept with the job so that a call to an Anthropic upstream loses nothing (prompt caching is most
//! of a coding agent's bill): the `anthropic-beta` header, every top-level field the model does
//! not represent (`context_management`, `service_tier`, `cache_control`, `thinking` with its
//! budget, `output_config`, `top_k`, `metadata`, and whatever Anthropic adds next), the fields
//! beside a block's own (`cache_control`, a tool result's `is_error`), beside a tool's own
//! (`cache_control`, `defer_loading`, …), and tools of kinds the model cannot describe
//! (Anthropic's server tools). What is kept is chosen by leaving out what the conversation model
//! holds — never by listing what to keep — so a field Anthropic adds tomorrow travels too.
//!
//! A block's and a tool's extras are keyed by where the part is in the *conversation*
//! (message and part), which is what the upstream writes from; other upstreams never read them.
//!
//! Reasoning from a provider that signs none (Ollama, OpenAI-compatible servers) is given a
//! signature of the gateway's own on the Anthropic surface (Anthropic's SDK requires one), and
//! a thinking part carrying such a signature is left out of a call to Anthropic, which would
//! refuse it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// How the gateway's own reasoning signatures begin.
const GATEWAY_SIGNATURE: &str = "tollgate.";

/// An Anthropic request's fields beyond the conversation model, kept to be sent on verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicExtras {
    /// The `anthropic-beta` header, as the client sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<String>,
    /// Top-level fields, each as sent.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
    /// Fields beside a block's own, by the block's part's place: `"<message>.<part>"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blocks: BTreeMap<String, Map<String, Value>>,
    /// Fields beside a tool's own, by the tool's place among the conversation's tools (its
    /// index's text: a JSON object's keys are texts).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, Map<String, Value>>,
    /// Tools of kinds the conversation model has no form for, as sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_tools: Vec<Value>,
}

impl AnthropicExtras {
    /// The key of part `part` of message `message`.
    pub fn place(message: usize, part: usize) -> String {
        format!("{message}.{part}")
    }

    /// The extras of the block at that place.
    pub fn block(&self, message: usize, part: usize) -> Option<&Map<String, Value>> {
        self.blocks.get(&Self::place(message, part))
    }

    /// Keeps `extra` beside the block at that place (nothing when it is empty).
    pub fn keep_block(&mut self, message: usize, part: usize, extra: Map<String, Value>) {
        if !extra.is_empty() {
            self.blocks.insert(Self::place(message, part), extra);
        }
    }

    /// The extras of tool `k`.
    pub fn tool(&self, k: usize) -> Option<&Map<String, Value>> {
        self.tools.get(&k.to_string())
    }

    /// Keeps `extra` beside tool `k` (nothing when it is empty).
    pub fn keep_tool(&mut self, k: usize, extra: Map<String, Value>) {
        if !extra.is_empty() {
            self.tools.insert(k.to_string(), extra);
        }
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The gateway's signature for reasoning a provider did not sign: recognisable as the gateway's
/// (and so never sent to Anthropic), and the same for the same text.
pub fn gateway_signature(thinking: &str) -> String {
    let digest = Sha256::digest(thinking.as_bytes());
    format!("{GATEWAY_SIGNATURE}{}", hex::encode(&digest[..16]))
}

/// Whether a signature is the gateway's own, not a provider's.
pub fn is_gateway_signature(signature: &str) -> bool {
    signature.starts_with(GATEWAY_SIGNATURE)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_gateways_signature_is_its_own_and_stable() {
        let signature = gateway_signature("2 + 2 is 4.");
        assert!(is_gateway_signature(&signature));
        assert_eq!(signature, gateway_signature("2 + 2 is 4."));
        assert_ne!(signature, gateway_signature("2 + 2 is 5."));
        assert!(!is_gateway_signature("EqQBCgIYAhIM1gbcDa9GJwZA2b3h"));
    }

    #[test]
    fn extras_round_trip_and_are_left_out_when_empty() {
        let mut extras = AnthropicExtras {
            beta: Some("context-management-2025-06-27".into()),
            ..AnthropicExtras::default()
        };
        extras
            .fields
            .insert("context_management".into(), json!({ "edits": [] }));
        let control = json!({ "cache_control": { "type": "ephemeral" } });
        let control = control.as_object().cloned().unwrap_or_default();
        extras.keep_block(0, 1, control.clone());
        extras.keep_block(2, 0, Map::new());
        extras.keep_tool(11, control.clone());
        assert_eq!(extras.block(0, 1), Some(&control));
        assert_eq!(extras.block(2, 0), None, "nothing kept for no extras");
        let stored = serde_json::to_value(&extras).expect("writable");
        assert_eq!(
            stored["blocks"]["0.1"]["cache_control"]["type"],
            "ephemeral"
        );
        let read: AnthropicExtras = serde_json::from_value(stored).expect("read as a value");
        assert_eq!(read.tool(11), Some(&control));
        assert_eq!(read, extras);
        assert!(AnthropicExtras::default().is_empty());
    }
}
