//! The HTTP plumbing both clients share: one `reqwest::Client`, the job's `traceparent` on every
//! call, and turning a response or a transport error into a [`ProviderError`].

use std::time::Duration;

use futures::{Stream, StreamExt as _};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{ProviderError, parse_retry_after};
use crate::domain::JobErrorCode;
use crate::domain::TraceParent;

tokio::task_local! {
    /// The `traceparent` the calls made within [`traced`] send the provider.
    static TRACE: TraceParent;
}

/// Runs `call` with every provider request it makes carrying `trace` as its `traceparent`, so the
/// provider's own traces (a traced proxy, OpenAI's logs) join the job's.
pub async fn traced<F: Future>(trace: TraceParent, call: F) -> F::Output {
    TRACE.scope(trace, call).await
}

/// A client for provider calls: bounded in time, never following redirects.
#[expect(
    clippy::expect_used,
    reason = "the settings are constants; only a TLS backend that cannot start fails, at start-up"
)]
pub fn client(timeout: Duration) -> Client {
    Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(1024)
        .build()
        .expect("a reqwest client with static settings always builds")
}

/// A client for streamed answers: no bound on the whole answer (a long one streams for minutes),
/// but each read must come within `timeout`, so a provider that stalls mid-stream still fails.
#[expect(
    clippy::expect_used,
    reason = "the settings are constants; only a TLS backend that cannot start fails, at start-up"
)]
pub fn streaming_client(timeout: Duration) -> Client {
    Client::builder()
        .read_timeout(timeout)
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
    let response = send(request, error_message).await?;
    let status = response.status();
    let body = response.bytes().await.map_err(transport_error)?;
    let value = serde_json::from_slice(&body).map_err(|e| unreadable(&e))?;
    Ok((value, status.as_u16()))
}

/// A provider's answer that is not what its protocol says it is.
pub fn unreadable(error: &dyn std::fmt::Display) -> ProviderError {
    ProviderError::new(
        JobErrorCode::InvalidProviderResponse,
        format!("could not read the provider's answer: {error}"),
    )
}

/// A stream that ended before the provider said it was done.
pub fn broken_stream() -> ProviderError {
    ProviderError::new(
        JobErrorCode::ProviderUnavailable,
        "the provider's stream ended before its answer did",
    )
}

/// Sends a request and returns a 2xx response with its body unread (for a stream), classifying
/// every other outcome.
pub async fn send(
    request: RequestBuilder,
    error_message: fn(&serde_json::Value) -> Option<&str>,
) -> Result<Response, ProviderError> {
    let request = match TRACE.try_with(ToString::to_string) {
        Ok(traceparent) => request.header(TraceParent::HEADER, traceparent),
        Err(_) => request,
    };
    let response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = response.text().await.unwrap_or_default();
    let value = serde_json::from_str::<serde_json::Value>(&body).ok();
    let message = value
        .as_ref()
        .and_then(|v| error_message(v).map(str::to_owned))
        .unwrap_or(body);
    let mut failure = ProviderError::from_status(status.as_u16(), &message, retry_after);
    // OpenAI nests its error; vLLM and other compatible servers write it at the top level.
    failure.param = value.as_ref().and_then(|v| {
        let param = v["error"]["param"].as_str().or_else(|| v["param"].as_str());
        param.map(Box::from)
    });
    failure.body = value.map(Box::new);
    Err(failure)
}

/// The lines of an NDJSON body as JSON values, however the bytes are chunked.
pub fn ndjson_lines<S, B>(bytes: S) -> impl Stream<Item = Result<Value, ProviderError>> + Send
where
    S: Stream<Item = Result<B, reqwest::Error>> + Send + Unpin + 'static,
    B: AsRef<[u8]>,
{
    futures::stream::unfold(
        (bytes, Vec::<u8>::new(), false),
        |(mut bytes, mut buffer, mut done)| async move {
            loop {
                if let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let parsed = serde_json::from_slice(&line).map_err(|e| unreadable(&e));
                    return Some((parsed, (bytes, buffer, done)));
                }
                if done {
                    if buffer.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    // A last line without its newline.
                    buffer.push(b'\n');
                    continue;
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(chunk.as_ref()),
                    Some(Err(error)) => {
                        done = true;
                        buffer.clear();
                        return Some((Err(transport_error(error)), (bytes, buffer, done)));
                    }
                    None => done = true,
                }
            }
        },
    )
}

pub fn transport_error(error: reqwest::Error) -> ProviderError {
    let (code, what) = if error.is_timeout() {
        (
            JobErrorCode::ProviderTimeout,
            "the provider did not answer in time",
        )
    } else if error.is_connect() {
        (
            JobErrorCode::ProviderUnreachable,
            "could not connect to the provider",
        )
    } else {
        (
            JobErrorCode::ProviderUnavailable,
            "the connection to the provider failed",
        )
    };
    let mut failure = ProviderError::new(code, format!("{what}: {error}"));
    failure.status_code = error.status().map(|s: StatusCode| s.as_u16());
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ndjson_lines_survive_any_chunking() {
        let body = b"{\"status\":\"pulling manifest\"}\n\n{\"status\":\"pulling\",\"completed\":5}\n{\"status\":\"success\"}";
        for size in [1, 3, 7, body.len()] {
            let chunks: Vec<Result<Vec<u8>, reqwest::Error>> =
                body.chunks(size).map(|c| Ok(c.to_vec())).collect();
            let lines: Vec<Value> = ndjson_lines(futures::stream::iter(chunks))
                .map(|line| line.expect("a JSON line"))
                .collect()
                .await;
            let statuses: Vec<_> = lines.iter().map(|l| l["status"].clone()).collect();
            assert_eq!(
                statuses,
                ["pulling manifest", "pulling", "success"],
                "chunks of {size}"
            );
        }
    }
}
