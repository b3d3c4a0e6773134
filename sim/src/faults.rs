//! The fault knobs and how a generation request meets them.

use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::Response;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// What the sim does to each generation or embedding request before answering it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Knobs {
    /// Delay before answering, in milliseconds.
    pub latency_ms: u64,
    /// Share of requests (0..=1) answered with an error: a 500 unless `error_status` says otherwise.
    pub error_rate: f64,
    /// The status of those errors (e.g. 400 to play a provider refusing the request).
    pub error_status: Option<u16>,
    /// Share of requests answered with a 429 and `Retry-After`.
    pub rate_limit_rate: f64,
    /// The `Retry-After` of those 429s, in seconds.
    pub retry_after_secs: u64,
    /// Share of requests that never get an answer (the client's timeout must fire).
    pub hang_rate: f64,
    /// Ollama's generate and chat answers leave out `prompt_eval_count`, as Ollama does when the
    /// prompt was cached.
    pub prompt_cached: bool,
    /// Delay between the pieces of a streamed answer, in milliseconds (a model's token rate).
    pub token_delay_ms: u64,
    /// A streamed answer breaks with an error after this many pieces.
    pub fail_after_tokens: Option<u32>,
    /// Every answer is this many words long (before `max_tokens` cuts it), instead of 8 to 39.
    pub reply_words: Option<u32>,
    /// The next this many answers asked to be JSON do not match their schema (or are prose).
    pub invalid_structured: u32,
}

/// What to do with one request.
pub enum Fault {
    None,
    Error { status: StatusCode },
    RateLimited { retry_after_secs: u64 },
}

impl Fault {
    /// The error answer for this fault, rendered in the caller's protocol by `render(status,
    /// message)`; `None` when the request should be served.
    pub fn answer(self, render: impl Fn(StatusCode, &str) -> Response) -> Option<Response> {
        match self {
            Self::None => None,
            Self::Error { status } => Some(render(status, "simulated error")),
            Self::RateLimited { retry_after_secs } => {
                let mut response = render(StatusCode::TOO_MANY_REQUESTS, "simulated rate limit");
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, retry_after_secs.into());
                Some(response)
            }
        }
    }
}

/// Applies latency and hangs (by waiting), and draws the request's fault.
pub async fn meet(knobs: &Knobs) -> Fault {
    if knobs.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(knobs.latency_ms)).await;
    }
    let (hang, rate_limited, error) = {
        let mut rng = rand::rng();
        (
            rng.random_bool(knobs.hang_rate.clamp(0.0, 1.0)),
            rng.random_bool(knobs.rate_limit_rate.clamp(0.0, 1.0)),
            rng.random_bool(knobs.error_rate.clamp(0.0, 1.0)),
        )
    };
    if hang {
        std::future::pending::<()>().await;
    }
    if rate_limited {
        Fault::RateLimited {
            retry_after_secs: knobs.retry_after_secs,
        }
    } else if error {
        let status = knobs
            .error_status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Fault::Error { status }
    } else {
        Fault::None
    }
}
