//! The guard every request body passes (a middleware): a deadline for the whole body, and a
//! kept-alive connection left usable by a refusal that did not read the body.
//!
//! - **The deadline is for the body, not for each chunk.** It is `body_read_timeout` from the
//!   head, pushed out by a second for every [`MIN_RATE`] bytes received (the rule of Apache's
//!   `mod_reqtimeout`): a chunked body trickling a byte every few seconds is cut off at the
//!   timeout, while a large upload that keeps flowing is never cut. The body then fails with
//!   [`BodyDeadline`], which the extractors answer with 408.
//! - **A refusal does not strand the connection.** A handler that answers without reading the
//!   body (404, 405, 415, 401…) leaves its bytes on the connection; hyper then closes it after the
//!   answer, without saying so, and a client that pooled it fails its next request. So the rest of
//!   a small body is drained and the connection kept; otherwise the answer says
//!   `Connection: close`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt as _;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tollgate_core::sync::lock;

/// The slowest average rate a body may arrive at once its first `body_read_timeout` is spent.
const MIN_RATE: f64 = 64.0 * 1024.0;
/// How much of an unread body is drained after a refusal to keep the connection.
const DRAIN_LIMIT: u64 = 64 * 1024;
/// How long a drain may wait for those bytes.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// The body did not arrive by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyDeadline;

/// The middleware: guards a request that has a body; one without passes untouched.
pub async fn guard(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let plan = Leftover::plan(&parts);
    let shared = Arc::new(Mutex::new(Shared {
        body,
        state: Reading::Open,
        received: 0,
        started: Instant::now(),
        timeout,
        sleep: Box::pin(tokio::time::sleep(timeout)),
    }));
    let guarded = Body::new(GuardedBody(shared.clone()));
    let mut response = next.run(Request::from_parts(parts, guarded)).await;
    if plan.http1 && !leave_usable(shared, &plan).await {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// What is known, from the head, about a body a handler may leave unread.
struct Leftover {
    http1: bool,
    /// The client waits for `100 Continue` before sending: nothing of it is on the connection.
    expects_continue: bool,
    declared: Option<u64>,
}

impl Leftover {
    fn plan(parts: &axum::http::request::Parts) -> Self {
        let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
        Self {
            http1: parts.version <= Version::HTTP_11,
            expects_continue: header(header::EXPECT)
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue")),
            declared: header(header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
        }
    }
}

/// After the answer: whether the connection can carry another request, draining what is left of
/// a small unread body if need be.
async fn leave_usable(shared: Arc<Mutex<Shared>>, plan: &Leftover) -> bool {
    let (state, received) = {
        let shared = lock(&shared);
        (shared.state, shared.received)
    };
    match state {
        Reading::Ended => return true,
        Reading::Failed => return false,
        Reading::Open => {}
    }
    // A handler still holding the body (none does once it has answered) is left to it.
    let Some(shared) = Arc::into_inner(shared) else {
        return true;
    };
    let left = plan.declared.map(|d| d.saturating_sub(received));
    if plan.expects_continue || left.is_some_and(|left| left > DRAIN_LIMIT) {
        return false;
    }
    let mut body = shared
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .body
        .into_data_stream();
    let drain = async {
        let mut drained = 0;
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { return false };
            drained += chunk.len() as u64;
            if drained > DRAIN_LIMIT {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, drain)
        .await
        .unwrap_or(false)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Open,
    Ended,
    /// The body broke off or missed its deadline: the connection's framing is lost.
    Failed,
}

struct Shared {
    body: Body,
    state: Reading,
    received: u64,
    started: Instant,
    timeout: Duration,
    /// Wakes the reader at the deadline.
    sleep: Pin<Box<Sleep>>,
}

impl Shared {
    fn deadline(&self) -> Instant {
        self.started + self.timeout + Duration::from_secs_f64(self.received as f64 / MIN_RATE)
    }
}

/// The body the handler reads: the request's own, under the deadline, its progress shared with
/// [`guard`].
struct GuardedBody(Arc<Mutex<Shared>>);

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut shared = lock(&self.0);
        let shared = &mut *shared;
        if shared.state != Reading::Open {
            return Poll::Ready(None);
        }
        match Pin::new(&mut shared.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                shared.received += frame.data_ref().map_or(0, |d| d.len() as u64);
                if shared.body.is_end_stream() {
                    shared.state = Reading::Ended;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                shared.state = Reading::Failed;
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                shared.state = Reading::Ended;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = shared.deadline();
                if shared.sleep.deadline() != deadline {
                    shared.sleep.as_mut().reset(deadline);
                }
                if shared.sleep.as_mut().poll(cx).is_ready() {
                    shared.state = Reading::Failed;
                    return Poll::Ready(Some(Err(axum::Error::new(BodyDeadline))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = lock(&self.0);
        shared.state != Reading::Open || shared.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        lock(&self.0).body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(received: u64) -> Shared {
        Shared {
            body: Body::empty(),
            state: Reading::Open,
            received,
            started: Instant::now(),
            timeout: Duration::from_secs(30),
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    #[tokio::test]
    async fn the_deadline_grows_with_the_bytes_received_not_with_the_chunks() {
        let idle = shared(0);
        assert_eq!(idle.deadline(), idle.started + Duration::from_secs(30));
        // A byte every few seconds buys next to nothing; a megabyte buys 16 s.
        let trickled = shared(20);
        assert!(trickled.deadline() < trickled.started + Duration::from_millis(30_001));
        let flowing = shared(1024 * 1024);
        assert_eq!(
            flowing.deadline(),
            flowing.started + Duration::from_secs(30 + 16)
        );
    }
}
