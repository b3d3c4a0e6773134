//! What every upstream has, whatever kind it is: an address checked once, a key kept sealed, and a
//! circuit policy.

use std::time::Duration;

use super::ValidationError;

/// When a provider's circuit opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitPolicy {
    /// Transient failures in a row that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit refuses calls before letting a trial call through.
    pub cooldown: Duration,
}

/// A key as stored: sealed, with its last four characters in clear.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey {
    pub sealed: Vec<u8>,
    pub last4: String,
}

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedKey(…{})", self.last4)
    }
}

/// A provider base URL: absolute http(s), without query or fragment.
pub fn check_base_url(field: &str, value: &str) -> Result<String, ValidationError> {
    let url = url::Url::parse(value)
        .map_err(|_| ValidationError::new(field, "must be an absolute http(s) URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ValidationError::new(
            field,
            "must be an absolute http(s) URL",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ValidationError::new(
            field,
            "must not carry a query or fragment",
        ));
    }
    Ok(value.trim_end_matches('/').to_owned())
}
