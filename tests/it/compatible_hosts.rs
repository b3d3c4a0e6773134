//! OpenAI-compatible servers (vLLM, llama.cpp's server, SGLang, TGI, LM Studio) in the fleet beside
//! Ollama hosts: probed as their kind when added, slots held across workers for both kinds, a
//! route naming a model per kind of host, a retry going to the other kind when one fails (tools in
//! the history), hybrid overflow and `local_only` as for any local host, an old server's refusal of
//! `stream_options` and a server's refusal of tools learnt, and the official `openai` and `ollama` packages unchanged whatever the
//! upstream. provider-sim plays the server in its OpenAI-compatible mode (no Ollama API, no
//! Responses API).

use provider_sim::{Knobs, Sim};
use reqwest::Method;
use serde_json::{Value, json};
use tollgate_core::domain::{HostKind, SettingsChange, Strategy};

use crate::fleet::run_jobs;
use crate::harness::{
    Options, Stack, eventually, put_host_of, test_worker_settings, with_openai_fallback,
};
use crate::openai_batches::run_sdk_script_for;

/// What the fleet's OpenAI-compatible servers call the model the stack's Ollama host has as
/// `llama3`.
const VLLM_MODEL: &str = "Qwen/Qwen3-32B";

/// Routes `model` to `local` (per kind of host) and, if given, to OpenAI's `openai`.
async fn route(stack: &Stack, model: &str, local: Value, openai: Option<&str>) {
    let mut routes = json!({ "local": local });
    if let Some(openai) = openai {
        routes["openai"] = json!(openai);
    }
    let path = format!("/v1/admin/aliases/{model}");
    let put = stack
        .admin(Method::PUT, &path, &json!({ "routes": routes }))
        .await;
    assert_eq!(put.status(), 200, "{:?}", put.text().await);
}

/// An OpenAI-compatible sim added to `stack`'s fleet as `name` with `slots`, and `qwen-vllm`
/// routed to it (as [`VLLM_MODEL`]) and, if given, to OpenAI's `openai`.
async fn one_server(stack: &Stack, name: &str, slots: u32, openai: Option<&str>) -> Sim {
    let (vllm, url) = stack.compatible_sim(None).await;
    put_host_of(&stack.pool, HostKind::OpenaiCompatible, name, &url, slots).await;
    route(
        stack,
        "qwen-vllm",
        json!({ "openai_compatible": VLLM_MODEL }),
        openai,
    )
    .await;
    vllm
}

/// Each attempt of `job`: (host, upstream model, outcome).
async fn attempts_of(stack: &Stack, job: &Value) -> Vec<(Option<String>, String, String)> {
    let id = job["id"].as_str().expect("id").parse().expect("job id");
    tollgate_core::db::job_attempts::list(&stack.pool, id)
        .await
        .expect("attempts")
        .into_iter()
        .map(|a| (a.host, a.upstream_model, a.outcome))
        .collect()
}

/// A chat job for `model` that offers a weather tool (the `n`th, each prompt its own), once it
/// is finished.
pub(crate) async fn weather_chat(stack: &Stack, model: &str, n: usize) -> Value {
    let tools = json!([{ "name": "get_weather", "parameters": { "type": "object",
        "properties": { "city": { "type": "string" } }, "required": ["city"] } }]);
    let body = json!({
        "model": model, "tools": tools,
        "messages": [{ "role": "user", "content": format!("Weather in Paris? ({n})") }],
    });
    let job = stack.submit("/v1/chat", &body).await;
    stack
        .wait_until_finished(job["id"].as_str().expect("id"))
        .await
}

fn slow(latency_ms: u64) -> Knobs {
    Knobs {
        latency_ms,
        ..Knobs::default()
    }
}

/// A stack without a worker whose fleet is the stack's Ollama sim (`default`) and an
/// OpenAI-compatible sim (`vllm-1`), `slots` each, with `qwen` routed to both (`llama3` on
/// Ollama, [`VLLM_MODEL`] on the server).
async fn two_kinds(options: Options, slots: u32) -> (Stack, Sim) {
    let stack = Stack::with(Options {
        host_slots: slots,
        worker: false,
        ..options
    })
    .await;
    let (vllm, url) = stack.compatible_sim(None).await;
    put_host_of(
        &stack.pool,
        HostKind::OpenaiCompatible,
        "vllm-1",
        &url,
        slots,
    )
    .await;
    route(
        &stack,
        "qwen",
        json!({ "ollama": "llama3", "openai_compatible": VLLM_MODEL }),
        None,
    )
    .await;
    (stack, vllm)
}

#[tokio::test]
async fn an_ollama_host_and_a_vllm_host_share_the_jobs_each_within_its_slots_across_two_workers() {
    let (mut stack, vllm) = two_kinds(Options::default(), 2).await;
    stack.ollama.set_knobs(slow(300));
    vllm.set_knobs(slow(300));
    stack.add_worker(test_worker_settings()).await;
    stack.add_worker(test_worker_settings()).await;

    let jobs = run_jobs(&stack, "qwen", 12).await;

    let mut on = std::collections::HashMap::<String, usize>::new();
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job}");
        let attempts = attempts_of(&stack, job).await;
        let (host, upstream, _) = attempts.last().expect("an attempt").clone();
        let host = host.expect("a fleet host");
        // Each kind of host ran the model the route names for it.
        let expected = if host == "vllm-1" {
            VLLM_MODEL
        } else {
            "llama3"
        };
        assert_eq!(upstream, expected, "{job}");
        *on.entry(host).or_default() += 1;
    }
    assert!(on.get("vllm-1").copied().unwrap_or(0) > 0, "{on:?}");
    assert!(on.get("default").copied().unwrap_or(0) > 0, "{on:?}");
    // Two workers, two slots per host: never more than two calls at once on either.
    assert!(
        stack.ollama.peak_in_flight() <= 2,
        "{}",
        stack.ollama.peak_in_flight()
    );
    assert!(vllm.peak_in_flight() <= 2, "{}", vllm.peak_in_flight());
    assert!(vllm.peak_in_flight() >= 1);
    // Chat Completions only: the server has no Responses API, and was never asked for it.
    assert_eq!(vllm.calls("/v1/responses"), 0);
    assert!(vllm.calls("/v1/chat/completions") > 0);
    // What the listing says: the route per kind, and which host of each kind has its model.
    let models: Value = stack.get("/v1/models").await.json().await.expect("models");
    let qwen = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|m| m["model"] == "qwen")
        .expect("qwen listed");
    let steps = qwen["providers"].as_array().expect("providers");
    let on_kind = |kind: &str| {
        steps
            .iter()
            .find(|s| s["host_kind"] == kind)
            .unwrap_or_else(|| panic!("a {kind} step in {qwen}"))
    };
    assert_eq!(on_kind("ollama")["upstream_model"], "llama3");
    assert_eq!(on_kind("openai_compatible")["upstream_model"], VLLM_MODEL);
    assert_eq!(on_kind("openai_compatible")["hosts"], json!(["vllm-1"]));
    let hosts = models["hosts"].as_array().expect("hosts");
    assert!(
        hosts
            .iter()
            .any(|h| h["name"] == "vllm-1" && h["kind"] == "openai_compatible")
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_host_is_probed_as_its_kind_when_added_and_keeps_its_key_to_itself() {
    let stack = Stack::start().await;
    let (_vllm, url) = stack.compatible_sim(Some("vk-secret-4242")).await;
    let admin = &stack;
    let add = |body: Value| async move {
        let answer = admin.admin(Method::POST, "/v1/admin/hosts", &body).await;
        let status = answer.status().as_u16();
        (status, answer.json::<Value>().await.unwrap_or(Value::Null))
    };
    let server = |name: &str, key: Option<&str>| {
        let mut body = json!({
            "name": name, "kind": "openai_compatible", "base_url": url, "slots": 4,
        });
        if let Some(key) = key {
            body["api_key"] = json!(key);
        }
        body
    };

    // Without its key the server does not answer its model list: refused, naming base_url.
    let (status, problem) = add(server("vllm-1", None)).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["field"], "base_url", "{problem}");
    // An OpenAI-compatible server is not Ollama: it has no /api/version.
    let (status, problem) = add(json!({
        "name": "not-ollama", "base_url": url.trim_end_matches("/v1"), "slots": 4,
    }))
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["field"], "base_url");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Ollama")),
        "{problem}"
    );
    // Nobody listening.
    let (status, problem) = add(json!({
        "name": "gone", "kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1",
        "slots": 4,
    }))
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["field"], "base_url");
    // A kind that does not exist, and a key for an Ollama host.
    let (status, _) = add(json!({
        "name": "x", "kind": "anthropic", "base_url": url, "slots": 4,
    }))
    .await;
    assert_eq!(status, 422);
    let (status, problem) = add(json!({
        "name": "x", "base_url": url, "slots": 4, "api_key": "k",
    }))
    .await;
    assert_eq!(status, 422);
    assert_eq!(problem["field"], "api_key");
    // A wrong key: refused, and the key it was given (which the server echoes) is not repeated.
    let (status, problem) = add(server("vllm-1", Some("vk-wrong-0000"))).await;
    assert_eq!(status, 422, "{problem}");
    assert!(!problem.to_string().contains("vk-wrong"), "{problem}");
    // With its key: added, the key shown only by its last four characters.
    let (status, host) = add(server("vllm-1", Some("vk-secret-4242"))).await;
    assert_eq!(status, 201, "{host}");
    assert_eq!(host["kind"], "openai_compatible");
    assert_eq!(host["api_key"], json!({ "set": true, "last4": "4242" }));
    assert!(!host.to_string().contains("vk-secret"), "{host}");
    let sealed: Option<Vec<u8>> =
        sqlx::query_scalar("select api_key_sealed from hosts where name = 'vllm-1'")
            .fetch_one(&stack.pool)
            .await
            .expect("sealed");
    let sealed = sealed.expect("a key is stored");
    assert!(!String::from_utf8_lossy(&sealed).contains("vk-secret"));
    // A host added disabled is not asked until it is enabled.
    let (status, _) = add(json!({
        "name": "later", "kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1",
        "slots": 4, "enabled": false,
    }))
    .await;
    assert_eq!(status, 201);
    let enable = stack
        .admin(
            Method::PATCH,
            "/v1/admin/hosts/later",
            &json!({ "enabled": true }),
        )
        .await;
    assert_eq!(enable.status(), 422);
    // Models are pulled on Ollama hosts only.
    let pull = stack
        .admin(
            Method::POST,
            "/v1/models/pull",
            &json!({ "model": "llama3", "host": "vllm-1" }),
        )
        .await;
    assert_eq!(pull.status(), 422);
    let problem: Value = pull.json().await.expect("problem");
    assert_eq!(problem["field"], "host", "{problem}");
    // The audit log has the host, not its key.
    let audit: Value = stack
        .get("/v1/admin/audit")
        .await
        .json()
        .await
        .expect("audit");
    assert!(!audit.to_string().contains("vk-secret"), "{audit}");
    stack.stop().await;
}

#[tokio::test]
async fn a_job_that_fails_on_the_vllm_host_is_retried_on_the_ollama_host_with_its_tool_history() {
    let (mut stack, vllm) = two_kinds(Options::default(), 4).await;
    vllm.set_knobs(Knobs {
        error_rate: 1.0,
        ..Knobs::default()
    });
    stack.add_worker(test_worker_settings()).await;
    let conversation = json!([
        { "role": "user", "content": "What is the weather in Paris?" },
        { "role": "assistant", "content": [{
            "type": "tool_call", "id": "call_1", "name": "get_weather",
            "arguments": "{\"city\":\"Paris\"}",
        }]},
        { "role": "tool", "content": [
            { "type": "tool_result", "call_id": "call_1", "content": "18°C" }] },
    ]);
    let tools = json!([{ "name": "get_weather", "parameters": { "type": "object",
        "properties": { "city": { "type": "string" } }, "required": ["city"] } }]);
    // At once, so that the least-loaded choice spreads them over both hosts: some go to the
    // failing server first.
    stack.ollama.set_knobs(slow(300));
    let body = json!({ "model": "qwen", "messages": conversation, "tools": tools });
    let submitted =
        futures::future::join_all((0..6).map(|_| stack.submit("/v1/chat", &body))).await;
    let mut moved = 0;
    for job in submitted {
        let job = stack
            .wait_until_finished(job["id"].as_str().expect("id"))
            .await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let attempts = attempts_of(&stack, &job).await;
        let (last_host, last_model, last_outcome) = attempts.last().expect("attempt").clone();
        assert_eq!(last_host.as_deref(), Some("default"), "{attempts:?}");
        assert_eq!(last_model, "llama3");
        assert_eq!(last_outcome, "succeeded");
        // Every call before it went to the server, ran its model and failed (a retry goes to the
        // other host when that one has a slot free, else back to the server).
        let before = &attempts[..attempts.len() - 1];
        for (host, model, outcome) in before {
            assert_eq!(host.as_deref(), Some("vllm-1"), "{attempts:?}");
            assert_eq!(model, VLLM_MODEL);
            assert_eq!(outcome, "transient_error");
        }
        if !before.is_empty() {
            moved += 1;
        }
    }
    assert!(moved > 0, "no job was tried on the failing server first");
    assert!(vllm.calls("/v1/chat/completions") >= moved);
    stack.stop().await;
}

#[tokio::test]
async fn a_vllm_host_overflows_to_the_cloud_under_hybrid_but_never_for_a_local_only_tenant() {
    let options = Options {
        settings: SettingsChange {
            ai_provider: Some(Strategy::Hybrid),
            ai_overflow_wait_ms: Some(150),
            ..SettingsChange::default()
        },
        ..Options::default()
    };
    let (mut stack, vllm) = two_kinds(options, 1).await;
    route(
        &stack,
        "qwen-vllm",
        json!({ "openai_compatible": VLLM_MODEL }),
        Some("gpt-4.1-mini"),
    )
    .await;
    vllm.set_knobs(slow(1_200));
    stack.add_worker(test_worker_settings()).await;

    let jobs = run_jobs(&stack, "qwen-vllm", 4).await;
    let providers: Vec<&str> = jobs
        .iter()
        .map(|j| j["provider"].as_str().unwrap_or_default())
        .collect();
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    assert_eq!(
        providers.iter().filter(|p| **p == "local").count(),
        1,
        "{providers:?}"
    );
    assert_eq!(providers.iter().filter(|p| **p == "openai").count(), 3);
    assert_eq!(
        jobs.iter()
            .filter(|j| j["route_reason"] == "overflow")
            .count(),
        3
    );
    assert_eq!(vllm.peak_in_flight(), 1);

    let id = stack.tenant_id("acme").await;
    let local = stack
        .admin(
            Method::PATCH,
            &format!("/v1/admin/tenants/{id}"),
            &json!({ "data_policy": "local_only" }),
        )
        .await;
    assert_eq!(local.status(), 200);
    let cloud_before =
        stack.openai.calls("/v1/responses") + stack.openai.calls("/v1/chat/completions");
    // The api and worker take up the policy within a refresh; then nothing overflows.
    eventually("the tenant's policy is in force", || async {
        let job = stack.generate("qwen-vllm", "policy check").await;
        job["data_policy"] == "local_only"
    })
    .await;
    let jobs = run_jobs(&stack, "qwen-vllm", 3).await;
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["provider"], "local", "{job}");
        let attempts = attempts_of(&stack, job).await;
        assert!(attempts.iter().all(|a| a.0.as_deref() == Some("vllm-1")));
    }
    let cloud_after =
        stack.openai.calls("/v1/responses") + stack.openai.calls("/v1/chat/completions");
    assert_eq!(
        cloud_after, cloud_before,
        "a local_only job reached the cloud"
    );
    stack.stop().await;
}

#[tokio::test]
async fn an_old_server_is_streamed_to_without_stream_options_once_it_refused_them() {
    let stack = Stack::start().await;
    let vllm = one_server(&stack, "old-1", 4, None).await;
    vllm.set_old_server(true);
    let stream = |prompt: &'static str| {
        let stack = &stack;
        async move {
            let body = json!({
                "model": "qwen-vllm", "stream": true, "max_tokens": 5,
                "messages": [{ "role": "user", "content": prompt }],
            });
            let answer = stack.post("/openai/v1/chat/completions", &body).await;
            assert_eq!(answer.status(), 200);
            answer.text().await.expect("stream")
        }
    };
    let first = stream("first").await;
    assert!(first.contains("[DONE]"), "{first}");
    assert!(first.contains("\"content\""), "{first}");
    // Refused once (stream_options), asked again without.
    assert_eq!(vllm.calls("/v1/chat/completions"), 2);
    let second = stream("second").await;
    assert!(second.contains("[DONE]"), "{second}");
    assert_eq!(vllm.calls("/v1/chat/completions"), 3);
    let whole = stack
        .generate("qwen-vllm", "a whole answer, not streamed")
        .await;
    assert_eq!(whole["status"], "succeeded", "{whole}");
    // Streamed without usage, the tokens are estimated: still billed.
    let unbilled: i64 = sqlx::query_scalar(
        "select count(*) from jobs where status = 'succeeded' and completion_tokens is null",
    )
    .fetch_one(&stack.pool)
    .await
    .expect("count");
    assert_eq!(unbilled, 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_and_ollama_packages_reach_a_model_served_by_a_vllm_host() {
    let stack = Stack::start().await;
    let vllm = one_server(&stack, "vllm-1", 8, None).await;
    vllm.set_knobs(Knobs {
        token_delay_ms: 15,
        ..Knobs::default()
    });
    let openai = run_sdk_script_for(&stack, "openai/tools.py", &["qwen-vllm"]).await;
    assert_eq!(
        openai["refusals"]["unoffered_choice"], "tool_choice",
        "{openai}"
    );
    let ollama = run_sdk_script_for(&stack, "ollama/tools.py", &["qwen-vllm"]).await;
    assert_eq!(ollama["qwen-vllm"]["call"], "get_weather", "{ollama}");
    assert!(vllm.calls("/v1/chat/completions") > 5);
    assert_eq!(vllm.calls("/v1/responses"), 0);
    let failed: i64 = sqlx::query_scalar("select count(*) from jobs where status <> 'succeeded'")
        .fetch_one(&stack.pool)
        .await
        .expect("count");
    assert_eq!(failed, 0);
    stack.stop().await;
}

#[tokio::test]
async fn a_server_without_tool_calling_is_passed_over_for_tool_calls_and_still_serves_the_rest() {
    let stack = Stack::with(with_openai_fallback(SettingsChange::default())).await;
    let vllm = one_server(&stack, "vllm-1", 4, Some("gpt-4.1-mini")).await;
    vllm.set_tool_calling(false);
    for n in 0..3 {
        let job = weather_chat(&stack, "qwen-vllm", n).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["provider"], "openai", "{job}");
        assert_eq!(job["route_reason"], "fallback", "{job}");
        if n == 0 {
            // The server's refusal is on record, then OpenAI's answer.
            let attempts = attempts_of(&stack, &job).await;
            assert_eq!(attempts[0].0.as_deref(), Some("vllm-1"), "{attempts:?}");
            assert_eq!(attempts[0].2, "permanent_error");
            assert_eq!(attempts.last().expect("last").2, "succeeded");
        }
    }
    // Learnt from its first refusal: the server was not asked for tools again.
    assert_eq!(vllm.calls("tools_refused"), 1);
    // What needs no tools still goes to the server.
    let plain = stack.generate("qwen-vllm", "no tools here").await;
    assert_eq!(plain["status"], "succeeded", "{plain}");
    assert_eq!(plain["provider"], "local", "{plain}");
    let attempts = attempts_of(&stack, &plain).await;
    assert_eq!(attempts[0].0.as_deref(), Some("vllm-1"));
    stack.stop().await;
}
