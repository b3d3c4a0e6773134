//! Provider resolution from runtime settings: fallback, quick retries, delayed runs, circuit
//! breaking, per-provider limits, and settings that change under a running worker.

use std::cell::Cell;

use provider_sim::Knobs;
use reqwest::Method;
use serde_json::{Value, json};
use tollgate_core::db::job_attempts::{self, AttemptRow};
use tollgate_core::domain::SettingsChange;

use crate::harness::{Options, Stack, eventually, with_openai_fallback};

fn failing() -> Knobs {
    Knobs {
        error_rate: 1.0,
        ..Knobs::default()
    }
}

async fn attempts_of(stack: &Stack, job: &Value) -> Vec<AttemptRow> {
    let id = job["id"].as_str().expect("id").parse().expect("job id");
    job_attempts::list(&stack.pool, id).await.expect("attempts")
}

fn providers_called(attempts: &[AttemptRow]) -> Vec<(&str, &str)> {
    attempts
        .iter()
        .map(|a| (a.provider.as_str(), a.outcome.as_str()))
        .collect()
}

#[tokio::test]
async fn a_failing_primary_is_retried_then_the_fallback_answers_with_its_own_model() {
    let stack = Stack::with(with_openai_fallback(SettingsChange::default())).await;
    stack.ollama.set_knobs(failing());

    let job = stack.generate("llama3", "Describe a lamp").await;

    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["provider"], "openai");
    assert_eq!(job["upstream_model"], "gpt-4.1-mini", "llama3 routes there");
    assert_eq!(job["attempts"], 3);
    let attempts = attempts_of(&stack, &job).await;
    assert_eq!(
        providers_called(&attempts),
        [
            ("local", "transient_error"),
            ("local", "transient_error"),
            ("openai", "succeeded"),
        ]
    );
    assert_eq!(attempts[0].status_code, Some(500));
    assert_eq!(attempts[2].upstream_model, "gpt-4.1-mini");
    assert!(attempts.iter().all(|a| a.finished_at >= Some(a.started_at)));
    stack.stop().await;
}

#[tokio::test]
async fn when_every_provider_is_down_the_job_waits_in_the_delay_queue_then_fails() {
    let stack = Stack::with(with_openai_fallback(SettingsChange::default())).await;
    stack.ollama.set_knobs(failing());
    stack.openai.set_knobs(failing());

    let job = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "hi" }),
        )
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    let waiting = stack
        .wait_for_job(&id, |job| job["status"] == "retrying")
        .await;
    let job = stack.wait_until_finished(&id).await;

    assert_eq!(
        waiting["error"]["code"], "provider_unavailable",
        "{waiting}"
    );
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "provider_unavailable");
    // max_job_attempts = 3 runs, each two calls to each provider
    assert_eq!(job["attempts"], 12, "{job}");
    let attempts = attempts_of(&stack, &job).await;
    let claims: Vec<i32> = attempts.iter().map(|a| a.claim).collect();
    assert_eq!(claims, [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
    let first_run_end = attempts[3].finished_at.expect("finished");
    let second_run_start = attempts[4].started_at;
    assert!(
        second_run_start - first_run_end >= chrono::Duration::milliseconds(900),
        "the second run waited in the 1 s delay queue: {first_run_end} → {second_run_start}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_before_the_next_call() {
    let stack = Stack::start().await;
    stack.ollama.set_knobs(Knobs {
        rate_limit_rate: 1.0,
        retry_after_secs: 2,
        ..Knobs::default()
    });

    let job = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "hi" }),
        )
        .await;
    eventually("the first call is rate limited", || async {
        stack.ollama.calls("/api/generate") == 1
    })
    .await;
    stack.ollama.set_knobs(Knobs::default());
    let job = stack
        .wait_until_finished(job["id"].as_str().expect("id"))
        .await;

    assert_eq!(job["status"], "succeeded");
    let attempts = attempts_of(&stack, &job).await;
    assert_eq!(
        providers_called(&attempts),
        [("local", "transient_error"), ("local", "succeeded")]
    );
    assert_eq!(attempts[0].status_code, Some(429));
    let waited = attempts[1].started_at - attempts[0].finished_at.expect("finished");
    assert!(
        waited >= chrono::Duration::seconds(2),
        "Retry-After: 2 was honoured, waited {waited}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_400_from_the_provider_fails_the_job_at_once_without_retry_or_fallback() {
    let stack = Stack::with(with_openai_fallback(SettingsChange::default())).await;
    stack.ollama.set_knobs(Knobs {
        error_rate: 1.0,
        error_status: Some(400),
        ..Knobs::default()
    });

    let job = stack.generate("llama3", "hi").await;

    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "invalid_request");
    assert!(
        job["error"]["message"]
            .as_str()
            .expect("message")
            .contains("400"),
        "{job}"
    );
    assert_eq!(job["provider"], "local");
    assert_eq!(job["attempts"], 1);
    assert_eq!(stack.ollama.calls("/api/generate"), 1);
    assert_eq!(stack.openai.calls("/v1/responses"), 0);
    stack.stop().await;
}

#[tokio::test]
async fn the_circuit_opens_after_repeated_failures_and_closes_after_the_cool_down() {
    let stack = Stack::with(with_openai_fallback(SettingsChange {
        provider_attempts: Some(1),
        circuit_failure_threshold: Some(2),
        // long enough that the first three jobs finish inside it even on a slow machine
        circuit_cooldown_ms: Some(4000),
        ..SettingsChange::default()
    }))
    .await;
    stack.ollama.set_knobs(failing());

    for prompt in ["one", "two"] {
        let job = stack.generate("llama3", prompt).await;
        assert_eq!(job["provider"], "openai", "{job}");
    }
    assert_eq!(stack.ollama.calls("/api/generate"), 2);
    let job = stack.generate("llama3", "three").await;
    assert_eq!(job["provider"], "openai");
    assert_eq!(job["attempts"], 1, "the open circuit skipped Ollama: {job}");
    assert_eq!(
        stack.ollama.calls("/api/generate"),
        2,
        "no call to a provider whose circuit is open"
    );

    stack.ollama.set_knobs(Knobs::default());
    let n = Cell::new(0);
    eventually("after the cool-down Ollama answers again", || {
        n.set(n.get() + 1);
        let prompt = format!("again {}", n.get());
        let stack = &stack;
        async move { stack.generate("llama3", &prompt).await["provider"] == "local" }
    })
    .await;
    assert_eq!(
        stack.ollama.calls("/api/generate"),
        3,
        "one trial call closed the circuit"
    );
    let job = stack.generate("llama3", "closed").await;
    assert_eq!(job["provider"], "local");
    stack.stop().await;
}

#[tokio::test]
async fn a_settings_change_switches_the_provider_of_the_next_job_on_a_running_worker() {
    let stack = Stack::start().await;
    let job = stack.generate("llama3", "before").await;
    assert_eq!(job["provider"], "local");

    let settings = stack
        .patch_settings(&json!({ "ai_provider": "openai" }))
        .await;
    assert_eq!(settings["ai_provider"], "openai");
    let n = Cell::new(0);
    eventually("the running worker follows the new setting", || {
        n.set(n.get() + 1);
        let prompt = format!("after {}", n.get());
        let stack = &stack;
        async move { stack.generate("llama3", &prompt).await["provider"] == "openai" }
    })
    .await;

    let job = stack.generate("llama3", "settled").await;
    assert_eq!(job["provider"], "openai");
    assert_eq!(job["upstream_model"], "gpt-4.1-mini");
    stack.stop().await;
}

#[tokio::test]
async fn a_provider_never_has_more_calls_in_flight_than_its_limit() {
    let stack = Stack::with(Options {
        host_slots: 1,
        ..Options::default()
    })
    .await;
    stack.ollama.set_knobs(Knobs {
        latency_ms: 150,
        ..Knobs::default()
    });

    let ids = stack.submit_many(4, "job").await;
    let mut calls = Vec::new();
    for id in &ids {
        let job = stack.wait_until_finished(id).await;
        assert_eq!(job["status"], "succeeded");
        calls.extend(attempts_of(&stack, &job).await);
    }

    calls.sort_by_key(|a| a.started_at);
    for pair in calls.windows(2) {
        let previous_end = pair[0].finished_at.expect("finished");
        assert!(
            pair[1].started_at >= previous_end - chrono::Duration::milliseconds(2),
            "calls overlapped: {pair:?}"
        );
    }
    stack.stop().await;
}

#[tokio::test]
async fn admin_routes_need_an_admin_token_and_settings_validate_each_field() {
    let stack = Stack::start().await;

    let denied = stack.get("/v1/admin/settings").await;
    assert_eq!(denied.status(), 403);
    let problem: Value = denied.json().await.expect("problem");
    assert_eq!(problem["code"], "forbidden");
    for (body, field) in [
        (json!({ "ai_provider": "azure" }), "ai_provider"),
        (
            json!({ "ai_fallback_provider": "cloud" }),
            "ai_fallback_provider",
        ),
        (json!({ "max_job_attempts": 0 }), "max_job_attempts"),
        (json!({ "openai_base_url": "not a url" }), "openai_base_url"),
        (json!({ "ai_local_share": 101 }), "ai_local_share"),
        (
            json!({ "retry_min_delay_ms": 60_000 }),
            "retry_min_delay_ms",
        ),
        (json!({ "colour": "red" }), "colour"),
    ] {
        let response = stack
            .admin(Method::PATCH, "/v1/admin/settings", &body)
            .await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.expect("problem");
        assert_eq!(problem["field"], field, "{problem}");
    }
    let settings: Value = stack
        .admin(Method::GET, "/v1/admin/settings", &Value::Null)
        .await
        .json()
        .await
        .expect("settings");
    assert_eq!(settings["ai_provider"], "local", "nothing was half-written");
    assert_eq!(settings["max_job_attempts"], 3);

    let alias = stack
        .admin(
            Method::PUT,
            "/v1/admin/aliases/house-model",
            &json!({ "routes": { "openai": "gpt-4o-mini" } }),
        )
        .await;
    assert_eq!(alias.status(), 200);
    let aliases: Value = stack
        .admin(Method::GET, "/v1/admin/aliases", &Value::Null)
        .await
        .json()
        .await
        .expect("aliases");
    assert!(
        aliases["data"]
            .as_array()
            .expect("data")
            .contains(&json!({ "model": "house-model", "routes": { "openai": "gpt-4o-mini" } }))
    );
    let empty = stack
        .admin(
            Method::PUT,
            "/v1/admin/aliases/house-model",
            &json!({ "routes": {} }),
        )
        .await;
    assert_eq!(empty.status(), 422);
    let deleted = stack
        .admin(
            Method::DELETE,
            "/v1/admin/aliases/house-model",
            &Value::Null,
        )
        .await;
    assert_eq!(deleted.status(), 204);
    let refused = stack
        .post(
            "/v1/generate",
            &json!({ "model": "house-model", "prompt": "hi" }),
        )
        .await;
    assert_eq!(refused.status(), 422, "a model no provider serves");
    stack.stop().await;
}

#[tokio::test]
async fn a_job_retried_after_a_transient_failure_keeps_its_id_and_ends_once() {
    let stack = Stack::with(Options {
        settings: SettingsChange {
            provider_attempts: Some(1),
            ..SettingsChange::default()
        },
        ..Options::default()
    })
    .await;
    stack.ollama.set_knobs(failing());

    let job = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "later" }),
        )
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    stack
        .wait_for_job(&id, |job| job["status"] == "retrying")
        .await;
    stack.ollama.set_knobs(Knobs::default());
    let job = stack.wait_until_finished(&id).await;

    assert_eq!(job["status"], "succeeded");
    assert!(
        job["error"].is_null(),
        "the retry's error is cleared: {job}"
    );
    let attempts = attempts_of(&stack, &job).await;
    assert_eq!(
        providers_called(&attempts),
        [("local", "transient_error"), ("local", "succeeded")]
    );
    assert_eq!(attempts[1].claim, 2, "the second run is the delayed one");
    stack.stop().await;
}
