//! How a provider call failed, decided by the client that saw the failure.

use std::time::Duration;

/// What the failure says about trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Timeout, connection failure, 5xx, 429: the same call may well succeed later.
    Transient,
    /// The provider cannot serve this now for reasons of its own (bad key, broken response):
    /// another provider might, retrying this one will not help.
    Provider,
    /// The request itself is at fault (unknown model, input too long, 400): no provider will do
    /// better, so the job fails at once.
    Client,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProviderError {
    pub class: FailureClass,
    /// Stable code recorded on the attempt and, when final, on the job.
    pub code: &'static str,
    pub message: String,
    pub status_code: Option<u16>,
    /// What a 429 or 503 asked us to wait.
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    pub fn new(class: FailureClass, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            class,
            code,
            message: message.into(),
            status_code: None,
            retry_after: None,
        }
    }

    /// Classifies an HTTP error answer by its status code.
    pub fn from_status(status: u16, upstream_message: &str, retry_after: Option<Duration>) -> Self {
        let (class, code) = match status {
            429 => (FailureClass::Transient, "provider_rate_limited"),
            408 | 500..=599 => (FailureClass::Transient, "provider_unavailable"),
            401 | 403 => (FailureClass::Provider, "provider_unauthorized"),
            404 => (FailureClass::Client, "model_not_found"),
            413 => (FailureClass::Client, "input_too_long"),
            _ => (FailureClass::Client, "invalid_request"),
        };
        Self {
            class,
            code,
            message: format!(
                "upstream answered {status}: {}",
                truncate(upstream_message, 500)
            ),
            status_code: Some(status),
            retry_after,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class == FailureClass::Transient
    }
}

/// `Retry-After` in its delta-seconds form; an HTTP date is ignored (the backoff schedule applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_classified_by_whose_fault_they_are() {
        let class = |status| ProviderError::from_status(status, "x", None).class;
        assert_eq!(class(429), FailureClass::Transient);
        assert_eq!(class(503), FailureClass::Transient);
        assert_eq!(class(500), FailureClass::Transient);
        assert_eq!(class(401), FailureClass::Provider);
        assert_eq!(class(400), FailureClass::Client);
        assert_eq!(class(404), FailureClass::Client);
    }

    #[test]
    fn retry_after_in_seconds_is_read_and_dates_are_not() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn long_upstream_messages_are_cut() {
        let error = ProviderError::from_status(400, &"é".repeat(1000), None);
        assert!(error.message.chars().count() < 560);
        assert!(error.message.ends_with('…'));
    }
}
