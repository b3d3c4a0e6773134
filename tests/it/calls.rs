//! The drop-in OpenAI and Ollama surfaces: the official `openai` and `ollama` Python packages call models as they would call OpenAI and Ollama
//! (`tests/openai/calls.py`, `tests/ollama/calls.py`), and the calls are jobs like any other.

use std::time::Duration;

use serde_json::{Value, json};

use tollgate_api::ApiSettings;

use crate::harness::Stack;
use crate::openai_batches::run_sdk_script;

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_package_calls_models_through_the_queue() {
    let stack = Stack::start().await;
    // Words apart in time, so a streamed answer reaches the client in more than one piece however
    // busy the machine (the relay gathers what comes within 10 ms into one piece).
    stack.ollama.set_knobs(provider_sim::Knobs {
        token_delay_ms: 15,
        ..provider_sim::Knobs::default()
    });
    let summary = run_sdk_script(&stack, "openai/calls.py", Duration::from_secs(120)).await;
    assert_eq!(
        summary["refusals"],
        json!({ "bad_key": 401, "unknown_model": "model_not_found", "tool_choice": "tool_choice" })
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
        assert_eq!(job["provider"], "local", "{job}");
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

#[tokio::test(flavor = "multi_thread")]
async fn a_call_that_outlives_the_sync_timeout_names_its_job_which_goes_on() {
    let stack = Stack::with(crate::harness::Options {
        api_settings: ApiSettings {
            sync_timeout: Duration::from_secs(1),
            ..crate::harness::test_api_settings()
        },
        ..crate::harness::Options::default()
    })
    .await;
    stack.ollama.set_knobs(provider_sim::Knobs {
        latency_ms: 2_500,
        ..Default::default()
    });
    let body = json!({ "model": "llama3", "messages": [{ "role": "user", "content": "slow" }] });
    let answer = stack.post("/openai/v1/chat/completions", &body).await;
    assert_eq!(answer.status(), 504);
    assert_eq!(answer.headers()["x-should-retry"], "false");
    let id = answer.headers()["x-request-id"]
        .to_str()
        .expect("an id")
        .to_owned();
    let error: Value = answer.json().await.expect("an OpenAI error");
    assert_eq!(error["error"]["code"], "job_still_running", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&id)),
        "{error}"
    );
    let job = stack
        .wait_for_job(&id, |job| job["status"] == "succeeded")
        .await;
    assert_eq!(job["status"], "succeeded", "the job went on: {job}");
    stack.stop().await;
}
