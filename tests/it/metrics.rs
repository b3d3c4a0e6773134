//! Prometheus metrics: the api's `/metrics` and the worker's own listener, scraped and parsed by a
//! Prometheus text parser as a scraper would, never grepped.

use std::time::Duration;

use openmetrics_parser::{
    MetricsExposition, OpenMetricsType, OpenMetricsValue, Sample, openmetrics::parse_openmetrics,
};
use provider_sim::Knobs;
use secrecy::SecretString;
use serde_json::json;
use tollgate_core::domain::SettingsChange;

use crate::harness::{
    Options, Stack, WAIT, client, eventually, test_api_settings, test_worker_settings,
    with_openai_fallback,
};

type Scrape = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// A scrape of `url`'s `/metrics`, with `token` as its bearer if given, parsed as OpenMetrics
/// (strictly: a malformed exposition fails the test).
async fn scrape(base: &str, token: Option<&str>) -> Scrape {
    let mut request = client().get(format!("{base}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("scrape");
    assert_eq!(response.status(), 200, "scrape {base}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("content type")
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.expect("metrics text");
    parse_openmetrics(&text).unwrap_or_else(|e| panic!("an OpenMetrics exposition: {e:?}\n{text}"))
}

/// The samples of the family `name` whose labels include every pair of `labels`.
fn samples<'a>(
    scrape: &'a Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Vec<&'a Sample<OpenMetricsValue>> {
    let Some(family) = scrape.families.get(name) else {
        return Vec::new();
    };
    family
        .iter_samples()
        .filter(|sample| {
            let set = sample.get_labelset().expect("a sample's labels");
            labels
                .iter()
                .all(|(k, v)| set.get_label_value(k) == Some(*v))
        })
        .collect()
}

/// The sum of a counter's or gauge's matching samples.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(scrape, name, labels)
        .iter()
        .map(|sample| match &sample.value {
            OpenMetricsValue::Counter(counter) => counter.value.as_f64(),
            OpenMetricsValue::Gauge(gauge) | OpenMetricsValue::Unknown(gauge) => gauge.as_f64(),
            other => panic!("{name} is not a number: {other:?}"),
        })
        .sum()
}

/// How many observations a histogram's matching series hold.
fn observations(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> u64 {
    samples(scrape, name, labels)
        .iter()
        .map(|sample| match &sample.value {
            OpenMetricsValue::Histogram(histogram) => histogram.count.unwrap_or(0),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

/// Whether any series of the scrape is labelled by tenant.
fn tenant_labelled(scrape: &Scrape) -> Option<&str> {
    scrape
        .families
        .iter()
        .find(|(_, family)| {
            family
                .get_label_names()
                .iter()
                .any(|name| name.starts_with("tenant"))
        })
        .map(|(name, _)| name.as_str())
}

#[tokio::test]
async fn counters_and_histograms_move_as_jobs_run() {
    let stack = Stack::start().await;
    let before = scrape(stack.worker_probe(), None).await;
    assert_eq!(
        value(&before, "tollgate_jobs_finished", &[]),
        0.0,
        "nothing finished yet"
    );

    for n in 0..3 {
        let job = stack.generate("llama3", &format!("job {n}")).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }

    let api = scrape(&stack.api_url, None).await;
    let accepted = [("kind", "generate"), ("lane", "single")];
    assert_eq!(value(&api, "tollgate_jobs_accepted", &accepted), 3.0);
    let route = [("route", "/v1/generate"), ("method", "POST")];
    assert_eq!(
        value(
            &api,
            "tollgate_http_requests",
            &[route[0], route[1], ("status", "202")]
        ),
        3.0
    );
    assert_eq!(
        observations(&api, "tollgate_http_request_duration_seconds", &route),
        3
    );
    assert!(
        value(
            &api,
            "tollgate_http_requests",
            &[("route", "/v1/jobs/{id}")]
        ) >= 3.0,
        "the polls are counted by their route template, never by path: {:?}",
        samples(&api, "tollgate_http_requests", &[]).len()
    );

    let worker = scrape(stack.worker_probe(), None).await;
    let finished = [
        ("kind", "generate"),
        ("status", "succeeded"),
        ("provider", "local"),
        ("model", "llama3"),
    ];
    assert_eq!(value(&worker, "tollgate_jobs_finished", &finished), 3.0);
    let call = [("provider", "local"), ("outcome", "succeeded")];
    assert_eq!(
        observations(&worker, "tollgate_provider_call_duration_seconds", &call),
        3
    );
    let single = [("kind", "generate"), ("lane", "single")];
    assert_eq!(
        observations(&worker, "tollgate_job_queue_wait_seconds", &single),
        3
    );
    assert_eq!(
        observations(&worker, "tollgate_job_gateway_overhead_seconds", &single),
        3
    );
    let input = [("provider", "local"), ("direction", "input")];
    let output = [("provider", "local"), ("direction", "output")];
    assert!(value(&worker, "tollgate_tokens", &input) > 0.0);
    assert!(value(&worker, "tollgate_tokens", &output) > 0.0);
    assert!(value(&worker, "tollgate_cost_usd", &[("model", "llama3")]) > 0.0);
    let host = [("provider", "local"), ("host", "default")];
    assert_eq!(value(&worker, "tollgate_circuit_open", &host), 0.0);
    assert_eq!(value(&worker, "tollgate_provider_slots", &host), 64.0);
    assert_eq!(
        value(&worker, "tollgate_provider_calls_in_flight", &host),
        0.0
    );

    for (name, scrape) in [("api", &api), ("worker", &worker)] {
        let family = tenant_labelled(scrape);
        assert!(
            family.is_none(),
            "the {name} labels no series by tenant: {family:?}"
        );
    }
}

#[tokio::test]
async fn retries_fallbacks_streams_and_webhooks_are_counted_and_the_dashboard_charts_only_these() {
    let stack = Stack::with(with_openai_fallback(SettingsChange::default())).await;
    stack.ollama.set_knobs(Knobs {
        error_rate: 1.0,
        ..Knobs::default()
    });
    let job = stack.generate("llama3", "falls back").await;
    assert_eq!(job["provider"], "openai", "{job}");

    let worker = scrape(stack.worker_probe(), None).await;
    assert_eq!(
        value(
            &worker,
            "tollgate_provider_retries",
            &[("provider", "local")]
        ),
        1.0,
        "two attempts on the failing provider, one retry: {job}"
    );
    let fallback = [("from", "local"), ("to", "openai"), ("reason", "fallback")];
    assert_eq!(
        value(&worker, "tollgate_provider_fallbacks", &fallback),
        1.0
    );
    let failed = [("provider", "local"), ("outcome", "transient_error")];
    assert_eq!(
        observations(&worker, "tollgate_provider_call_duration_seconds", &failed),
        2
    );

    // A streamed job's first piece of text is timed.
    stack.ollama.set_knobs(Knobs::default());
    let streamed = client()
        .post(stack.url("/v1/generate"))
        .bearer_auth(&stack.token)
        .json(&json!({ "model": "llama3", "prompt": "streamed", "stream": true }))
        .send()
        .await
        .expect("stream a job");
    assert_eq!(streamed.status(), 200);
    let (events, _) = crate::events::read_stream(streamed, WAIT).await;
    assert!(events.iter().any(|e| e.event == "delta"), "{events:?}");
    let worker = scrape(stack.worker_probe(), None).await;
    let first_token = [("provider", "local"), ("model", "llama3")];
    assert_eq!(
        observations(
            &worker,
            "tollgate_provider_time_to_first_token_seconds",
            &first_token
        ),
        1
    );

    // A job's event stream counts as open while a client holds it.
    stack.ollama.set_knobs(Knobs {
        latency_ms: 60_000,
        ..Knobs::default()
    });
    stack
        .patch_settings(&json!({ "ai_fallback_provider": "none" }))
        .await;
    let slow = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "slow" }),
        )
        .await;
    let events = client()
        .get(stack.url(&format!(
            "/v1/jobs/{}/events",
            slow["id"].as_str().expect("id")
        )))
        .bearer_auth(&stack.token)
        .send()
        .await
        .expect("open the events");
    assert_eq!(events.status(), 200);
    let open = [("stream", "job_events")];
    eventually("the stream counts as open", || async {
        value(
            &scrape(&stack.api_url, None).await,
            "tollgate_streams_open",
            &open,
        ) == 1.0
    })
    .await;
    drop(events);
    eventually("the closed stream no longer counts", || async {
        value(
            &scrape(&stack.api_url, None).await,
            "tollgate_streams_open",
            &open,
        ) == 0.0
    })
    .await;

    // A webhook delivered.
    stack.ollama.set_knobs(Knobs::default());
    crate::webhooks::set_endpoint(&stack, serde_json::Value::Null).await;
    let receiver = crate::webhooks::Receiver::start(vec![200]).await;
    let hooked = json!({ "model": "llama3", "prompt": "hooked", "webhook_url": receiver.url });
    stack.submit("/v1/generate", &hooked).await;
    receiver.wait_for(1).await;
    let delivered = [("outcome", "delivered")];
    eventually("the delivery is counted", || async {
        let worker = scrape(stack.worker_probe(), None).await;
        value(&worker, "tollgate_webhook_deliveries", &delivered) == 1.0
    })
    .await;

    // Every metric the Grafana dashboard kept in the repository charts is one the gateway exports.
    let exported: Vec<String> = [
        scrape(&stack.api_url, None).await,
        scrape(stack.worker_probe(), None).await,
    ]
    .iter()
    .flat_map(|scrape| scrape.families.keys().cloned().collect::<Vec<_>>())
    .collect();
    let dashboard: serde_json::Value = serde_json::from_str(include_str!(
        "../../monitoring/grafana/dashboards/tollgate.json"
    ))
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{}", panels.len());
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            for name in charted(expr) {
                assert!(
                    exported.contains(&name),
                    "{expr}: {name} among {exported:?}"
                );
            }
        }
    }
}

/// The metric families a PromQL expression reads (`tollgate_x_total` and `tollgate_x_bucket` are
/// series of the family `tollgate_x`).
fn charted(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("tollgate_"))
        .map(|word| {
            ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word)
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn queue_depth_and_age_follow_a_backlog() {
    let stack = Stack::with(Options {
        worker_settings: tollgate_worker::WorkerSettings {
            concurrency: 1,
            backlog_every: Duration::from_millis(100),
            ..test_worker_settings()
        },
        ..Options::default()
    })
    .await;
    stack.ollama.set_knobs(Knobs {
        latency_ms: 150,
        ..Knobs::default()
    });
    let ids = stack.submit_many(8, "backlog").await;
    let interactive = [("queue", "jobs.interactive")];
    eventually("the backlog shows in the queue depth and age", || async {
        let worker = scrape(stack.worker_probe(), None).await;
        value(&worker, "tollgate_queue_messages", &interactive) >= 4.0
            && value(&worker, "tollgate_queue_oldest_age_seconds", &interactive) > 0.0
    })
    .await;
    for id in &ids {
        stack.wait_until_finished(id).await;
    }
    eventually("the drained queue reads empty", || async {
        let worker = scrape(stack.worker_probe(), None).await;
        value(&worker, "tollgate_queue_messages", &interactive) == 0.0
            && value(&worker, "tollgate_queue_oldest_age_seconds", &interactive) == 0.0
    })
    .await;
    let worker = scrape(stack.worker_probe(), None).await;
    assert!(
        !samples(
            &worker,
            "tollgate_queue_messages",
            &[("queue", "jobs.dead")]
        )
        .is_empty(),
        "every queue is sampled, the dead letters too"
    );
    assert_eq!(value(&worker, "tollgate_batch_items_pending", &[]), 0.0);
}

#[tokio::test]
async fn the_metrics_token_guards_both_listeners_and_the_worker_answers_its_probes() {
    let token = "metrics-s3cret";
    let stack = Stack::with(Options {
        api_settings: tollgate_api::ApiSettings {
            metrics_token: Some(SecretString::from(token)),
            ..test_api_settings()
        },
        worker_settings: tollgate_worker::WorkerSettings {
            metrics_token: Some(SecretString::from(token)),
            ..test_worker_settings()
        },
        ..Options::default()
    })
    .await;
    for base in [stack.api_url.as_str(), stack.worker_probe()] {
        for bearer in [None, Some("wrong"), Some(stack.admin_token.as_str())] {
            let mut request = client().get(format!("{base}/metrics"));
            if let Some(bearer) = bearer {
                request = request.bearer_auth(bearer);
            }
            let response = request.send().await.expect("scrape");
            assert_eq!(response.status(), 401, "{base} with {bearer:?}");
        }
    }
    let api = scrape(&stack.api_url, Some(token)).await;
    let refused = [("route", "/metrics"), ("status", "401")];
    assert_eq!(value(&api, "tollgate_http_requests", &refused), 3.0);
    let worker = scrape(stack.worker_probe(), Some(token)).await;
    let host = [("provider", "local"), ("host", "default")];
    assert_eq!(value(&worker, "tollgate_provider_slots", &host), 64.0);
    // Ready once the sampler has seen Postgres answer (at start, then every `backlog_every`).
    for path in ["/healthz", "/readyz"] {
        let url = format!("{}{path}", stack.worker_probe());
        eventually(&format!("{path} answers 200"), || async {
            client()
                .get(&url)
                .send()
                .await
                .is_ok_and(|response| response.status() == 200)
        })
        .await;
    }
    let ready: serde_json::Value = client()
        .get(format!("{}/readyz", stack.worker_probe()))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("readyz JSON");
    assert_eq!(ready["checks"]["postgres"], "ok", "{ready}");
    assert_eq!(ready["checks"]["rabbitmq"], "ok", "{ready}");
}
