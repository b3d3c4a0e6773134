//! The drop-in OpenAI and Ollama surfaces and streaming through the queue: the official `openai`
//! and `ollama` Python packages call models as they would call OpenAI and Ollama
//! (`tests/openai/calls.py`, `tests/ollama/calls.py`), and the calls are jobs like any other; a stream that breaks after its first text ends with an error event and a
//! failed, billed job; a client that goes away cancels its job and stops the provider's stream.

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};
use shared::domain::JobId;

use crate::harness::{Stack, eventually};
use crate::openai_batches::run_sdk_script;

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_package_calls_models_through_the_queue() {
    let stack = Stack::start().await;
    let summary = run_sdk_script(&stack, "openai/calls.py", Duration::from_secs(120)).await;
    assert_eq!(
        summary["refusals"],
        json!({ "bad_key": 401, "unknown_model": "model_not_found", "tools": "tools" })
    );
    // Each call is a job, billed, at its x-request-id.
    for id in summary["jobs"].as_array().expect("job ids") {
        let job = stack
            .get(&format!("/v1/jobs/{}", id.as_str().expect("an id")))
            .await
            .json::<Value>()
            .await
            .expect("a job");
        assert_eq!(job["status"], "succeeded", "{job}");
        assert!(
            job["usage"]["completion_tokens"].as_i64() > Some(0),
            "{job}"
        );
        assert_eq!(job["provider"], "ollama", "{job}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ollama_python_package_calls_models_through_the_queue() {
    let stack = Stack::start().await;
    // Models only OpenAI serves are reached through the fallback.
    stack
        .patch_settings(&json!({ "ai_fallback_provider": "openai" }))
        .await;
    let summary = run_sdk_script(&stack, "ollama/calls.py", Duration::from_secs(120)).await;
    assert_eq!(
        summary["refusals"],
        json!({ "bad_key": 401, "unknown_model": 404, "schema": 400 })
    );
    assert!(
        summary["running"]
            .as_array()
            .is_some_and(|models| !models.is_empty()),
        "{summary}"
    );
    // The OpenAI-only model went to the OpenAI sim; the rest ran on Ollama, all as billed jobs.
    assert_eq!(stack.openai.calls("/v1/responses"), 1);
    let unbilled: i64 = sqlx::query_scalar(
        "select count(*) from jobs where status <> 'succeeded' or prompt_tokens is null",
    )
    .fetch_one(&stack.pool)
    .await
    .expect("count");
    assert_eq!(unbilled, 0);
    stack.stop().await;
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
    stack.ollama.set_knobs(provider_sim::Knobs {
        fail_after_tokens: Some(3),
        ..Default::default()
    });
    let (response, id) = open_stream(&stack, "break me").await;
    let body = tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .expect("the stream ends")
        .expect("a body");
    let events: Vec<Value> = body
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).expect("JSON data"))
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
    stack.ollama.set_knobs(provider_sim::Knobs {
        token_delay_ms: 100,
        reply_words: Some(200),
        ..Default::default()
    });
    let (response, id) = open_stream(&stack, "a long answer").await;
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\"content\":\"") || seen.matches("data: ").count() < 4 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("text arrives")
            .expect("more body")
            .expect("a chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(body);
    let ollama = &stack.ollama;
    eventually("the provider's stream is abandoned", || async {
        ollama.aborted_calls() == 1
    })
    .await;
    let pool = &stack.pool;
    eventually("the job is cancelled with its text billed", || async move {
        {
            let row: (String, Option<i32>) =
                sqlx::query_as("select status, completion_tokens from jobs where id = $1")
                    .bind(id)
                    .fetch_one(pool)
                    .await
                    .expect("the job");
            row.0 == "cancelled" && row.1 > Some(0)
        }
    })
    .await;
    stack.stop().await;
}
