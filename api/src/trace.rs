//! Every request continues its client's W3C trace (`traceparent`), or starts one: its span, which
//! every log line of the request carries, is the trace's next step, and its `traceparent` is
//! handed to the handlers ([`crate::client::ClientInfo`]) to be stored with the jobs it accepts.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use shared::domain::TraceParent;
use tracing::Instrument as _;

/// Wraps the request in its span of the trace.
pub async fn continue_trace(mut request: Request, next: Next) -> Response {
    let incoming = request
        .headers()
        .get(TraceParent::HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceParent::parse);
    let span = tracing::info_span!(
        "api request",
        method = %request.method(),
        path = %request.uri().path(),
        trace_id = tracing::field::Empty,
    );
    let own = shared::telemetry::continue_trace(&span, incoming.as_ref());
    request.extensions_mut().insert(own);
    next.run(request).instrument(span).await
}
