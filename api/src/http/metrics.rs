//! The api's Prometheus metrics: every request by route template and status with its latency,
//! jobs and batch items accepted, and the streams open. `GET /metrics` serves them (guarded by
//! `TOLLGATE_METRICS_TOKEN` when set).
//!
//! What it counted also goes, every few seconds, to the dashboard's activity per minute
//! ([`report`]), summed there with every other api instance's and worker's.
//!
//! Labels hold bounded values only: route templates (`/v1/jobs/{id}`), never paths; no tenant.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tollgate_core::metrics::{Latencies, ScrapeGuard, Tally};
use tracing::Instrument as _;

/// The route label of a request no route matched (a 404 or 405 from a fallback).
const UNMATCHED: &str = "unmatched";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AcceptedLabels {
    kind: &'static str,
    /// `single` or `batch`.
    lane: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: &'static str,
}

/// The api's metrics, cheap to clone.
#[derive(Clone)]
pub struct ApiMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    guard: ScrapeGuard,
    requests: Family<RequestLabels, Counter>,
    durations: Latencies<RouteLabels>,
    accepted: Family<AcceptedLabels, Counter>,
    streams: Family<StreamLabels, Gauge>,
    /// Requests and jobs since the last report to the dashboard's activity ([`report`]).
    tally: Tally,
}

impl ApiMetrics {
    pub fn new(guard: ScrapeGuard) -> Self {
        let mut registry = tollgate_core::metrics::registry();
        let requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        let durations = tollgate_core::metrics::latencies();
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer's head (a stream's body flows on after)",
            durations.clone(),
        );
        let accepted = Family::default();
        registry.register(
            "jobs_accepted",
            "Jobs accepted (answered 202 or held for a sync answer), by kind and lane (single or batch item)",
            accepted.clone(),
        );
        let streams = Family::default();
        registry.register(
            "streams_open",
            "Responses streaming now (server-sent events, NDJSON), by kind of stream",
            streams.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                guard,
                requests,
                durations,
                accepted,
                streams,
                tally: Tally::default(),
            }),
        }
    }

    /// `count` jobs of `kind` accepted, alone or as one batch's items.
    pub fn accepted(&self, kind: &'static str, batch: bool, count: u64) {
        let lane = if batch { "batch" } else { "single" };
        self.inner
            .accepted
            .get_or_create(&AcceptedLabels { kind, lane })
            .inc_by(count);
        self.inner.tally.accepted(count);
    }

    /// `stream`, counted among the open streams of its kind for as long as it is alive.
    pub fn open<S: Stream>(
        &self,
        kind: &'static str,
        stream: S,
    ) -> impl Stream<Item = S::Item> + use<S> {
        let open = OpenStream::new(self.clone(), kind);
        stream.map(move |item| {
            let _held = &open;
            item
        })
    }

    fn observe(&self, method: &str, route: &str, status: StatusCode, started: Instant) {
        let route = route.to_owned();
        let method = method.to_owned();
        let seconds = started.elapsed().as_secs_f64();
        self.inner
            .durations
            .get_or_create(&RouteLabels {
                method: method.clone(),
                route: route.clone(),
            })
            .observe(seconds);
        self.inner
            .requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status: status.as_u16(),
            })
            .inc();
        self.inner.tally.request();
    }
}

/// One open stream, counted until dropped.
struct OpenStream {
    metrics: ApiMetrics,
    kind: &'static str,
}

impl OpenStream {
    fn new(metrics: ApiMetrics, kind: &'static str) -> Self {
        metrics
            .inner
            .streams
            .get_or_create(&StreamLabels { stream: kind })
            .inc();
        Self { metrics, kind }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.metrics
            .inner
            .streams
            .get_or_create(&StreamLabels { stream: self.kind })
            .dec();
    }
}

/// The route template a request matched, carried out on its response to [`track`] (which runs
/// before routing, so that it times and counts every request, matched or not).
#[derive(Clone)]
struct Matched(MatchedPath);

/// Marks a routed request's response with the route it matched (a route layer: it runs after
/// routing).
pub async fn mark_route(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(path) = matched {
        response.extensions_mut().insert(Matched(path));
    }
    response
}

/// Runs every request in its span of the trace ([`crate::http::trace::start`]), and counts and times it
/// by its route template and status.
pub async fn track(
    State(metrics): State<ApiMetrics>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let span = crate::http::trace::start(&mut request);
    let response = next.run(request).instrument(span).await;
    let route = response
        .extensions()
        .get::<Matched>()
        .map_or(UNMATCHED, |Matched(path)| path.as_str());
    metrics.observe(method.as_str(), route, response.status(), started);
    response
}

/// Metrics
///
/// The api's figures in OpenMetrics text: requests, intake, queues, jobs, spend. When
/// `TOLLGATE_METRICS_TOKEN` is set, only with `Authorization: Bearer <that token>`.
#[utoipa::path(get, path = "/metrics", tag = "Service", responses(
    (status = 200, description = "The metrics", content_type = "application/openmetrics-text", body = String),
    (status = 401, description = "`TOLLGATE_METRICS_TOKEN` is set and was not sent"),
))]
pub async fn scrape(State(state): State<crate::AppState>, headers: HeaderMap) -> Response {
    let metrics = &state.metrics;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if !metrics.inner.guard.allows(authorization) {
        return crate::http::error::ApiError::unauthorized(
            crate::http::error::ErrorCode::InvalidToken,
            "send `Authorization: Bearer <TOLLGATE_METRICS_TOKEN>`",
        )
        .into_response();
    }
    match tollgate_core::metrics::render(&metrics.inner.registry) {
        Ok(text) => (
            [(header::CONTENT_TYPE, tollgate_core::metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(error) => {
            crate::http::error::ApiError::internal(anyhow::anyhow!("{error}")).into_response()
        }
    }
}

/// Adds the requests and jobs counted here to the dashboard's activity every `every` until
/// `shutdown`, and once more at the end.
pub async fn report(
    metrics: ApiMetrics,
    pool: PgPool,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => break,
        }
        if let Err(error) = metrics.inner.tally.report(&pool).await {
            tracing::debug!(%error, "cannot report this instance's activity");
        }
    }
    if let Err(error) = metrics.inner.tally.report(&pool).await {
        tracing::warn!(%error, "cannot report this instance's last activity");
    }
}
