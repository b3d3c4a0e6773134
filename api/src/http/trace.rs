//! Every request continues its client's W3C trace (`traceparent`), or starts one: its span, which
//! every log line of the request carries, is the trace's next step, and its `traceparent` is
//! handed to the handlers ([`crate::http::client::ClientInfo`]) to be stored with the jobs it accepts.

use axum::extract::Request;
use tollgate_core::domain::TraceParent;

/// The request's span of its trace: the client's `traceparent` continued (or a new trace), and
/// the span's own `traceparent` put in the request's extensions for the handlers. The caller runs
/// the request in it ([`crate::http::metrics::track`], which times it too: one layer for both, since
/// every layer costs every request).
pub fn start(request: &mut Request) -> tracing::Span {
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
    let own = tollgate_core::telemetry::continue_trace(&span, incoming.as_ref());
    request.extensions_mut().insert(own);
    span
}
