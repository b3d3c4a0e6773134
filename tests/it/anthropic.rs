//! Anthropic both ways. As a surface: the official `anthropic` package
//! (`tests/anthropic/messages.py`) on a model of the fleet, one of OpenAI and one of an Anthropic
//! account (provider-sim speaking the Messages API) — messages whole and streamed, tools with
//! `input_json_delta` and a result sent back, an image, thinking with its signature,
//! count_tokens (asked of Anthropic on its route), models, both ways of sending the key, and
//! Anthropic's errors; a Claude Code request replayed with its headers, betas and body fields on
//! the fleet and on Anthropic (where its `cache_control`, betas and `context_management` arrive,
//! and the prompt cache's tokens are billed at their rates), its session kept with the job; a
//! client that goes away mid-stream. As an upstream: Anthropic's own errors passed through
//! unchanged, and a fallback from a failing Anthropic to the fleet carrying the tool history.

use std::time::Duration;

use provider_sim::Knobs;
use reqwest::Method;
use serde_json::{Value, json};
use tollgate_core::domain::SettingsChange;

use crate::harness::{OPENAI_KEY, Stack, client, eventually, with_openai_fallback};

/// A model of the fleet, one of OpenAI (reached through the fallback) and one of Anthropic.
const MODELS: [&str; 3] = ["llama3", "gpt-4.1-mini", CLAUDE];
/// The model an Anthropic account serves.
pub(crate) const CLAUDE: &str = "claude-sonnet-4-6";

/// Adds an Anthropic account (`anthropic`, a sim speaking the Messages API) serving `claude-*`
/// models, and the alias `claude-sonnet-4-6` routed to it.
pub(crate) async fn anthropic_account(stack: &Stack) -> provider_sim::Sim {
    let (sim, url) = stack.extra_sim().await;
    let account = json!({ "name": "anthropic", "kind": "anthropic", "base_url": url,
                          "api_key": OPENAI_KEY });
    let response = stack
        .admin(Method::POST, "/v1/admin/providers", &account)
        .await;
    assert_eq!(response.status(), 201);
    let alias = json!({ "routes": { "anthropic": CLAUDE }, "chain": ["anthropic"] });
    route(stack, CLAUDE, alias).await;
    sim
}

async fn route(stack: &Stack, alias: &str, body: Value) {
    let path = format!("/v1/admin/aliases/{alias}");
    let response = stack.admin(Method::PUT, &path, &body).await;
    assert_eq!(response.status(), 200, "{alias}");
}

/// A stack whose Ollama host has a thinking `qwen3` (listed and routed), falling back to OpenAI.
async fn stack() -> Stack {
    let stack = Stack::with(with_openai_fallback(SettingsChange::default())).await;
    stack
        .ollama
        .install("qwen3:latest", Some(&["completion", "tools", "thinking"]));
    let response = stack
        .admin(
            Method::PUT,
            "/v1/admin/aliases/qwen3",
            &json!({ "routes": { "ollama": "qwen3" } }),
        )
        .await;
    assert_eq!(response.status(), 200);
    eventually("qwen3 is served by the fleet", || async {
        let body = json!({ "model": "qwen3", "max_tokens": 16,
                           "messages": [{ "role": "user", "content": "Hi" }] });
        messages(&stack, &body, &[]).await.status() == 200
    })
    .await;
    for sim in [&stack.ollama, &stack.openai] {
        sim.set_knobs(Knobs {
            token_delay_ms: 10,
            ..Knobs::default()
        });
    }
    stack
}

/// Posts to the surface's `/v1/messages` with the stack's token as `x-api-key`.
async fn messages(stack: &Stack, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client()
        .post(stack.url("/anthropic/v1/messages"))
        .header("x-api-key", &stack.token)
        .header("anthropic-version", "2023-06-01");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .json(body)
        .send()
        .await
        .expect("POST /anthropic/v1/messages")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_anthropic_python_package_works_on_the_fleet_on_openai_and_on_anthropic() {
    let stack = stack().await;
    let anthropic = anthropic_account(&stack).await;
    anthropic.set_knobs(Knobs {
        token_delay_ms: 10,
        ..Knobs::default()
    });
    let limit = json!({ "rate_limit": { "per_minute": 1, "burst": 1 } });
    let limited = crate::limits::tenant_with(&stack, "limited", limit, Value::Null, 1).await;
    let models = MODELS.join(",");
    let env = [
        ("TOLLGATE_MODELS", models.as_str()),
        ("TOLLGATE_THINKING_MODELS", "qwen3,claude-sonnet-4-6"),
        ("TOLLGATE_LIMITED_TOKEN", limited[0].as_str()),
    ];
    let before: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&stack.pool)
        .await
        .expect("count");
    let script = "anthropic/messages.py";
    let summary =
        crate::openai_batches::run_sdk_script_with(&stack, script, Duration::from_secs(240), &env)
            .await;
    for model in MODELS {
        assert_eq!(summary[model]["call"], "get_weather", "{summary}");
        assert!(
            summary[model]["image"]
                .as_str()
                .is_some_and(|seen| seen.contains("1 image")),
            "{summary}"
        );
    }
    // Reasoning from the fleet is signed by the gateway; Anthropic's keeps Anthropic's.
    let signature = |model: &str| {
        summary["thinking"][model]["signature"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(signature("qwen3").starts_with("tollgate."), "{summary}");
    assert!(signature(CLAUDE).starts_with("sim-signature-"), "{summary}");
    assert_eq!(
        anthropic.calls("/v1/messages/count_tokens"),
        1,
        "Anthropic counted its own"
    );
    assert_eq!(
        summary["refusals"],
        json!({ "bad_key": "authentication_error", "unknown_model": "not_found_error",
                "bad_temperature": "temperature", "rate_limited": "rate_limit_error" })
    );
    assert!(
        summary["models"]
            .as_array()
            .is_some_and(|m| m.contains(&json!("qwen3")))
    );
    // Every call was a job, succeeded and billed (six on each model, three thinking on each of
    // two, one with a bearer token, one of the limited tenant's); nothing refused was written.
    let (jobs, billed): (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where status = 'succeeded' and completion_tokens > 0)
           from (select * from jobs order by created_at offset $1) recent",
    )
    .bind(before)
    .fetch_one(&stack.pool)
    .await
    .expect("count");
    assert_eq!((jobs, billed), (26, 26));
    stack.stop().await;
}

/// A request as Claude Code sends one to a model it does not know: `?beta=true`, its betas and
/// session headers, system blocks marked for caching, a dozen tools, `thinking: adaptive`,
/// `context_management`, `output_config` and `metadata`.
pub(crate) fn claude_code_request(model: &str) -> (Value, Vec<(&'static str, &'static str)>) {
    let fixture = include_str!("../anthropic/claude_code_request.json");
    let mut recorded: Value = serde_json::from_str(fixture).expect("the recorded request");
    recorded["body"]["model"] = json!(model);
    let headers = [
        (
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,effort-2025-11-24",
        ),
        (
            "x-claude-code-session-id",
            "6c1f9a3e-2b7d-4e0a-9f1c-5d8e7a6b4c3d",
        ),
        ("user-agent", "claude-cli/2.1.181 (external, cli)"),
        ("x-app", "cli"),
        ("anthropic-dangerous-direct-browser-access", "true"),
    ];
    (recorded["body"].take(), headers.to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claude_code_request_replays_on_the_fleet_and_its_session_is_kept() {
    let stack = Stack::start().await;
    let response = replay(&stack, "llama3").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "Claude Code streams"
    );
    let request_id = response.headers()["request-id"]
        .to_str()
        .expect("an id")
        .to_owned();
    let events = crate::streaming::sse_events(&crate::streaming::body_of(response).await);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{events:?}");
    assert!(!names.contains(&"error"), "{events:?}");
    let stop = events
        .iter()
        .find(|(name, _)| name == "message_delta")
        .map(|(_, data)| data["delta"]["stop_reason"].clone());
    assert_eq!(stop, Some(json!("tool_use")), "its tools are offered");
    let job: Value = stack
        .get(&format!("/v1/jobs/{request_id}"))
        .await
        .json()
        .await
        .expect("the job");
    assert_eq!(
        job["metadata"]["claude_code_session_id"],
        "6c1f9a3e-2b7d-4e0a-9f1c-5d8e7a6b4c3d"
    );
    assert_eq!(job["status"], "succeeded");
    // The probe answers, without a key.
    for path in ["/anthropic"] {
        let probe = client().head(stack.url(path)).send().await.expect("HEAD");
        assert_eq!(probe.status(), 200, "{path}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_mid_stream_cancels_its_job_with_the_text_billed() {
    let stack = Stack::start().await;
    stack.ollama.set_knobs(Knobs {
        token_delay_ms: 100,
        reply_words: Some(200),
        ..Default::default()
    });
    let body = json!({ "model": "llama3", "max_tokens": 1024, "stream": true,
                       "messages": [{ "role": "user", "content": "a long answer" }] });
    let response = messages(&stack, &body, &[]).await;
    assert_eq!(response.status(), 200);
    let id: uuid::Uuid = response.headers()["request-id"]
        .to_str()
        .expect("an id")
        .parse()
        .expect("a job id");
    let mut stream = response.bytes_stream();
    crate::streaming::read_pieces(&mut stream, 4).await;
    drop(stream);
    crate::streaming::cancelled_with_its_text_billed(stack.pool.clone(), id).await;
    stack.stop().await;
}

/// Posts the recorded Claude Code request for `model` as Claude Code does (its key both as
/// `x-api-key` and as a bearer token, as its `apiKeyHelper` sends it); the response.
async fn replay(stack: &Stack, model: &str) -> reqwest::Response {
    let (body, headers) = claude_code_request(model);
    let mut request = client()
        .post(stack.url("/anthropic/v1/messages?beta=true"))
        .header("x-api-key", &stack.token)
        .bearer_auth(&stack.token)
        .header("anthropic-version", "2023-06-01");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.json(&body).send().await.expect("POST")
}

/// A job as `/v1/jobs/{id}` shows it, by a response's `request-id`.
async fn job_of(stack: &Stack, response: &reqwest::Response) -> Value {
    let id = response.headers()["request-id"].to_str().expect("an id");
    stack
        .get(&format!("/v1/jobs/{id}"))
        .await
        .json()
        .await
        .expect("the job")
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_through_to_anthropic_keeps_its_cache_marks_betas_and_fields_and_is_billed_by_them()
 {
    let stack = Stack::start().await;
    let anthropic = anthropic_account(&stack).await;
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let price = json!({ "provider": "anthropic", "model": CLAUDE, "input_per_1k": "0.003",
                        "output_per_1k": "0.015", "cached_input_per_1k": "0.0003",
                        "cache_write_input_per_1k": "0.00375", "effective_from": since });
    let response = stack.admin(Method::POST, "/v1/admin/prices", &price).await;
    assert_eq!(response.status(), 201);

    let mut usages = Vec::new();
    for _ in 0..2 {
        let response = replay(&stack, CLAUDE).await;
        assert_eq!(response.status(), 200);
        let job_response = job_of(&stack, &response).await;
        let events = crate::streaming::sse_events(&crate::streaming::body_of(response).await);
        assert_eq!(
            events.last().map(|(name, _)| name.as_str()),
            Some("message_stop")
        );
        let delta = events
            .iter()
            .find(|(name, _)| name == "message_delta")
            .map(|(_, data)| data.clone())
            .expect("a message_delta");
        // The result of its tool came last: the model answers it.
        assert_eq!(delta["delta"]["stop_reason"], "end_turn", "{delta}");
        let job: Value = stack
            .get(&format!(
                "/v1/jobs/{}",
                job_response["id"].as_str().expect("id")
            ))
            .await
            .json()
            .await
            .expect("the job");
        assert_eq!(job["provider"], "anthropic");
        usages.push((delta["usage"].clone(), job["usage"].clone()));
    }
    // Everything Claude Code sent that only Anthropic reads reached it, every time.
    assert_eq!(anthropic.calls("cache_control"), 2);
    assert_eq!(anthropic.calls("anthropic-beta"), 2);
    assert_eq!(anthropic.calls("context_management"), 2);
    // The first call wrote the prompt to Anthropic's cache, the second read it; each billed at
    // its rate.
    let ((first, first_job), (second, second_job)) = (&usages[0], &usages[1]);
    let written = first["cache_creation_input_tokens"]
        .as_i64()
        .expect("written");
    assert!(written > 0, "{first}");
    assert_eq!(first["cache_read_input_tokens"], 0, "{first}");
    assert_eq!(
        second["cache_read_input_tokens"].as_i64(),
        Some(written),
        "{second}"
    );
    assert_eq!(first_job["cache_write_tokens"].as_i64(), Some(written));
    assert_eq!(second_job["cached_tokens"].as_i64(), Some(written));
    for (usage, job) in [(first, first_job), (second, second_job)] {
        let count = |field: &str| usage[field].as_i64().expect("a count");
        let prompt = job["prompt_tokens"].as_i64().expect("prompt");
        assert_eq!(
            prompt,
            count("input_tokens")
                + count("cache_creation_input_tokens")
                + count("cache_read_input_tokens"),
            "the prompt's whole count holds its cached parts"
        );
        let expected = (rust_decimal::Decimal::from(count("input_tokens")) * dec("0.003")
            + rust_decimal::Decimal::from(count("cache_creation_input_tokens")) * dec("0.00375")
            + rust_decimal::Decimal::from(count("cache_read_input_tokens")) * dec("0.0003")
            + rust_decimal::Decimal::from(count("output_tokens")) * dec("0.015"))
            / rust_decimal::Decimal::from(1000);
        assert_eq!(
            dec(job["cost"].as_str().expect("a cost")),
            expected.normalize()
        );
    }
    let billed: (i64, i64) = sqlx::query_as(
        "select sum(cache_write_tokens)::bigint, sum(cached_tokens)::bigint from usage_records",
    )
    .fetch_one(&stack.pool)
    .await
    .expect("usage records");
    assert_eq!(billed, (written, written));
    stack.stop().await;
}

fn dec(text: &str) -> rust_decimal::Decimal {
    text.parse().expect("a decimal")
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropics_own_errors_reach_its_clients_unchanged() {
    let stack = Stack::start().await;
    anthropic_account(&stack).await;
    // Anthropic refuses a thinking budget not below max_tokens, in its words.
    let body = json!({ "model": CLAUDE, "max_tokens": 2000,
                       "thinking": { "type": "enabled", "budget_tokens": 4000 },
                       "messages": [{ "role": "user", "content": "Hi" }] });
    let response = messages(&stack, &body, &[]).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("an error");
    assert_eq!(
        error,
        json!({ "type": "error", "request_id": "req_sim", "error": {
            "type": "invalid_request_error",
            "message": "thinking.budget_tokens: must be at least 1024 and less than max_tokens" } })
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_anthropic_falls_back_to_the_fleet_with_the_tool_history() {
    let stack = Stack::start().await;
    let anthropic = anthropic_account(&stack).await;
    anthropic.set_knobs(Knobs {
        error_rate: 1.0,
        error_status: Some(529),
        ..Knobs::default()
    });
    let routes = json!({ "anthropic": CLAUDE, "local": { "ollama": "llama3" } });
    route(
        &stack,
        CLAUDE,
        json!({ "routes": routes, "chain": ["anthropic", "local"] }),
    )
    .await;
    let weather = json!({ "name": "get_weather", "input_schema": {
        "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] } });
    let body = json!({ "model": CLAUDE, "max_tokens": 256, "tools": [weather], "messages": [
        { "role": "user", "content": "Weather in Paris?" },
        { "role": "assistant", "content": [
            { "type": "text", "text": "Checking." },
            { "type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": { "city": "Paris" } }] },
        { "role": "user", "content": [
            { "type": "tool_result", "tool_use_id": "toolu_01", "content": "18°C, clear" }] }] });
    let response = messages(&stack, &body, &[]).await;
    assert_eq!(response.status(), 200);
    let job = job_of(&stack, &response).await;
    let answer: Value = response.json().await.expect("a message");
    assert_eq!(
        answer["content"][0]["text"], "The tool answered: 18°C, clear",
        "{answer}"
    );
    assert_eq!(job["provider"], "local", "{job}");
    assert!(job["attempts"].as_i64() > Some(1), "{job}");
    assert!(
        anthropic.calls("/v1/messages") >= 1,
        "Anthropic was tried first"
    );
    let reason: String = sqlx::query_scalar("select route_reason from jobs where id = $1::uuid")
        .bind(job["id"].as_str().expect("id"))
        .fetch_one(&stack.pool)
        .await
        .expect("the job");
    assert_ne!(
        reason, "primary",
        "the answer says it came from the next provider"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_routes_own_max_tokens_stands_in_when_the_client_gives_none() {
    let stack = Stack::start().await;
    let anthropic = anthropic_account(&stack).await;
    anthropic.set_knobs(Knobs {
        reply_words: Some(200),
        ..Knobs::default()
    });
    let chat =
        json!({ "model": CLAUDE, "messages": [{ "role": "user", "content": "A long story." }] });
    let finish = |answer: Value| answer["choices"][0]["finish_reason"].clone();
    // Anthropic requires a max_tokens: 4,096 when neither the client nor the route gives one.
    let whole: Value = stack
        .post("/openai/v1/chat/completions", &chat)
        .await
        .json()
        .await
        .expect("an answer");
    assert_eq!(finish(whole), "stop");
    let alias = json!({ "routes": { "anthropic": CLAUDE }, "chain": ["anthropic"],
                        "max_tokens": { "anthropic": 16 } });
    route(&stack, CLAUDE, alias).await;
    let shown: Value = stack
        .admin(
            Method::GET,
            &format!("/v1/admin/aliases/{CLAUDE}"),
            &Value::Null,
        )
        .await
        .json()
        .await
        .expect("the alias");
    assert_eq!(shown["max_tokens"], json!({ "anthropic": 16 }));
    eventually("the route's max_tokens cuts the answer", || async {
        let cut: Value = stack
            .post("/openai/v1/chat/completions", &chat)
            .await
            .json()
            .await
            .expect("an answer");
        finish(cut) == "length"
    })
    .await;
    let unrouted = json!({ "routes": { "anthropic": CLAUDE }, "max_tokens": { "openai": 16 } });
    let response = stack
        .admin(
            Method::PUT,
            &format!("/v1/admin/aliases/{CLAUDE}"),
            &unrouted,
        )
        .await;
    assert_eq!(response.status(), 422);
    stack.stop().await;
}
