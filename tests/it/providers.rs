//! All three job kinds on both providers, and what happens when no provider can serve.

use serde_json::{Value, json};

use crate::harness::{Options, Stack, Upstream, eventually};

async fn run_all_kinds(stack: &Stack, models: [&str; 3]) -> [Value; 3] {
    let generate = stack
        .submit(
            "/v1/generate",
            &json!({ "model": models[0], "prompt": "Describe a red bicycle" }),
        )
        .await;
    let chat = stack
        .submit(
            "/v1/chat",
            &json!({ "model": models[1], "messages": [
                { "role": "system", "content": "Be brief." },
                { "role": "user", "content": "Name a colour." },
            ]}),
        )
        .await;
    let embedding = stack
        .submit(
            "/v1/embedding",
            &json!({ "model": models[2], "input": ["first text", "second text"] }),
        )
        .await;
    let mut finished = Vec::new();
    for job in [generate, chat, embedding] {
        assert_eq!(job["status"], "queued");
        finished.push(
            stack
                .wait_until_finished(job["id"].as_str().expect("id"))
                .await,
        );
    }
    finished.try_into().expect("three jobs")
}

fn assert_succeeded_on(job: &Value, provider: &str) {
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["provider"], provider);
    assert_eq!(job["attempts"], 1);
    assert!(job["error"].is_null());
    let usage = &job["usage"];
    let (prompt, completion) = (
        usage["prompt_tokens"].as_i64().expect("prompt"),
        usage["completion_tokens"].as_i64().expect("completion"),
    );
    assert!(prompt > 0, "provider-reported prompt tokens: {job}");
    assert_eq!(usage["total_tokens"].as_i64(), Some(prompt + completion));
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());
}

fn assert_results(jobs: &[Value; 3]) {
    let text = jobs[0]["result"]["text"].as_str().expect("generate text");
    assert!(text.split(' ').count() >= 8, "{text}");
    assert!(jobs[0]["usage"]["completion_tokens"].as_i64() > Some(0));
    assert_eq!(jobs[1]["result"]["message"]["role"], "assistant");
    assert!(
        !jobs[1]["result"]["message"]["content"]
            .as_str()
            .expect("chat content")
            .is_empty()
    );
    let embeddings = jobs[2]["result"]["embeddings"]
        .as_array()
        .expect("embeddings");
    assert_eq!(embeddings.len(), 2);
    assert_eq!(embeddings[0].as_array().expect("vector").len(), 16);
    assert_ne!(embeddings[0], embeddings[1]);
}

#[tokio::test]
async fn generate_chat_and_embedding_run_on_ollama() {
    let stack = Stack::start().await;

    let jobs = run_all_kinds(&stack, ["llama3", "mistral", "nomic-embed-text"]).await;

    for job in &jobs {
        assert_succeeded_on(job, "local");
    }
    assert_results(&jobs);
    assert_eq!(jobs[0]["upstream_model"], "llama3");
    for path in ["/api/generate", "/api/chat", "/api/embed"] {
        assert_eq!(stack.ollama.calls(path), 1, "{path}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn generate_chat_and_embedding_run_on_openai() {
    let stack = Stack::with(Options {
        upstream: Upstream::OpenAi,
        ..Options::default()
    })
    .await;

    let jobs = run_all_kinds(
        &stack,
        ["gpt-4.1-mini", "gpt-4o-mini", "text-embedding-3-small"],
    )
    .await;

    for job in &jobs {
        assert_succeeded_on(job, "openai");
    }
    assert_results(&jobs);
    assert_eq!(stack.openai.calls("/v1/responses"), 2);
    assert_eq!(stack.openai.calls("/v1/embeddings"), 1);
    assert_eq!(stack.ollama.calls("/api/generate"), 0);
    stack.stop().await;
}

/// With the fleet switched off and no fallback, no provider can serve anything: a request is
/// refused at intake (`route_disabled`), not accepted to fail a moment later.
#[tokio::test]
async fn with_the_local_provider_disabled_and_no_fallback_a_request_is_refused_as_not_served() {
    let stack = Stack::with(Options {
        upstream: Upstream::Nothing,
        ..Options::default()
    })
    .await;

    let refused = stack
        .post(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "hi" }),
        )
        .await;

    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.expect("problem");
    assert_eq!(problem["code"], "model_not_served");
    let detail = problem["detail"].as_str().expect("detail");
    assert!(
        detail.contains("\"llama3\"") && detail.contains("(route_disabled)"),
        "{detail}"
    );
    assert_eq!(stack.rows("jobs").await, 0, "nothing was written");
    assert_eq!(stack.ollama.calls("/api/generate"), 0);
    assert_eq!(stack.openai.calls("/v1/responses"), 0);
    stack.stop().await;
}

#[tokio::test]
async fn a_model_no_host_has_goes_to_the_fallback_and_without_one_fails_naming_it() {
    let stack = Stack::start().await;
    let alias = stack
        .admin(
            reqwest::Method::PUT,
            "/v1/admin/aliases/ghost",
            &json!({ "routes": { "ollama": "ghost-model", "openai": "gpt-4.1-mini" } }),
        )
        .await;
    assert_eq!(alias.status(), 200);
    stack
        .patch_settings(&json!({ "ai_fallback_provider": "openai" }))
        .await;

    // The fleet's listing says no host has it: no host is asked, the fallback answers (once
    // the worker has the fallback: a settings change reaches it within a moment, not at once).
    eventually("the worker takes up the fallback", || async {
        let job = stack.generate("ghost", "first").await;
        job["status"] == "succeeded"
    })
    .await;
    let job = stack.generate("ghost", "hi").await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["provider"], "openai");
    assert_eq!(job["route_reason"], "fallback");
    assert_eq!(stack.ollama.calls("/api/generate"), 0);

    stack
        .patch_settings(&json!({ "ai_fallback_provider": "none" }))
        .await;
    eventually("the worker drops the fallback", || async {
        let job = stack.generate("ghost", "again").await;
        job["status"] == "failed"
    })
    .await;
    let job = stack.generate("ghost", "once more").await;
    assert_eq!(job["error"]["code"], "no_provider_available");
    assert!(
        job["error"]["message"]
            .as_str()
            .expect("message")
            .contains("ghost-model"),
        "{job}"
    );
    assert_eq!(job["attempts"], 0, "no host was called");
    assert_eq!(stack.ollama.calls("/api/generate"), 0);
    stack.stop().await;
}
