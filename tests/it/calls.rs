//! The drop-in OpenAI and Ollama surfaces: the official `openai` and `ollama` Python packages call models as they would call OpenAI and Ollama
//! (`tests/openai/calls.py`, `tests/ollama/calls.py`), and the calls are jobs like any other.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::Stack;
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

#[tokio::test]
async fn admins_pull_and_delete_models_through_the_ollama_surface() {
    let stack = Stack::start().await;
    let pull = json!({ "model": "qwen2:0.5b" });
    let refused = stack.post("/ollama/api/pull", &pull).await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.expect("an Ollama error");
    assert!(body["error"].is_string(), "{body}");

    let pulled = stack
        .admin(reqwest::Method::POST, "/ollama/api/pull", &pull)
        .await;
    assert_eq!(pulled.status(), 200);
    let lines = pulled.text().await.expect("progress lines");
    let last: Value = serde_json::from_str(lines.lines().last().expect("a line")).expect("JSON");
    assert_eq!(last["status"], "success", "{lines}");
    let waited = stack
        .admin(
            reqwest::Method::POST,
            "/ollama/api/pull",
            &json!({ "model": "qwen2:0.5b", "stream": false }),
        )
        .await;
    assert_eq!(
        waited.json::<Value>().await.expect("JSON"),
        json!({ "status": "success" })
    );

    let deleted = stack
        .admin(reqwest::Method::DELETE, "/ollama/api/delete", &pull)
        .await;
    assert_eq!(deleted.status(), 200);
    let again = stack
        .admin(reqwest::Method::DELETE, "/ollama/api/delete", &pull)
        .await;
    assert_eq!(again.status(), 404);
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action in ('model.pull', 'model.delete')",
    )
    .fetch_one(&stack.pool)
    .await
    .expect("count");
    assert_eq!(audited, 4);
    stack.stop().await;
}
