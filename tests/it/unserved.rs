//! A request no provider can ever serve, as the settings stand, is refused at intake on every
//! surface — the native API's `422 model_not_served`, OpenAI's and Ollama's `404` — naming the
//! model and the reason, with nothing written; what is only passing (every host busy, a circuit
//! open) is still accepted and waited out.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Stack, client};
use crate::openai_batches::upload;

/// A `local_only` tenant's requests for a model only OpenAI serves (`gpt-4o-mini`,
/// `text-embedding-3-small`), on every surface: each refused as its surface refuses a model it
/// does not have, saying `data_policy`, and no job, batch or file of a batch written.
#[tokio::test]
async fn a_cloud_only_model_is_refused_to_a_local_only_tenant_on_every_surface() {
    let stack = Stack::start().await;
    let id = stack.tenant_id("acme").await;
    let changed = stack
        .admin(
            Method::PATCH,
            &format!("/v1/admin/tenants/{id}"),
            &json!({ "data_policy": "local_only" }),
        )
        .await;
    assert_eq!(changed.status(), 200);
    // The token cache holds a principal for a second at most.
    crate::harness::eventually("the tenant's policy reaches intake", || async {
        let answer = stack
            .post(
                "/v1/generate",
                &json!({ "model": "gpt-4o-mini", "prompt": "hi" }),
            )
            .await;
        answer.status() == 422
    })
    .await;

    let chat = json!([{ "role": "user", "content": "hi" }]);
    for (path, body) in [
        (
            "/v1/generate",
            json!({ "model": "gpt-4o-mini", "prompt": "hi" }),
        ),
        (
            "/v1/chat",
            json!({ "model": "gpt-4o-mini", "messages": chat }),
        ),
        (
            "/v1/embedding",
            json!({ "model": "text-embedding-3-small", "input": "hi" }),
        ),
        (
            "/v1/batches",
            json!({ "kind": "generate", "model": "gpt-4o-mini",
                    "items": [{ "custom_id": "a", "prompt": "hi" }] }),
        ),
    ] {
        let answer = stack.post(path, &body).await;
        assert_eq!(answer.status(), 422, "{path}");
        let problem: Value = answer.json().await.expect("problem");
        assert_eq!(problem["code"], "model_not_served", "{path}: {problem}");
        assert_eq!(problem["field"], "model", "{path}");
        names_model_and_reason(&problem["detail"], path);
    }
    for (path, body) in [
        (
            "/openai/v1/chat/completions",
            json!({ "model": "gpt-4o-mini", "messages": chat }),
        ),
        (
            "/openai/v1/chat/completions",
            json!({ "model": "gpt-4o-mini", "messages": chat, "stream": true }),
        ),
        (
            "/openai/v1/responses",
            json!({ "model": "gpt-4o-mini", "input": "hi" }),
        ),
        (
            "/openai/v1/embeddings",
            json!({ "model": "text-embedding-3-small", "input": "hi" }),
        ),
    ] {
        let answer = stack.post(path, &body).await;
        assert_eq!(answer.status(), 404, "{path}");
        assert!(answer.headers().get("retry-after").is_none(), "{path}");
        let error: Value = answer.json().await.expect("OpenAI error");
        assert_eq!(error["error"]["code"], "model_not_found", "{path}: {error}");
        assert_eq!(error["error"]["param"], "model", "{path}");
        names_model_and_reason(&error["error"]["message"], path);
    }
    for (path, body) in [
        (
            "/ollama/api/generate",
            json!({ "model": "gpt-4o-mini", "prompt": "hi" }),
        ),
        (
            "/ollama/api/chat",
            json!({ "model": "gpt-4o-mini", "messages": chat }),
        ),
        (
            "/ollama/api/embed",
            json!({ "model": "text-embedding-3-small", "input": "hi" }),
        ),
    ] {
        let answer = stack.post(path, &body).await;
        assert_eq!(answer.status(), 404, "{path}");
        let error: Value = answer.json().await.expect("Ollama error");
        names_model_and_reason(&error["error"], path);
    }
    let line = json!({ "custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                       "body": { "model": "gpt-4o-mini", "messages": chat } });
    let file: Value = upload(&stack, &stack.token, "batch", line.to_string())
        .await
        .json()
        .await
        .expect("file");
    let batch = stack
        .post(
            "/openai/v1/batches",
            &json!({ "input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                     "completion_window": "24h" }),
        )
        .await;
    assert_eq!(batch.status(), 400);
    let error: Value = batch.json().await.expect("OpenAI error");
    names_model_and_reason(&error["error"]["message"], "/openai/v1/batches");

    assert_eq!(stack.rows("jobs").await, 0, "nothing was written");
    assert_eq!(stack.rows("batches").await, 0);
    assert_eq!(stack.openai.calls("/v1/chat/completions"), 0);
    stack.stop().await;
}

fn names_model_and_reason(message: &Value, path: &str) {
    let message = message.as_str().unwrap_or_default();
    assert!(
        message.contains("gpt-4o-mini") || message.contains("text-embedding-3-small"),
        "{path}: {message}"
    );
    assert!(message.contains("data_policy"), "{path}: {message}");
}

/// A model with no route at all, and one whose only provider is switched off: `no_route` and
/// `route_disabled`. Every host's circuit open is passing, not a refusal: the job is accepted.
#[tokio::test]
async fn no_route_and_a_disabled_route_are_refused_and_an_open_circuit_is_not() {
    let stack = Stack::start().await;
    let refusal = |model: &'static str| {
        let stack = &stack;
        async move {
            let answer = stack
                .post("/v1/generate", &json!({ "model": model, "prompt": "hi" }))
                .await;
            assert_eq!(answer.status(), 422, "{model}");
            let problem: Value = answer.json().await.expect("problem");
            assert_eq!(problem["code"], "model_not_served");
            problem["detail"].as_str().unwrap_or_default().to_owned()
        }
    };
    let detail = refusal("no-such-model").await;
    assert!(detail.contains("(no_route)"), "{detail}");
    // The stack runs the fleet alone, with no fallback: a model only OpenAI serves is disabled.
    let detail = refusal("gpt-4.1").await;
    assert!(detail.contains("(route_disabled)"), "{detail}");

    stack
        .patch_settings(&json!({ "circuit_failure_threshold": 1, "circuit_cooldown_ms": 60000 }))
        .await;
    stack.ollama.set_knobs(provider_sim::Knobs {
        error_rate: 1.0,
        ..provider_sim::Knobs::default()
    });
    let failed = stack.generate("llama3", "opens the host's circuit").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let answer = client()
        .post(stack.url("/v1/generate"))
        .bearer_auth(&stack.token)
        .json(&json!({ "model": "llama3", "prompt": "while the circuit is open" }))
        .send()
        .await
        .expect("submit");
    assert_eq!(
        answer.status(),
        202,
        "a passing state is waited out, not refused"
    );
    stack.stop().await;
}
