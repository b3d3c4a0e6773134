//! provider-sim speaks the wire formats Tollgate's clients (and later tests) rely on.

use provider_sim::{Knobs, Sim};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::harness::client;

async fn start(sim: Sim) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    tokio::spawn(provider_sim::serve(listener, sim, stop.clone()));
    (url, stop)
}

/// POSTs `body` as JSON to `url` (no token: the sim's Ollama side takes none).
async fn post(url: String, body: &Value) -> reqwest::Response {
    client().post(url).json(body).send().await.expect("send")
}

/// Reads an NDJSON body, one JSON value a line.
async fn ndjson(response: reqwest::Response) -> Vec<Value> {
    let body = response.text().await.expect("body");
    body.lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

#[tokio::test]
async fn ollama_generate_streams_ndjson_unless_told_not_to() {
    let (url, stop) = start(Sim::new(Knobs::default(), None)).await;
    let body = json!({ "model": "llama3", "prompt": "hello" });

    let streamed = post(format!("{url}/api/generate"), &body).await;
    assert_eq!(streamed.headers()["content-type"], "application/x-ndjson");
    let lines = ndjson(streamed).await;
    let single: Value = post(
        format!("{url}/api/generate"),
        &json!({ "model": "llama3", "prompt": "hello", "stream": false }),
    )
    .await
    .json()
    .await
    .expect("JSON");

    let last = lines.last().expect("a final line");
    assert_eq!(last["done"], true);
    assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false));
    let joined: String = lines
        .iter()
        .map(|l| l["response"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(joined, single["response"].as_str().expect("response"));
    assert_eq!(last["eval_count"], single["eval_count"]);
    assert!(single["prompt_eval_count"].as_i64() > Some(0));
    stop.cancel();
}

#[tokio::test]
async fn the_openai_side_checks_the_key_and_knows_its_models() {
    let (url, stop) = start(Sim::new(Knobs::default(), Some("sk-right".into()))).await;
    let body = json!({ "model": "gpt-4.1-mini", "input": "hello" });
    let respond = |key: &'static str, body: Value| {
        client()
            .post(format!("{url}/v1/responses"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };

    let wrong = respond("sk-wrong", body.clone()).await.expect("send");
    let unknown = respond("sk-right", json!({ "model": "gpt-0", "input": "hello" }))
        .await
        .expect("send");
    let right = respond("sk-right", body).await.expect("send");

    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<Value>().await.expect("JSON")["error"]["code"],
        "invalid_api_key"
    );
    assert_eq!(unknown.status(), 404);
    assert_eq!(right.status(), 200);
    let answer: Value = right.json().await.expect("JSON");
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["output"][0]["content"][0]["type"], "output_text");
    assert!(answer["usage"]["output_tokens"].as_i64() > Some(0));
    stop.cancel();
}

#[tokio::test]
async fn the_knobs_give_429_with_retry_after_and_500() {
    let sim = Sim::new(
        Knobs {
            rate_limit_rate: 1.0,
            retry_after_secs: 7,
            ..Knobs::default()
        },
        None,
    );
    let (url, stop) = start(sim.clone()).await;
    let body = json!({ "model": "llama3", "prompt": "hi", "stream": false });

    let limited = post(format!("{url}/api/generate"), &body).await;
    sim.set_knobs(Knobs {
        error_rate: 1.0,
        ..Knobs::default()
    });
    let broken = post(format!("{url}/api/generate"), &body).await;

    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "7");
    assert_eq!(broken.status(), 500);
    assert_eq!(sim.calls("/api/generate"), 2);
    stop.cancel();
}

#[tokio::test]
async fn models_can_be_pulled_with_progress_and_deleted() {
    let (url, stop) = start(Sim::new(Knobs::default(), None)).await;

    let pull = post(format!("{url}/api/pull"), &json!({ "model": "qwen2" })).await;
    let progress = ndjson(pull).await;
    let tags: Value = client()
        .get(format!("{url}/api/tags"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
    let delete = |model: &'static str| {
        client()
            .delete(format!("{url}/api/delete"))
            .json(&json!({ "model": model }))
            .send()
    };
    let deleted = delete("qwen2").await.expect("send");
    let missing = delete("qwen2").await.expect("send");

    assert_eq!(
        progress.first().expect("first")["status"],
        "pulling manifest"
    );
    assert_eq!(progress.last().expect("last")["status"], "success");
    assert!(
        progress
            .iter()
            .any(|p| p["completed"].is_u64() && p["total"].is_u64())
    );
    assert!(
        tags["models"]
            .as_array()
            .expect("models")
            .iter()
            .any(|m| m["name"] == "qwen2:latest")
    );
    assert_eq!(deleted.status(), 200);
    assert_eq!(missing.status(), 404);
    stop.cancel();
}
