//! Logs and traces. Every binary logs to stderr through `tracing`; with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, its spans are exported over OTLP as well (HTTP, protobuf or
//! JSON as `OTEL_EXPORTER_OTLP_PROTOCOL` says), by a batch processor on a thread of its own.
//! Unset, no exporter exists and nothing is sent.
//!
//! A job's trace is a W3C `traceparent` ([`TraceParent`]) kept whether or not anything is exported:
//! [`continue_trace`] makes a span the trace's next step and says its own `traceparent`, which is
//! what goes on (into the job's row, its AMQP message, the provider's request).

use std::time::SystemTime;

use opentelemetry::trace::{
    Span as _, SpanContext, TraceContextExt as _, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, SpanId, global};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::domain::TraceParent;

/// The name spans are recorded under.
const TRACER: &str = "tollgate";

/// Where spans go, if anywhere.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TelemetryConfig {
    /// OTLP/HTTP endpoint to export spans to (`/v1/traces` is appended); unset, none are.
    #[arg(long = "otlp-endpoint", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// `http/protobuf` (the default) or `http/json`.
    #[arg(
        long = "otlp-protocol",
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf"
    )]
    pub otlp_protocol: String,
}

/// The span exporter, flushed when the process ends.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "spans could not all be exported");
        }
    }
}

/// Structured logs to stderr, filtered by `RUST_LOG` (default `info,sqlx=warn`), JSON when
/// `TOLLGATE_LOG_FORMAT=json`; and spans over OTLP when configured.
pub fn init(service: &'static str, config: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = std::env::var("TOLLGATE_LOG_FORMAT").is_ok_and(|f| f == "json");
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let provider = config
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| exporter(service, endpoint, &config.otlp_protocol))
        .transpose()?;
    let spans = provider.as_ref().map(|provider| {
        global::set_tracer_provider(provider.clone());
        tracing_opentelemetry::layer().with_tracer(provider.tracer(TRACER))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter()))
        .with(spans.map(|layer| layer.with_filter(filter())))
        .init();
    Ok(Telemetry { provider })
}

/// A tracer provider exporting to `endpoint` in batches.
pub fn exporter(
    service: &'static str,
    endpoint: &str,
    protocol: &str,
) -> anyhow::Result<SdkTracerProvider> {
    let protocol = match protocol {
        "http/json" => Protocol::HttpJson,
        "http/protobuf" => Protocol::HttpBinary,
        other => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL {other:?} is not supported: use http/protobuf or http/json"
        ),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

/// Makes `span` the next step of `parent`'s trace (a new trace without one) and says the span's
/// own `traceparent`: the exported span's ids when spans are exported, else the parent's trace
/// with a new span id. A span already started keeps the trace it started in for its export, but
/// what it passes on (and logs) is still `parent`'s trace.
pub fn continue_trace(span: &tracing::Span, parent: Option<&TraceParent>) -> TraceParent {
    if let Some(parent) = parent {
        // Without an exporter there is no OpenTelemetry layer to take the parent: nothing to do.
        let _ = span.set_parent(remote(parent));
    }
    let own = exported(span)
        .filter(|own| parent.is_none_or(|parent| own.trace_id_bytes() == parent.trace_id_bytes()));
    let trace = own.unwrap_or_else(|| parent.map_or_else(TraceParent::root, TraceParent::child));
    span.record("trace_id", tracing::field::display(trace.trace_id()));
    trace
}

/// The `traceparent` a span within `trace` passes on: its own exported ids, or `trace` with a new
/// span id when nothing is exported.
pub fn passed_on(span: &tracing::Span, trace: &TraceParent) -> TraceParent {
    exported(span)
        .filter(|own| own.trace_id_bytes() == trace.trace_id_bytes())
        .unwrap_or_else(|| trace.child())
}

/// The span's ids as its exporter knows them; `None` without one.
fn exported(span: &tracing::Span) -> Option<TraceParent> {
    let own = span.context().span().span_context().clone();
    own.is_valid().then(|| {
        TraceParent::from_ids(
            own.trace_id().to_bytes(),
            own.span_id().to_bytes(),
            own.trace_flags().to_u8(),
        )
    })
}

/// Records a span of `parent`'s trace that ran from `start` to `end` (one that had no code of its
/// own running, like a job's wait in the queue). Without an exporter it goes nowhere.
pub fn record_interval(
    name: &'static str,
    parent: &TraceParent,
    start: SystemTime,
    end: SystemTime,
) {
    let tracer = global::tracer(TRACER);
    let mut span = tracer
        .span_builder(name)
        .with_start_time(start)
        .with_attributes([KeyValue::new("trace_id", parent.trace_id())])
        .start_with_context(&tracer, &remote(parent));
    span.end_with_timestamp(end);
}

/// `parent` as the remote parent of a span.
fn remote(parent: &TraceParent) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_bytes(parent.trace_id_bytes()),
        SpanId::from_bytes(parent.parent_id_bytes()),
        TraceFlags::new(parent.flags()),
        true,
        TraceState::default(),
    ))
}
