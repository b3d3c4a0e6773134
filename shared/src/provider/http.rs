//! The HTTP plumbing both clients share: one `reqwest::Client`, and turning a response or a
//! transport error into a [`ProviderError`].

use std::time::Duration;

use reqwest::{Client, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use super::error::{FailureClass, ProviderError, parse_retry_after};

/// A client for provider calls: bounded in time, never following redirects.
pub fn client(timeout: Duration) -> Client {
    Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(1024)
        .build()
        .expect("a reqwest client with static settings always builds")
}

/// Sends a request and decodes a 2xx JSON body, classifying every other outcome.
/// `error_message` pulls the human-readable message out of the provider's error body.
pub async fn send_json<T: DeserializeOwned>(
    request: RequestBuilder,
    error_message: fn(&serde_json::Value) -> Option<&str>,
) -> Result<(T, u16), ProviderError> {
    let response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    if status.is_success() {
        let body = response.bytes().await.map_err(transport_error)?;
        let value = serde_json::from_slice(&body).map_err(|e| {
            ProviderError::new(
                FailureClass::Provider,
                "invalid_provider_response",
                format!("could not read the provider's answer: {e}"),
            )
        })?;
        return Ok((value, status.as_u16()));
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| error_message(&v).map(str::to_owned))
        .unwrap_or(body);
    Err(ProviderError::from_status(
        status.as_u16(),
        &message,
        retry_after,
    ))
}

fn transport_error(error: reqwest::Error) -> ProviderError {
    let (code, what) = if error.is_timeout() {
        ("provider_timeout", "the provider did not answer in time")
    } else if error.is_connect() {
        ("provider_unreachable", "could not connect to the provider")
    } else {
        (
            "provider_unavailable",
            "the connection to the provider failed",
        )
    };
    let mut failure = ProviderError::new(FailureClass::Transient, code, format!("{what}: {error}"));
    failure.status_code = error.status().map(|s: StatusCode| s.as_u16());
    failure
}
