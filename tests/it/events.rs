//! Server-sent events and submit-and-wait: a late subscriber gets the final state, events cross
//! api instances through RabbitMQ, `Last-Event-ID` resumes, heartbeats keep an idle stream alive,
//! and `Prefer: wait` answers 200 with the result or 202 when the provider is slower.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use provider_sim::Knobs;
use serde_json::{Value, json};

use crate::harness::{Options, Stack, WAIT, client, test_api_settings};

/// One SSE event.
#[derive(Debug)]
pub struct SseEvent {
    pub event: String,
    pub id: String,
    pub data: Value,
}

/// Reads a stream to its end (panicking after `within`): its events, and how many heartbeat
/// comments it carried.
pub async fn read_stream(response: reqwest::Response, within: Duration) -> (Vec<SseEvent>, usize) {
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("ascii"),
        "text/event-stream"
    );
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        }
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or_else(|_| panic!("the stream did not end within {within:?}"));
    parse_events(&text)
}

/// The events of an SSE body, and how many comment lines it carried. An event without a name is
/// a `message` (OpenAI's chunks), and OpenAI's closing `data: [DONE]` is left out.
pub fn parse_events(text: &str) -> (Vec<SseEvent>, usize) {
    let mut events = Vec::new();
    let mut comments = 0;
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
        for line in block.lines() {
            if line.starts_with(':') {
                comments += 1;
            } else if let Some(value) = line.strip_prefix("event: ") {
                event = value.to_owned();
            } else if let Some(value) = line.strip_prefix("id: ") {
                id = value.to_owned();
            } else if let Some(value) = line.strip_prefix("data: ") {
                data.push_str(value);
            }
        }
        if !data.is_empty() && data != "[DONE]" {
            if event.is_empty() {
                event = "message".to_owned();
            }
            let data = serde_json::from_str(&data).expect("event data is JSON");
            events.push(SseEvent { event, id, data });
        }
    }
    (events, comments)
}

async fn open_stream(
    base: &str,
    token: &str,
    id: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let request = client()
        .get(format!("{base}/v1/jobs/{id}/events"))
        .bearer_auth(token);
    let request = match last_event_id {
        Some(last) => request.header("last-event-id", last),
        None => request,
    };
    request.send().await.expect("GET events")
}

#[tokio::test]
async fn a_late_subscriber_gets_the_final_state_and_the_stream_ends() {
    let stack = Stack::start().await;
    let job = stack.generate("llama3", "hi").await;
    let id = job["id"].as_str().expect("id");

    let response = open_stream(&stack.api_url, &stack.token, id, None).await;
    let (events, _) = read_stream(response, Duration::from_secs(5)).await;

    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event, "job");
    assert_eq!(events[0].data["status"], "succeeded");
    assert_eq!(events[0].data["result"], job["result"]);
    let revision: i32 = events[0].id.parse().expect("numeric event id");
    assert!(revision >= 3, "queued, running, succeeded: {revision}");

    let other = stack
        .create_token("globex", tollgate_core::domain::Role::Client)
        .await;
    let hidden = open_stream(&stack.api_url, &other, id, None).await;
    assert_eq!(hidden.status(), 404, "another tenant's job has no stream");
    stack.stop().await;
}

#[tokio::test]
async fn events_reach_a_stream_held_by_another_api_instance() {
    let stack = Stack::start().await;
    let second_api = stack.start_api(test_api_settings()).await;
    stack.ollama.set_knobs(Knobs {
        latency_ms: 1_500,
        ..Knobs::default()
    });
    let job = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "slow" }),
        )
        .await;
    let id = job["id"].as_str().expect("id");

    let response = open_stream(&second_api, &stack.token, id, None).await;
    let started = Instant::now();
    // Well before the stream's 15 s re-read: only an event through RabbitMQ ends it in time.
    let (events, _) = read_stream(response, Duration::from_secs(8)).await;

    let statuses: Vec<_> = events.iter().map(|e| e.data["status"].clone()).collect();
    assert!(statuses.len() >= 2, "{statuses:?}");
    assert_ne!(
        statuses[0], "succeeded",
        "the stream started before the end"
    );
    assert_eq!(statuses.last().expect("last"), "succeeded");
    let ids: Vec<i32> = events.iter().map(|e| e.id.parse().expect("id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    assert!(started.elapsed() < Duration::from_secs(8));
    stack.stop().await;
}

#[tokio::test]
async fn last_event_id_resumes_after_what_the_client_saw() {
    let stack = Stack::start().await;
    let job = stack.generate("llama3", "hi").await;
    let id = job["id"].as_str().expect("id");
    let (events, _) = read_stream(
        open_stream(&stack.api_url, &stack.token, id, None).await,
        Duration::from_secs(5),
    )
    .await;
    let last = events[0].id.clone();
    let earlier = (last.parse::<i32>().expect("id") - 1).to_string();

    let (resumed, _) = read_stream(
        open_stream(&stack.api_url, &stack.token, id, Some(&earlier)).await,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].id, last);

    let (nothing_new, _) = read_stream(
        open_stream(&stack.api_url, &stack.token, id, Some(&last)).await,
        Duration::from_secs(5),
    )
    .await;
    assert!(nothing_new.is_empty(), "{nothing_new:?}");
    stack.stop().await;
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_alive() {
    let stack = Stack::with(Options {
        api_settings: tollgate_api::ApiSettings {
            sse_heartbeat: Duration::from_millis(100),
            ..test_api_settings()
        },
        ..Options::default()
    })
    .await;
    stack.ollama.set_knobs(Knobs {
        latency_ms: 1_000,
        ..Knobs::default()
    });
    let job = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "slow" }),
        )
        .await;
    let id = job["id"].as_str().expect("id");

    let (events, comments) = read_stream(
        open_stream(&stack.api_url, &stack.token, id, None).await,
        WAIT,
    )
    .await;
    assert!(comments >= 3, "heartbeat comments: {comments}");
    assert_eq!(events.last().expect("an event").data["status"], "succeeded");
    stack.stop().await;
}

#[tokio::test]
async fn open_streams_end_when_the_api_shuts_down() {
    let stack = Stack::start().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let api = stack
        .start_api_until(test_api_settings(), stop.clone())
        .await;
    stack.ollama.set_knobs(Knobs {
        latency_ms: 60_000,
        ..Knobs::default()
    });
    let job = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "endless" }),
        )
        .await;
    let response = open_stream(&api, &stack.token, job["id"].as_str().expect("id"), None).await;
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(WAIT, body.next())
        .await
        .expect("a first event");
    assert!(first.is_some());

    stop.cancel();
    let rest = async { while body.next().await.is_some() {} };
    tokio::time::timeout(Duration::from_secs(5), rest)
        .await
        .expect("the stream ended with the shutdown, though the job goes on");
    stack.stop().await;
}

async fn submit_and_wait(stack: &Stack, wait: &str) -> (reqwest::Response, Duration) {
    let started = Instant::now();
    let response = client()
        .post(stack.url("/v1/generate"))
        .bearer_auth(&stack.token)
        .header("prefer", wait)
        .json(&json!({ "model": "llama3", "prompt": "hi" }))
        .send()
        .await
        .expect("POST");
    (response, started.elapsed())
}

#[tokio::test]
async fn prefer_wait_answers_200_with_the_finished_job() {
    let stack = Stack::start().await;
    let (response, _) = submit_and_wait(&stack, "wait=10").await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["preference-applied"], "wait=10");
    assert!(response.headers().contains_key("location"));
    let job: Value = response.json().await.expect("job");
    assert_eq!(job["status"], "succeeded");
    assert!(job["result"]["text"].is_string());
    assert!(job["usage"]["total_tokens"].as_i64().is_some());
    stack.stop().await;
}

#[tokio::test]
async fn prefer_wait_answers_202_when_the_provider_is_slower() {
    let stack = Stack::start().await;
    stack.ollama.set_knobs(Knobs {
        latency_ms: 3_000,
        ..Knobs::default()
    });
    let (response, elapsed) = submit_and_wait(&stack, "respond-async, wait=1").await;

    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["preference-applied"], "wait=1");
    assert!(elapsed >= Duration::from_millis(950), "waited {elapsed:?}");
    let job: Value = response.json().await.expect("job");
    assert_eq!(job["status"], "queued");
    let finished = stack
        .wait_until_finished(job["id"].as_str().expect("id"))
        .await;
    assert_eq!(finished["status"], "succeeded");
    stack.stop().await;
}
