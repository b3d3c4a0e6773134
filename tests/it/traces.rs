//! Traces across the queue: a client's W3C `traceparent` (or a new one) stored with the job,
//! carried in its message, continued by the worker, sent on to the provider and on every log line
//! about the job; and, with an OTLP endpoint, the spans of its way exported.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tollgate_core::domain::{SettingsChange, TraceParent};

use crate::harness::{Stack, client, eventually, with_openai_fallback};
use crate::secrets::capture_logs;

const SENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The traces the sim's model calls came with, parsed (a call without one is a failure).
fn traces(sim: &provider_sim::Sim) -> Vec<TraceParent> {
    sim.traceparents()
        .into_iter()
        .map(|header| {
            let header = header.expect("every model call carries a traceparent");
            TraceParent::parse(&header).expect("a valid traceparent")
        })
        .collect()
}

async fn submit_traced(stack: &Stack, path: &str, body: &Value, traceparent: &str) -> Value {
    let response = client()
        .post(stack.url(path))
        .bearer_auth(&stack.token)
        .header("traceparent", traceparent)
        .json(body)
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 202, "{path}");
    response.json().await.expect("JSON")
}

// One thread runs the api, the worker and the test, so the thread's subscriber sees all their logs.
#[tokio::test(flavor = "current_thread")]
async fn a_clients_trace_reaches_every_provider_call_and_every_log_line_about_the_job() {
    let (logs, _guard) = capture_logs();
    let stack = Stack::with(with_openai_fallback(SettingsChange::default())).await;
    // Ollama fails (two calls, logged), then OpenAI answers: three calls of one trace.
    stack.ollama.set_knobs(provider_sim::Knobs {
        error_rate: 1.0,
        ..provider_sim::Knobs::default()
    });
    let body = json!({ "model": "llama3", "prompt": "traced" });
    let job = submit_traced(&stack, "/v1/generate", &body, SENT).await;
    let id = job["id"].as_str().expect("id").to_owned();
    let job = stack.wait_until_finished(&id).await;
    assert_eq!(job["provider"], "openai", "{job}");

    let calls: Vec<TraceParent> = traces(&stack.ollama)
        .into_iter()
        .chain(traces(&stack.openai))
        .collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    for call in &calls {
        assert_eq!(
            call.trace_id(),
            TRACE_ID,
            "the client's trace goes on to the provider"
        );
        assert_ne!(call.to_string(), SENT, "each call is a span of its own");
    }

    let logs = logs.text();
    let about_the_job: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains(&format!("job_id={id}")))
        .collect();
    assert!(
        about_the_job
            .iter()
            .any(|l| l.contains("provider call failed")),
        "the worker logged the failed calls: {logs}"
    );
    for line in &about_the_job {
        assert!(line.contains(&format!("trace_id={TRACE_ID}")), "{line}");
    }
    let intake: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("path=/v1/generate"))
        .collect();
    assert!(!intake.is_empty(), "the api logged the request: {logs}");
    for line in intake {
        assert!(line.contains(&format!("trace_id={TRACE_ID}")), "{line}");
    }
}

#[tokio::test]
async fn a_job_without_a_trace_gets_one_and_a_batch_shares_its_requests() {
    let stack = Stack::start().await;
    let job = stack.generate("llama3", "untraced").await;
    assert_eq!(job["status"], "succeeded");
    let first = traces(&stack.ollama);
    assert_eq!(first.len(), 1);
    assert_ne!(first[0].trace_id(), TRACE_ID);

    // A malformed header starts a new trace, as if none was sent.
    let body = json!({ "model": "llama3", "prompt": "badly traced" });
    let job = submit_traced(&stack, "/v1/generate", &body, "00-nonsense").await;
    stack
        .wait_until_finished(job["id"].as_str().expect("id"))
        .await;

    let items: Vec<Value> = (0..3)
        .map(|i| json!({ "custom_id": format!("item-{i}"), "prompt": format!("item {i}") }))
        .collect();
    let body = json!({ "kind": "generate", "model": "llama3", "items": items });
    let batch = submit_traced(&stack, "/v1/batches", &body, SENT).await;
    let id = batch["id"].as_str().expect("batch id").to_owned();
    eventually("the batch's items all ran", || async {
        traces(&stack.ollama).len() == 5
    })
    .await;
    let calls = traces(&stack.ollama);
    assert_ne!(
        calls[1].trace_id(),
        TRACE_ID,
        "a malformed header is not continued"
    );
    assert_ne!(calls[1].trace_id(), calls[0].trace_id());
    for call in &calls[2..] {
        assert_eq!(call.trace_id(), TRACE_ID, "batch {id}: {calls:?}");
    }
}

/// An OTLP/HTTP receiver on port 0 keeping every JSON export it is sent.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let exports = Arc::new(Mutex::new(Vec::new()));
    let kept = exports.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |axum::Json(export): axum::Json<Value>| {
            let kept = kept.clone();
            async move {
                kept.lock().expect("exports").push(export);
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, exports)
}

/// The spans of the exports: `(name, trace id, span id, parent span id)`.
fn exported_spans(exports: &[Value]) -> Vec<(String, String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    exports
        .iter()
        .flat_map(|export| {
            export["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|resource| {
            resource["scopeSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|scope| scope["spans"].as_array().cloned().unwrap_or_default())
        .map(|span| {
            (
                text(&span["name"]),
                text(&span["traceId"]),
                text(&span["spanId"]),
                text(&span["parentSpanId"]),
            )
        })
        .collect()
}

/// Every span exported so far, once the exporter has sent what it holds.
async fn flushed(
    provider: &opentelemetry_sdk::trace::SdkTracerProvider,
    exports: &Mutex<Vec<Value>>,
) -> Vec<(String, String, String, String)> {
    let flush = provider.clone();
    tokio::task::spawn_blocking(move || flush.force_flush())
        .await
        .expect("flush")
        .expect("spans exported");
    exported_spans(&exports.lock().expect("exports"))
}

// The subscriber exporting spans is this thread's, so api, worker and test share the one thread.
#[tokio::test(flavor = "current_thread")]
async fn with_an_otlp_endpoint_the_jobs_way_is_exported_as_spans_of_its_trace() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    let (endpoint, exports) = otlp_receiver().await;
    let provider = tollgate_core::telemetry::exporter("tollgate-test", &endpoint, "http/json")
        .expect("an exporter");
    opentelemetry::global::set_tracer_provider(provider.clone());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("tollgate")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let stack = Stack::start().await;
    let body = json!({ "model": "llama3", "prompt": "exported" });
    let job = submit_traced(&stack, "/v1/generate", &body, SENT).await;
    let job = stack
        .wait_until_finished(job["id"].as_str().expect("id"))
        .await;
    assert_eq!(job["status"], "succeeded");

    // The job's span ends with its ack, a moment after its end is visible: flush until it is in.
    let expected = [
        "api request",
        "queue wait",
        "job",
        "claim",
        "provider call",
        "finish",
    ];
    eventually("every span of the job's way is exported", || async {
        let spans = flushed(&provider, &exports).await;
        expected
            .iter()
            .all(|name| spans.iter().any(|s| s.0 == *name && s.1 == TRACE_ID))
    })
    .await;
    let spans = exported_spans(&exports.lock().expect("exports"));
    let of_the_trace: Vec<_> = spans.iter().filter(|s| s.1 == TRACE_ID).collect();
    let named = |name: &str| {
        of_the_trace
            .iter()
            .find(|s| s.0 == name)
            .unwrap_or_else(|| panic!("a {name:?} span of the trace among {spans:?}"))
    };
    let request = named("api request");
    assert_eq!(
        request.3, "00f067aa0ba902b7",
        "the client's span is its parent"
    );
    named("queue wait");
    let run = named("job");
    named("claim");
    named("finish");
    let call = named("provider call");
    assert_eq!(call.3, run.2, "a call is a span of the job's run");
    let sent = traces(&stack.ollama);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].to_string(),
        format!("00-{TRACE_ID}-{}-01", call.2),
        "the provider is told the call's own span"
    );

    // A batch's item, released by the dispatcher, carries its trace in its message too: the
    // worker's span of the item continues the batch request's trace.
    let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let items = json!([{ "custom_id": "only", "prompt": "an item" }]);
    let body = json!({ "kind": "generate", "model": "llama3", "items": items });
    submit_traced(&stack, "/v1/batches", &body, other).await;
    eventually(
        "the item's run is exported in the batch's trace",
        || async {
            let spans = flushed(&provider, &exports).await;
            ["job", "provider call", "finish"].iter().all(|name| {
                spans
                    .iter()
                    .any(|s| s.0 == *name && s.1 == "0af7651916cd43dd8448eb211c80319c")
            })
        },
    )
    .await;
}
