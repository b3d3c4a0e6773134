//! How a provider call failed, decided by the client that saw the failure.

use std::time::Duration;

use crate::domain::{Capability, FailureClass, JobErrorCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProviderError {
    /// Stable code recorded on the attempt and, when final, on the job; its class says whether
    /// trying again can help.
    pub code: JobErrorCode,
    pub message: String,
    pub status_code: Option<u16>,
    /// What a 429 or 503 asked us to wait.
    pub retry_after: Option<Duration>,
    /// The request field the provider's error names (OpenAI's `error.param`), when it names one.
    pub param: Option<Box<str>>,
    /// What the model, as served there, said it cannot do (an OpenAI-compatible server started
    /// without tool calling): another host, or the next provider, may.
    pub lacks: Option<Capability>,
    /// The provider's own error body, as it answered it: a client of the provider's dialect
    /// (Anthropic's, whose clients read its wording) is answered with it unchanged.
    pub body: Option<Box<serde_json::Value>>,
}

impl ProviderError {
    pub fn new(code: JobErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status_code: None,
            retry_after: None,
            param: None,
            lacks: None,
            body: None,
        }
    }

    /// Classifies an HTTP error answer by its status code.
    pub fn from_status(status: u16, upstream_message: &str, retry_after: Option<Duration>) -> Self {
        let code = match status {
            429 => JobErrorCode::ProviderRateLimited,
            408 | 500..=599 => JobErrorCode::ProviderUnavailable,
            401 | 403 => JobErrorCode::ProviderUnauthorized,
            404 => JobErrorCode::ModelNotFound,
            413 => JobErrorCode::InputTooLong,
            _ => JobErrorCode::InvalidRequest,
        };
        Self {
            code,
            message: format!(
                "upstream answered {status}: {}",
                truncate(upstream_message, 500)
            ),
            status_code: Some(status),
            retry_after,
            param: None,
            lacks: None,
            body: None,
        }
    }

    /// The failure with `secret` (the account's key) taken out of its message and body, should
    /// the provider echo it there.
    pub fn redacted(mut self, secret: &str) -> Self {
        const REDACTED: &str = "[redacted]";
        self.message = self.message.replace(secret, REDACTED);
        if let Some(body) = &self.body
            && let text = body.to_string()
            && text.contains(secret)
        {
            self.body = serde_json::from_str(&text.replace(secret, REDACTED))
                .ok()
                .map(Box::new);
        }
        self
    }

    /// The failure without the provider's own body.
    pub fn without_body(mut self) -> Self {
        self.body = None;
        self
    }

    /// Whether trying again can help, and where (the code's class).
    pub fn class(&self) -> FailureClass {
        self.code.class()
    }

    pub fn is_transient(&self) -> bool {
        self.class() == FailureClass::Transient
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
        let class = |status| ProviderError::from_status(status, "x", None).class();
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
