//! Streaming through the queue: text reaches the client as the provider writes it, on the
//! instance holding the connection and on any instance following the job's events; retries and
//! fallback only before the first piece; a stream that breaks after it ends with an error event;
//! a client that goes away (or a cancel) stops the provider's stream and bills what was written;
//! a worker that dies mid-stream never has its text shown twice.

use std::time::Duration;

use futures::StreamExt as _;
use provider_sim::Knobs;
use serde_json::{Value, json};
use tollgate_core::domain::JobId;

use crate::harness::{Stack, eventually, idle, test_api_settings, test_worker_settings};

/// Each SSE event in `body` with its name (`message` when unnamed; `[DONE]` left out).
pub(crate) fn sse_events(body: &str) -> Vec<(String, Value)> {
    let (events, _) = crate::events::parse_events(body);
    events.into_iter().map(|e| (e.event, e.data)).collect()
}

/// Reads `response`'s body until it ends, within 30 s.
pub(crate) async fn body_of(response: reqwest::Response) -> String {
    tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .expect("the stream ends")
        .expect("a body")
}

/// Reads `body` until `pieces` pieces of text have come (of any dialect: each names `content`).
pub(crate) async fn read_pieces(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    pieces: usize,
) -> String {
    let mut seen = String::new();
    while seen.matches("content").count() + seen.matches("event: delta").count() < pieces {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("text arrives")
            .expect("more body")
            .expect("a chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

/// Opens a streamed chat completion; the response (its stream unread) and its job id.
async fn open_stream(stack: &Stack, content: &str) -> (reqwest::Response, JobId) {
    let body = json!({ "model": "llama3", "stream": true,
                       "messages": [{ "role": "user", "content": content }] });
    let response = stack.post("/openai/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("an id")
        .parse()
        .expect("a job id");
    (response, id)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_breaks_after_its_first_text_ends_with_an_error_event() {
    let stack = Stack::start().await;
    stack.ollama.set_knobs(Knobs {
        fail_after_tokens: Some(3),
        ..Default::default()
    });
    let (response, id) = open_stream(&stack, "break me").await;
    let body = body_of(response).await;
    let events: Vec<Value> = sse_events(&body)
        .into_iter()
        .map(|(_, data)| data)
        .collect();
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.is_empty(), "text reached the client first: {body}");
    let last = events.last().expect("events");
    assert_eq!(last["error"]["type"], "server_error", "{body}");
    assert!(
        !body.contains("[DONE]"),
        "no clean end after an error: {body}"
    );
    // Not retried, not sent to the fallback: one call, a failed job billed for its text.
    assert_eq!(stack.ollama.calls("/api/chat"), 1);
    let (status, completion): (String, Option<i32>) =
        sqlx::query_as("select status, completion_tokens from jobs where id = $1")
            .bind(id)
            .fetch_one(&stack.pool)
            .await
            .expect("the job");
    assert_eq!(status, "failed");
    assert!(completion > Some(0), "the partial text is billed");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_cancels_its_job_and_the_upstream_stream() {
    let stack = Stack::start().await;
    stack.ollama.set_knobs(Knobs {
        token_delay_ms: 100,
        reply_words: Some(200),
        ..Default::default()
    });
    let (response, id) = open_stream(&stack, "a long answer").await;
    let mut body = response.bytes_stream();
    read_pieces(&mut body, 4).await;
    drop(body);
    let ollama = &stack.ollama;
    eventually("the provider's stream is abandoned", || async {
        ollama.aborted_calls() == 1
    })
    .await;
    cancelled_with_its_text_billed(stack.pool.clone(), id.0).await;
    stack.stop().await;
}

/// Waits for job `id` to be cancelled with the text it streamed billed.
pub(crate) async fn cancelled_with_its_text_billed(pool: sqlx::PgPool, id: uuid::Uuid) {
    let pool = &pool;
    eventually("the job is cancelled with its text billed", || async move {
        let row: (String, Option<i32>) =
            sqlx::query_as("select status, completion_tokens from jobs where id = $1")
                .bind(id)
                .fetch_one(pool)
                .await
                .expect("the job");
        row.0 == "cancelled" && row.1 > Some(0)
    })
    .await;
}

/// Submits a native streaming generate on `api`; the response, its stream unread.
async fn native_stream(stack: &Stack, api: &str, prompt: &str) -> reqwest::Response {
    let response = crate::harness::client()
        .post(format!("{api}/v1/generate"))
        .bearer_auth(&stack.token)
        .json(&json!({ "model": "llama3", "prompt": prompt, "stream": true }))
        .send()
        .await
        .expect("POST a streamed generate");
    assert_eq!(response.status(), 200);
    response
}

#[tokio::test(flavor = "multi_thread")]
async fn a_native_stream_and_a_second_instance_following_the_job_both_get_the_text() {
    let stack = Stack::start().await;
    let second_api = stack.start_api(test_api_settings()).await;
    // Its broker session up (and with it the queue its followers bind to), as a load balancer
    // would wait for before sending it a client: a follow made before that gets no pieces.
    let ready = format!("{second_api}/readyz");
    eventually("the second instance is ready", || async {
        crate::harness::client()
            .get(&ready)
            .send()
            .await
            .is_ok_and(|response| response.status() == 200)
    })
    .await;
    // A second before the first word, and the words 20 ms apart: room for the second instance to
    // start following however busy the machine.
    // Pieces far enough apart (3 s in all) that even a loaded machine relays more than one, and
    // the second instance's binding (made while the job waits out its latency) is in place well
    // before the text ends: under the full suite on two cores a binding has taken over a second.
    stack.ollama.set_knobs(Knobs {
        latency_ms: 1_500,
        token_delay_ms: 100,
        reply_words: Some(30),
        ..Knobs::default()
    });
    let mut native = native_stream(&stack, &stack.api_url, "stream natively")
        .await
        .bytes_stream();
    let opening = read_pieces(&mut native, 0).await;
    let accepted = loop {
        let chunk = native.next().await.expect("more").expect("a chunk");
        let text = format!("{opening}{}", String::from_utf8_lossy(&chunk));
        if let Some((_, job)) = sse_events(&text)
            .into_iter()
            .find(|(name, _)| name == "job")
        {
            break (job, text);
        }
    };
    let id = accepted.0["id"].as_str().expect("an id").to_owned();
    // The other instance follows the job's events while it is queued: it gets every piece.
    let events = crate::harness::client()
        .get(format!("{second_api}/v1/jobs/{id}/events"))
        .bearer_auth(&stack.token)
        .send()
        .await
        .expect("GET events");
    let mut native_rest = String::new();
    while let Some(chunk) = native.next().await {
        native_rest.push_str(&String::from_utf8_lossy(&chunk.expect("a chunk")));
    }
    let native_events = sse_events(&format!("{}{native_rest}", accepted.1));
    let followed = sse_events(&body_of(events).await);
    for events in [&native_events, &followed] {
        let text: String = events
            .iter()
            .filter(|(name, _)| name == "delta")
            .map(|(_, data)| data["text"].as_str().expect("text"))
            .collect();
        let (_, last) = events.last().expect("events");
        assert_eq!(last["status"], "succeeded", "{events:?}");
        assert_eq!(text, last["result"]["text"].as_str().expect("the text"));
        assert!(
            events.iter().filter(|(name, _)| name == "delta").count() > 1,
            "{events:?}"
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_failing_before_the_first_piece_falls_back_unseen() {
    let stack = Stack::start().await;
    stack
        .patch_settings(&json!({ "ai_fallback_provider": "openai" }))
        .await;
    stack.ollama.set_knobs(Knobs {
        error_rate: 1.0,
        ..Knobs::default()
    });
    let (response, id) = open_stream(&stack, "fall back").await;
    let body = body_of(response).await;
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert!(!body.contains("\"error\""), "{body}");
    let job = stack
        .get(&format!("/v1/jobs/{id}"))
        .await
        .json::<Value>()
        .await
        .expect("job");
    assert_eq!(job["provider"], "openai", "{job}");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(stack.ollama.calls("/api/chat") >= 1);
    assert_eq!(stack.openai.calls("/v1/chat/completions"), 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_running_job_stops_its_provider_call_and_bills_what_was_written() {
    let stack = Stack::start().await;
    stack.ollama.set_knobs(Knobs {
        token_delay_ms: 50,
        reply_words: Some(60),
        ..Knobs::default()
    });
    let (response, id) = open_stream(&stack, "cancel me").await;
    let mut body = response.bytes_stream();
    read_pieces(&mut body, 3).await;
    let cancelled = crate::harness::client()
        .post(stack.url(&format!("/v1/jobs/{id}/cancel")))
        .bearer_auth(&stack.token)
        .send()
        .await
        .expect("POST cancel");
    assert_eq!(cancelled.status(), 200);
    let job: Value = cancelled.json().await.expect("the job");
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(
        job["usage"]["completion_tokens"].as_i64() > Some(0),
        "{job}"
    );
    let mut rest = String::new();
    while let Some(chunk) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.expect("a chunk")));
    }
    let (_, last) = sse_events(&rest).pop().expect("a last event");
    assert_eq!(last["error"]["code"], "cancelled", "{rest}");
    let ollama = &stack.ollama;
    eventually("the provider's stream is abandoned", || async {
        ollama.aborted_calls() == 1
    })
    .await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_dying_mid_stream_ends_it_with_an_error_never_the_text_twice() {
    let stack = Stack::with(idle()).await;
    let settings = test_worker_settings();
    let first = stack
        .start_worker(worker_crashing_fast(settings.clone()))
        .await;
    stack.ollama.set_knobs(Knobs {
        token_delay_ms: 50,
        reply_words: Some(60),
        ..Knobs::default()
    });
    let (response, id) = open_stream(&stack, "die midway").await;
    let mut body = response.bytes_stream();
    let before = read_pieces(&mut body, 3).await;
    first.crash().await;
    let second = stack.start_worker(settings).await;
    let mut rest = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), body.next())
        .await
        .expect("the stream ends")
    {
        rest.push_str(&String::from_utf8_lossy(&chunk.expect("a chunk")));
    }
    let events = sse_events(&format!("{before}{rest}"));
    let (_, last) = events.last().expect("events");
    assert_eq!(last["error"]["code"], "stream_interrupted", "{events:?}");
    let (status, code): (String, Option<String>) =
        sqlx::query_as("select status, error_code from jobs where id = $1")
            .bind(id)
            .fetch_one(&stack.pool)
            .await
            .expect("the job");
    assert_eq!(
        (status.as_str(), code.as_deref()),
        ("failed", Some("stream_interrupted"))
    );
    assert_eq!(
        stack.ollama.calls("/api/chat"),
        1,
        "never run a second time"
    );
    second.crash().await;
    stack.stop().await;
}

/// A worker whose shutdown abandons its running jobs at once.
fn worker_crashing_fast(
    settings: tollgate_worker::WorkerSettings,
) -> tollgate_worker::WorkerSettings {
    tollgate_worker::WorkerSettings {
        shutdown_grace: Duration::ZERO,
        ..settings
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_shutting_down_lets_its_open_streams_finish() {
    let stack = Stack::start().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let api = stack
        .start_api_until(test_api_settings(), stop.clone())
        .await;
    stack.ollama.set_knobs(Knobs {
        token_delay_ms: 30,
        reply_words: Some(40),
        ..Knobs::default()
    });
    let response = crate::harness::client()
        .post(format!("{api}/openai/v1/chat/completions"))
        .bearer_auth(&stack.token)
        .json(&json!({ "model": "llama3", "stream": true,
                       "messages": [{ "role": "user", "content": "finish me" }] }))
        .send()
        .await
        .expect("POST a streamed chat");
    let id: JobId = response.headers()["x-request-id"]
        .to_str()
        .expect("an id")
        .parse()
        .expect("a job id");
    let mut body = response.bytes_stream();
    let mut seen = read_pieces(&mut body, 2).await;
    stop.cancel();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), body.next())
        .await
        .expect("the stream ends")
    {
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("a chunk")));
    }
    assert!(seen.ends_with("data: [DONE]\n\n"), "{seen}");
    let text: String = sse_events(&seen)
        .iter()
        .filter_map(|(_, data)| data["choices"][0]["delta"]["content"].as_str())
        .collect();
    let job = stack
        .get(&format!("/v1/jobs/{id}"))
        .await
        .json::<Value>()
        .await
        .expect("the job");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        text,
        job["result"]["message"]["content"].as_str().expect("text")
    );
    stack.stop().await;
}
