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

/// POSTs `body` to the sim's Messages API at `path` with `key` as `x-api-key`.
async fn anthropic(url: &str, path: &str, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{url}{path}"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("send")
}

/// Reads an SSE body into its events' data, in order.
async fn sse_events(response: reqwest::Response) -> Vec<Value> {
    let body = response.text().await.expect("body");
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| serde_json::from_str(data).expect("each event's data is JSON"))
        .collect()
}

#[tokio::test]
async fn the_messages_api_answers_text_tool_use_and_thinking_whole_or_streamed() {
    let (url, stop) = start(Sim::new(Knobs::default(), Some("sk-ant-sim".into()))).await;
    let plain = json!({ "model": "claude-sonnet-4-6", "max_tokens": 256,
                        "system": [{ "type": "text", "text": "Be brief." }],
                        "messages": [{ "role": "user", "content": "Name a colour." }] });
    let refused = anthropic(&url, "/v1/messages", "sk-wrong", &plain).await;
    assert_eq!(refused.status(), 401);
    let problem: Value = refused.json().await.expect("JSON");
    assert_eq!(problem["type"], "error");
    assert_eq!(problem["error"]["type"], "authentication_error");
    let unknown = json!({ "model": "claude-2", "max_tokens": 16, "messages": plain["messages"] });
    let missing = anthropic(&url, "/v1/messages", "sk-ant-sim", &unknown).await;
    assert_eq!(missing.status(), 404);

    let whole: Value = anthropic(&url, "/v1/messages", "sk-ant-sim", &plain)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(whole["type"], "message");
    assert_eq!(whole["stop_reason"], "end_turn");
    assert_eq!(whole["content"][0]["type"], "text");
    assert!(whole["usage"]["input_tokens"].as_i64() > Some(0));
    let mut streaming = plain.clone();
    streaming["stream"] = json!(true);
    let events = sse_events(anthropic(&url, "/v1/messages", "sk-ant-sim", &streaming).await).await;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"message_start"));
    assert_eq!(kinds.last(), Some(&"message_stop"));
    assert!(kinds.contains(&"ping") && kinds.contains(&"content_block_stop"));
    let text: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, whole["content"][0]["text"].as_str().expect("text"));

    // Tools: a tool_use block whose streamed input_json_delta fragments make its input.
    let tools = json!([{ "name": "get_weather", "input_schema": { "type": "object",
        "properties": { "location": { "type": "string" } }, "required": ["location"] } }]);
    let calling = json!({ "model": "claude-sonnet-4-6", "max_tokens": 4096, "tools": tools,
                          "thinking": { "type": "enabled", "budget_tokens": 2048 },
                          "messages": [{ "role": "user", "content": "Weather in Paris?" }] });
    let whole: Value = anthropic(&url, "/v1/messages", "sk-ant-sim", &calling)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(whole["stop_reason"], "tool_use");
    assert_eq!(whole["content"][0]["type"], "thinking");
    assert!(
        whole["content"][0]["signature"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    let call = &whole["content"][1];
    assert_eq!(call["type"], "tool_use");
    assert!(
        call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("toolu_"))
    );
    assert!(call["input"]["location"].is_string());
    let mut streaming = calling.clone();
    streaming["stream"] = json!(true);
    let events = sse_events(anthropic(&url, "/v1/messages", "sk-ant-sim", &streaming).await).await;
    let partial: String = events
        .iter()
        .filter_map(|e| e["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).expect("JSON"),
        call["input"]
    );
    assert!(
        events
            .iter()
            .any(|e| e["delta"]["type"] == "signature_delta")
    );
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .expect("message_delta");
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");

    // The tool's result answered; a thinking budget out of bounds refused.
    let answered = json!({ "model": "claude-sonnet-4-6", "max_tokens": 256, "tools": tools,
        "messages": [
            { "role": "user", "content": "Weather in Paris?" },
            { "role": "assistant", "content": [call] },
            { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": call["id"],
                                            "content": "18°C, clear" }] }] });
    let whole: Value = anthropic(&url, "/v1/messages", "sk-ant-sim", &answered)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(whole["stop_reason"], "end_turn");
    assert!(
        whole["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("18°C"))
    );
    let mut too_big = calling.clone();
    too_big["thinking"]["budget_tokens"] = json!(8192);
    let refused = anthropic(&url, "/v1/messages", "sk-ant-sim", &too_big).await;
    assert_eq!(refused.status(), 400);
    let problem: Value = refused.json().await.expect("JSON");
    assert_eq!(problem["error"]["type"], "invalid_request_error");
    stop.cancel();
}

#[tokio::test]
async fn the_messages_api_sees_images_caches_marked_prompts_and_counts_tokens() {
    let sim = Sim::new(Knobs::default(), Some("sk-ant-sim".into()));
    let (url, stop) = start(sim.clone()).await;
    let image = crate::images::PIXEL;
    let body = json!({ "model": "claude-haiku-4-5", "max_tokens": 256,
        "system": [{ "type": "text", "text": "You describe images.",
                     "cache_control": { "type": "ephemeral" } }],
        "context_management": { "edits": [] },
        "messages": [{ "role": "user", "content": [
            { "type": "text", "text": "What is this?" },
            { "type": "image", "source": { "type": "base64", "media_type": "image/png",
                                           "data": image } }] }] });
    let first: Value = anthropic(&url, "/v1/messages", "sk-ant-sim", &body)
        .await
        .json()
        .await
        .expect("JSON");
    let said = first["content"][0]["text"].as_str().unwrap_or_default();
    assert!(
        said.contains(&crate::images::seen(&crate::images::pixel())),
        "{first}"
    );
    assert!(first["usage"]["cache_creation_input_tokens"].as_i64() > Some(0));
    let again: Value = anthropic(&url, "/v1/messages", "sk-ant-sim", &body)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        again["usage"]["cache_read_input_tokens"],
        first["usage"]["cache_creation_input_tokens"]
    );
    assert_eq!(sim.calls("cache_control"), 2);
    assert_eq!(sim.calls("context_management"), 2);
    let counted: Value = anthropic(&url, "/v1/messages/count_tokens", "sk-ant-sim", &body)
        .await
        .json()
        .await
        .expect("JSON");
    let total = [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ]
    .iter()
    .map(|k| first["usage"][k].as_i64().unwrap_or(0))
    .sum::<i64>();
    assert_eq!(counted["input_tokens"].as_i64(), Some(total));
    // A stream the knobs break ends with Anthropic's error event.
    sim.set_knobs(Knobs {
        fail_after_tokens: Some(2),
        ..Knobs::default()
    });
    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let events = sse_events(anthropic(&url, "/v1/messages", "sk-ant-sim", &streaming).await).await;
    let last = events.last().expect("an event");
    assert_eq!(last["type"], "error");
    assert_eq!(last["error"]["type"], "overloaded_error");
    assert!(!events.iter().any(|e| e["type"] == "message_stop"));
    sim.set_knobs(Knobs::default());
    // A server in OpenAI-compatible mode has no Messages API.
    let (vllm, vllm_stop) = start(Sim::compatible_server(Knobs::default(), None)).await;
    assert_eq!(
        anthropic(&vllm, "/v1/messages", "x", &body).await.status(),
        404
    );
    vllm_stop.cancel();
    stop.cancel();
}
