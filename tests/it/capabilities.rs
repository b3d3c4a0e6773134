//! Capabilities known rather than guessed: the fleet learns what each host's models can do from
//! `/api/show` as it lists them, every process routes by it (a step whose model cannot do what a
//! request needs is skipped; a request no step can serve is refused at intake naming the field,
//! with nothing written), a job goes to the host whose model can, and a host too old to say counts
//! as able to do everything.

use serde_json::{Value, json};

use crate::harness::{Stack, client, eventually, put_host};
use crate::images::{PIXEL, pixel, seen, showing, submit};

/// What `GET /v1/models` says the fleet's `model` (an Ollama route's upstream) can do.
async fn fleet_capabilities(stack: &Stack, model: &str) -> Option<Vec<String>> {
    let models: Value = stack.get("/v1/models").await.json().await.ok()?;
    let served = models["data"]
        .as_array()?
        .iter()
        .find(|m| m["model"] == model)?
        .clone();
    let ollama = served["providers"]
        .as_array()?
        .iter()
        .find(|p| p["provider"] == "local")?
        .clone();
    serde_json::from_value(ollama["capabilities"].clone()).ok()
}

/// Waits until every process routes `model` knowing its fleet capabilities are `expected`.
async fn until_known(stack: &Stack, model: &str, expected: &[&str]) {
    eventually(&format!("{model} is known to do {expected:?}"), || async {
        fleet_capabilities(stack, model).await.as_deref()
            == Some(&expected.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>()[..])
    })
    .await;
}

async fn chat_completion(stack: &Stack, body: &Value) -> (u16, Value) {
    let response = client()
        .post(stack.url("/openai/v1/chat/completions"))
        .bearer_auth(&stack.token)
        .json(body)
        .send()
        .await
        .expect("POST chat completions");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_no_step_can_serve_is_refused_at_intake_naming_the_field() {
    let stack = Stack::start().await;
    // The sim's llama3 completes and calls tools, and does not see.
    until_known(&stack, "llama3", &["completion", "tools"]).await;
    let image = format!("data:image/png;base64,{PIXEL}");
    let mut llama3 = showing(&image);
    llama3["model"] = json!("llama3");
    let (status, problem) = submit(&stack, &llama3).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "model_lacks_capability");
    assert_eq!(problem["field"], "messages[0].content[1]");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("vision"),
        "{problem}"
    );
    let (status, error) = chat_completion(
        &stack,
        &json!({ "model": "llama3", "messages": [{ "role": "user", "content": [
            { "type": "text", "text": "What is this?" },
            { "type": "image_url", "image_url": { "url": image } }] }] }),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["param"], "messages[0].content[1]", "{error}");
    assert_eq!(error["error"]["code"], "model_lacks_capability", "{error}");
    // A batch item that shows an image to it is refused naming the item's image.
    let items = json!([
        { "custom_id": "text", "messages": [{ "role": "user", "content": "Hi" }] },
        { "custom_id": "image", "messages": llama3["messages"] },
    ]);
    let batch = json!({ "kind": "chat", "model": "llama3", "items": items });
    let response = crate::batches::post_batch(&stack, &stack.token, &batch).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(
        (problem["code"].as_str(), problem["field"].as_str()),
        (
            Some("model_lacks_capability"),
            Some("items[1].messages[0].content[1]")
        ),
        "{problem}"
    );
    // Tools to a model that cannot call them name the tools.
    stack.ollama.install("plain:latest", Some(&["completion"]));
    let alias = json!({ "routes": { "ollama": "plain" } });
    stack
        .admin(reqwest::Method::PUT, "/v1/admin/aliases/plain", &alias)
        .await;
    // A new model is listed when the next probe or a job asks; a job asking for it lists it.
    until_listed(&stack, "plain").await;
    let tools = json!({ "model": "plain", "messages": [{ "role": "user", "content": "Weather?" }],
                        "tools": [{ "name": "get_weather", "parameters": { "type": "object" } }] });
    let (status, problem) = submit(&stack, &tools).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        (problem["code"].as_str(), problem["field"].as_str()),
        (Some("model_lacks_capability"), Some("tools"))
    );
    // Nothing refused was written, but the job that listed `plain`.
    let refused: i64 = sqlx::query_scalar("select count(*) from jobs where model <> 'plain'")
        .fetch_one(&stack.pool)
        .await
        .expect("count");
    assert_eq!(refused, 0);
    // With a fallback that can, the fleet's step is skipped: OpenAI sees the image.
    stack
        .patch_settings(&json!({ "ai_fallback_provider": "openai" }))
        .await;
    let chats_before = stack.ollama.calls("/api/chat");
    let (status, job) = submit(&stack, &llama3).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["provider"], "openai", "{job}");
    let text = job["result"]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains(&seen(&pixel())), "{job}");
    assert_eq!(
        stack.ollama.calls("/api/chat"),
        chats_before,
        "no call to the fleet"
    );
    stack.stop().await;
}

/// Runs a plain chat for `model` until the fleet is known to have it (the job lists the hosts
/// when no host is known to have its model).
async fn until_listed(stack: &Stack, model: &str) {
    eventually(&format!("{model} is listed"), || async {
        let body = json!({ "model": model, "messages": [{ "role": "user", "content": "Hi" }] });
        let _ = submit(stack, &body).await;
        fleet_capabilities(stack, model).await.is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_goes_to_the_host_whose_model_can_do_what_it_needs() {
    let stack = Stack::start().await;
    until_known(&stack, "llama3", &["completion", "tools"]).await;
    // A second host whose llama3 sees.
    let (seer, url) = stack.extra_sim().await;
    seer.install("llama3:latest", Some(&["completion", "vision"]));
    put_host(&stack.pool, "seer", &url, 4).await;
    until_known(&stack, "llama3", &["completion", "tools", "vision"]).await;
    let mut llama3 = showing(&format!("data:image/png;base64,{PIXEL}"));
    llama3["model"] = json!("llama3");
    for _ in 0..3 {
        let (status, job) = submit(&stack, &llama3).await;
        assert_eq!(status, 200, "{job}");
        let text = job["result"]["message"]["content"]
            .as_str()
            .unwrap_or_default();
        assert!(text.contains(&seen(&pixel())), "{job}");
    }
    assert_eq!(
        seer.calls("/api/chat"),
        3,
        "every image went to the host that sees"
    );
    assert_eq!(stack.ollama.calls("/api/chat"), 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_too_old_to_say_counts_as_able_to_do_everything() {
    let stack = Stack::start().await;
    stack.ollama.install("old:latest", None);
    let alias = json!({ "routes": { "ollama": "old" } });
    stack
        .admin(reqwest::Method::PUT, "/v1/admin/aliases/old", &alias)
        .await;
    until_listed(&stack, "old").await;
    until_known(
        &stack,
        "old",
        &["completion", "tools", "vision", "thinking", "embedding"],
    )
    .await;
    let mut old = showing(&format!("data:image/png;base64,{PIXEL}"));
    old["model"] = json!("old");
    let (status, job) = submit(&stack, &old).await;
    assert_eq!(status, 200, "{job}");
    let text = job["result"]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains(&seen(&pixel())), "{job}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cloud_route_declares_what_its_model_can_do() {
    let stack = Stack::start().await;
    stack
        .patch_settings(&json!({ "ai_fallback_provider": "openai" }))
        .await;
    let put = |body: Value| {
        let stack = &stack;
        async move {
            let response = stack
                .admin(reqwest::Method::PUT, "/v1/admin/aliases/plain-cloud", &body)
                .await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or_default())
        }
    };
    // What cannot be declared is refused by name.
    let (status, problem) = put(json!({ "routes": { "openai": "gpt-4.1-mini" },
                                        "capabilities": { "openai": ["psychic"] } }))
    .await;
    assert_eq!(
        (status, problem["field"].clone()),
        (422, json!("capabilities.openai[0]"))
    );
    let (status, problem) = put(json!({ "routes": { "openai": "gpt-4.1-mini" },
                                        "capabilities": { "ollama": ["completion"] } }))
    .await;
    assert_eq!(
        (status, problem["field"].clone()),
        (422, json!("capabilities.ollama"))
    );
    let (status, alias) = put(json!({ "routes": { "openai": "gpt-4.1-mini" },
                                      "capabilities": { "openai": ["completion"] } }))
    .await;
    assert_eq!(status, 200, "{alias}");
    assert_eq!(alias["capabilities"], json!({ "openai": ["completion"] }));
    eventually("the declaration is routed by", || async {
        let models: Value = stack
            .get("/v1/models")
            .await
            .json()
            .await
            .unwrap_or_default();
        models["data"].as_array().into_iter().flatten().any(|m| {
            m["model"] == "plain-cloud"
                && m["providers"][0]["capabilities"] == json!(["completion"])
        })
    })
    .await;
    // A request needing more than it declares is refused at intake, naming the field.
    let mut image = showing(&format!("data:image/png;base64,{PIXEL}"));
    image["model"] = json!("plain-cloud");
    let (status, problem) = submit(&stack, &image).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        (problem["code"].as_str(), problem["field"].as_str()),
        (
            Some("model_lacks_capability"),
            Some("messages[0].content[1]")
        )
    );
    let tools = json!({ "model": "plain-cloud",
                        "messages": [{ "role": "user", "content": "Weather?" }],
                        "tools": [{ "name": "get_weather", "parameters": { "type": "object" } }] });
    let (status, problem) = submit(&stack, &tools).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("tools")));
    // Reasoning asked of it is dropped before the call: no refused round trip to OpenAI.
    let reasoned = json!({ "model": "plain-cloud",
                           "messages": [{ "role": "user", "content": "Why?" }],
                           "options": { "reasoning": "high" } });
    let (status, job) = submit(&stack, &reasoned).await;
    assert_eq!(
        (status, job["status"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    assert_eq!(job["result"]["reasoning_dropped"], true, "{job}");
    assert_eq!(stack.openai.calls("/v1/chat/completions"), 0);
    stack.stop().await;
}
