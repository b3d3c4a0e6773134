//! Named providers: cloud accounts beside the fleet (`local`) — a second OpenAI account billed at
//! its own prices, an OpenAI-compatible account (Azure's way: `api-version` and `api-key`) taking
//! hybrid's overflow from a vLLM host but never a `local_only` tenant's job, a model's own chain,
//! the registry refusing what it cannot keep, and today's settings migrated to the registry with
//! the same answers.

use std::borrow::Cow;

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::PgPool;
use tollgate_core::domain::{
    Capabilities, DataPolicy, HostKind, ProviderName, RouteInput, SettingsChange, Strategy,
};

use crate::billing::{admin_json, at, decimal};
use crate::compatible_hosts::weather_chat;
use crate::fleet::run_jobs;
use crate::harness::{
    OPENAI_KEY, Options, Stack, drop_database, empty_database, eventually, put_host_of,
    test_worker_settings,
};
use crate::images::{PIXEL, pixel, seen};

/// The status and body of an admin call expected to be refused.
async fn refused(stack: &Stack, method: Method, path: &str, body: &Value) -> (u16, Value) {
    let response = stack.admin(method, path, body).await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("problem JSON"))
}

/// An OpenAI-compatible sim added to `stack` as the cloud account `groq`.
async fn groq(stack: &Stack) -> provider_sim::Sim {
    let (sim, url) = stack.compatible_sim(None).await;
    let account = json!({ "name": "groq", "kind": "openai_compatible", "base_url": url });
    admin_json(stack, Method::POST, "/v1/admin/providers", &account).await;
    sim
}

async fn add_price(stack: &Stack, provider: &str, model: &str, input: &str, output: &str) {
    let since = Utc::now() - Duration::hours(1);
    let price = json!({ "provider": provider, "model": model, "input_per_1k": input,
                        "output_per_1k": output, "effective_from": since });
    admin_json(stack, Method::POST, "/v1/admin/prices", &price).await;
}

#[tokio::test]
async fn two_openai_accounts_with_different_prices_for_one_model_bill_apart() {
    let stack = Stack::start().await;
    let (eu, eu_url) = stack.extra_sim().await;
    let created = admin_json(
        &stack,
        Method::POST,
        "/v1/admin/providers",
        &json!({ "name": "openai-eu", "kind": "openai", "base_url": format!("{eu_url}/v1"),
                 "api_key": OPENAI_KEY, "max_concurrency": 8 }),
    )
    .await;
    assert_eq!(created["api_key"]["last4"], "cdef");
    assert!(!created.to_string().contains(OPENAI_KEY), "{created}");
    add_price(&stack, "openai", "gpt-4.1-mini", "0.001", "0.002").await;
    add_price(&stack, "openai-eu", "gpt-4.1-mini", "0.005", "0.011").await;
    for (alias, provider) in [("mini-us", "openai"), ("mini-eu", "openai-eu")] {
        let body = json!({ "routes": { provider: "gpt-4.1-mini" }, "chain": [provider] });
        admin_json(
            &stack,
            Method::PUT,
            &format!("/v1/admin/aliases/{alias}"),
            &body,
        )
        .await;
    }

    let us = stack.generate("mini-us", "Describe a red bicycle").await;
    let eu_job = stack.generate("mini-eu", "Describe a red bicycle").await;
    assert_eq!(us["status"], "succeeded", "{us}");
    assert_eq!(eu_job["status"], "succeeded", "{eu_job}");
    assert_eq!(us["provider"], "openai");
    assert_eq!(eu_job["provider"], "openai-eu");
    assert!(
        eu.calls("/v1/responses") >= 1,
        "an openai account speaks Responses"
    );
    let cost = |job: &Value, input: &str, output: &str| {
        let tokens = |kind: &str| job["usage"][kind].as_i64().expect("tokens");
        at(tokens("prompt_tokens"), input) + at(tokens("completion_tokens"), output)
    };
    assert_eq!(decimal(&us["usage"]["cost"]), cost(&us, "0.001", "0.002"));
    assert_eq!(
        decimal(&eu_job["usage"]["cost"]),
        cost(&eu_job, "0.005", "0.011")
    );

    let spend = admin_json(&stack, Method::GET, "/v1/admin/spend", &Value::Null).await;
    let spent = |provider: &str| {
        let rows = spend["providers"].as_array().expect("providers");
        let row = rows.iter().find(|p| p["provider"] == provider);
        row.map(|p| decimal(&p["cost"]))
    };
    assert_eq!(spent("openai"), Some(decimal(&us["usage"]["cost"])));
    assert_eq!(spent("openai-eu"), Some(decimal(&eu_job["usage"]["cost"])));
    stack.stop().await;
}

#[tokio::test]
async fn a_vllm_host_overflows_to_an_azure_style_account_but_never_for_a_local_only_tenant() {
    let mut stack = Stack::with(Options {
        host_slots: 1,
        worker: false,
        ..Options::default()
    })
    .await;
    let (vllm, vllm_url) = stack.compatible_sim(None).await;
    put_host_of(
        &stack.pool,
        HostKind::OpenaiCompatible,
        "vllm-1",
        &vllm_url,
        1,
    )
    .await;
    let (azure, azure_url) = stack.compatible_sim(Some("azure-key-7788")).await;
    admin_json(
        &stack,
        Method::POST,
        "/v1/admin/providers",
        &json!({ "name": "azure-eu", "kind": "openai_compatible", "base_url": azure_url,
                 "api_version": "2024-10-21", "key_header": "api-key",
                 "api_key": "azure-key-7788" }),
    )
    .await;
    let routes = json!({ "local": { "openai_compatible": "Qwen/Qwen3-32B" },
                         "azure-eu": "Qwen/Qwen3-32B" });
    admin_json(
        &stack,
        Method::PUT,
        "/v1/admin/aliases/qwen",
        &json!({ "routes": routes }),
    )
    .await;
    stack
        .patch_settings(
            &json!({ "ai_provider": "hybrid", "ai_hybrid_cloud": "azure-eu",
                                 "ai_overflow_wait_ms": 150 }),
        )
        .await;
    vllm.set_knobs(provider_sim::Knobs {
        latency_ms: 1_200,
        ..Default::default()
    });
    stack.add_worker(test_worker_settings()).await;

    let jobs = run_jobs(&stack, "qwen", 4).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    let on = |provider: &str| jobs.iter().filter(|j| j["provider"] == provider).count();
    assert_eq!(on("local"), 1, "{jobs:?}");
    assert_eq!(on("azure-eu"), 3, "{jobs:?}");
    let overflowed = jobs.iter().filter(|j| j["route_reason"] == "overflow");
    assert_eq!(overflowed.count(), 3);
    assert_eq!(vllm.peak_in_flight(), 1);
    // Azure's way: the key as `api-key`, the version on every call, Chat Completions only.
    let calls = azure.calls("/v1/chat/completions");
    assert_eq!(calls, 3);
    assert_eq!(azure.calls("?api-version=2024-10-21"), calls);
    assert_eq!(azure.calls("api-key"), calls);
    assert_eq!(azure.calls("/v1/responses"), 0);

    let id = stack.tenant_id("acme").await;
    let path = format!("/v1/admin/tenants/{id}");
    admin_json(
        &stack,
        Method::PATCH,
        &path,
        &json!({ "data_policy": "local_only" }),
    )
    .await;
    eventually("the tenant's policy is in force", || async {
        let job = stack.generate("qwen", "policy check").await;
        job["data_policy"] == "local_only"
    })
    .await;
    let before = azure.calls("/v1/chat/completions");
    let jobs = run_jobs(&stack, "qwen", 3).await;
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["provider"], "local", "{job}");
    }
    assert_eq!(
        azure.calls("/v1/chat/completions"),
        before,
        "a local_only job reached a cloud account"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_models_own_chain_runs_in_its_order_and_falls_back_along_it() {
    let stack = Stack::start().await;
    let groq = groq(&stack).await;
    let body = json!({ "routes": { "groq": "meta-llama/Llama-3.1-8B-Instruct",
                                   "ollama": "llama3", "openai": "gpt-4.1-mini" },
                       "chain": ["groq", "local"] });
    let alias = admin_json(&stack, Method::PUT, "/v1/admin/aliases/fast", &body).await;
    assert_eq!(alias["chain"], json!(["groq", "local"]));
    assert_eq!(alias["routes"]["groq"], "meta-llama/Llama-3.1-8B-Instruct");

    let first = stack.generate("fast", "Describe a red bicycle").await;
    assert_eq!(first["provider"], "groq", "{first}");
    assert_eq!(first["route_reason"], "active");
    groq.set_knobs(provider_sim::Knobs {
        error_rate: 1.0,
        ..Default::default()
    });
    let second = stack.generate("fast", "Describe a blue bicycle").await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(second["provider"], "local", "{second}");
    assert_eq!(second["route_reason"], "fallback");
    // OpenAI has a route, but the chain does not name it.
    assert_eq!(stack.openai.calls("/v1/responses"), 0);
    stack.stop().await;
}

#[tokio::test]
async fn a_conversation_with_an_image_falls_back_between_a_cloud_account_and_the_fleet_whole() {
    let stack = Stack::start().await;
    let groq = groq(&stack).await;
    let failing = provider_sim::Knobs {
        error_rate: 1.0,
        ..Default::default()
    };
    let conversation = json!([
        { "role": "user", "content": [
            { "type": "text", "text": "Where was this taken?" },
            { "type": "image", "url": format!("data:image/png;base64,{PIXEL}") }] },
        { "role": "assistant", "content": "In a small room." },
        { "role": "user", "content": "And what does it show?" },
    ]);
    // A new alias for each chain: a worker learns of one at its first job (an alias changed in
    // place reaches it within a settings refresh).
    let ask = |model: &'static str, chain: Value| {
        let stack = &stack;
        let conversation = conversation.clone();
        async move {
            let routes = json!({ "groq": "Qwen/Qwen3-32B", "ollama": "llava" });
            let alias = json!({ "routes": routes, "chain": chain });
            let path = format!("/v1/admin/aliases/{model}");
            admin_json(stack, Method::PUT, &path, &alias).await;
            let body = json!({ "model": model, "messages": conversation });
            let job = stack.submit("/v1/chat", &body).await;
            stack
                .wait_until_finished(job["id"].as_str().expect("id"))
                .await
        }
    };

    // The cloud account fails: the fleet gets the whole conversation, the image's bytes included.
    groq.set_knobs(failing.clone());
    let to_fleet = ask("eyes", json!(["groq", "local"])).await;
    assert_eq!(to_fleet["status"], "succeeded", "{to_fleet}");
    assert_eq!(to_fleet["provider"], "local");
    assert_eq!(to_fleet["route_reason"], "fallback");
    let said = to_fleet["result"]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(said.contains(&seen(&pixel())), "{to_fleet}");
    assert!(groq.calls("/v1/chat/completions") >= 1);

    // And the other way round.
    groq.set_knobs(provider_sim::Knobs::default());
    stack.ollama.set_knobs(failing);
    let to_cloud = ask("eyes-back", json!(["local", "groq"])).await;
    assert_eq!(to_cloud["status"], "succeeded", "{to_cloud}");
    assert_eq!(to_cloud["provider"], "groq");
    assert_eq!(to_cloud["route_reason"], "fallback");
    let said = to_cloud["result"]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(said.contains(&seen(&pixel())), "{to_cloud}");
    stack.stop().await;
}

#[tokio::test]
async fn an_account_without_tool_calling_is_passed_over_for_tool_calls_and_serves_the_rest() {
    let stack = Stack::start().await;
    let groq = groq(&stack).await;
    groq.set_tool_calling(false);
    let routes = json!({ "groq": "Qwen/Qwen3-32B", "openai": "gpt-4.1-mini" });
    let alias = json!({ "routes": routes, "chain": ["groq", "openai"] });
    admin_json(&stack, Method::PUT, "/v1/admin/aliases/agent", &alias).await;
    for n in 0..3 {
        let job = weather_chat(&stack, "agent", n).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["provider"], "openai", "{job}");
        assert_eq!(job["route_reason"], "fallback", "{job}");
    }
    // Learnt from its first refusal: the account was not asked for tools again.
    assert_eq!(groq.calls("tools_refused"), 1);
    let plain = stack.generate("agent", "no tools here").await;
    assert_eq!(plain["status"], "succeeded", "{plain}");
    assert_eq!(plain["provider"], "groq", "{plain}");
    stack.stop().await;
}

#[tokio::test]
async fn the_registry_refuses_what_it_cannot_keep_and_says_who_uses_a_provider() {
    let stack = Stack::start().await;
    let post = |body: Value| {
        let stack = &stack;
        async move { refused(stack, Method::POST, "/v1/admin/providers", &body).await }
    };
    let (status, problem) = post(json!({ "name": "x", "kind": "bedrock" })).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("kind")));
    let azure_style = json!({ "name": "claude", "kind": "anthropic", "key_header": "api-key" });
    let (status, problem) = post(azure_style).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (422, Some("key_header"))
    );
    let (status, problem) = post(json!({ "name": "groq", "kind": "openai_compatible" })).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("base_url")));
    let (status, problem) = post(json!({ "name": "Groq!", "kind": "openai" })).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("name")));
    let (status, problem) = post(json!({ "name": "openai", "kind": "openai" })).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("provider_exists"))
    );
    let (status, problem) = post(json!({ "name": "local", "kind": "openai" })).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("name")));

    let groq = json!({ "name": "groq", "kind": "openai_compatible",
                       "base_url": "https://api.groq.com/openai/v1", "api_key": "gsk-secret-9876" });
    admin_json(&stack, Method::POST, "/v1/admin/providers", &groq).await;
    let (status, problem) = refused(
        &stack,
        Method::PUT,
        "/v1/admin/aliases/fast",
        &json!({ "routes": { "nope": "x" } }),
    )
    .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (422, Some("routes.nope"))
    );
    let (status, problem) = refused(
        &stack,
        Method::PUT,
        "/v1/admin/aliases/fast",
        &json!({ "routes": { "groq": "llama-3.3-70b" }, "chain": ["groq", "openai"] }),
    )
    .await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("chain[1]")));
    let body = json!({ "routes": { "groq": "llama-3.3-70b", "ollama": "llama3" } });
    admin_json(&stack, Method::PUT, "/v1/admin/aliases/fast", &body).await;
    add_price(&stack, "groq", "llama-3.3-70b", "0.0005", "0.0008").await;
    stack
        .patch_settings(&json!({ "ai_hybrid_cloud": "groq" }))
        .await;
    let (status, problem) = refused(
        &stack,
        Method::PATCH,
        "/v1/admin/settings",
        &json!({ "ai_fallback_provider": "nope" }),
    )
    .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (422, Some("ai_fallback_provider"))
    );

    let (status, problem) = refused(
        &stack,
        Method::DELETE,
        "/v1/admin/providers/groq",
        &Value::Null,
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("provider_in_use"))
    );
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("fast") && detail.contains("ai_hybrid_cloud"),
        "{detail}"
    );
    let (status, _) = refused(
        &stack,
        Method::DELETE,
        "/v1/admin/providers/local",
        &Value::Null,
    )
    .await;
    assert_eq!(status, 422);

    let body = json!({ "routes": { "ollama": "llama3" } });
    admin_json(&stack, Method::PUT, "/v1/admin/aliases/fast", &body).await;
    stack
        .patch_settings(&json!({ "ai_hybrid_cloud": "openai" }))
        .await;
    let response = stack
        .admin(Method::DELETE, "/v1/admin/providers/groq", &Value::Null)
        .await;
    assert_eq!(response.status(), 204);
    let prices: i64 = sqlx::query_scalar("select count(*) from prices where provider = 'groq'")
        .fetch_one(&stack.pool)
        .await
        .expect("count");
    assert_eq!(prices, 0, "its prices go with it");

    let listed = admin_json(&stack, Method::GET, "/v1/admin/providers", &Value::Null).await;
    let names: Vec<&str> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["local", "openai"]);
    let audit = admin_json(&stack, Method::GET, "/v1/admin/audit", &Value::Null).await;
    let text = audit.to_string();
    assert!(
        text.contains("provider.create") && text.contains("provider.delete"),
        "{text}"
    );
    assert!(
        text.contains("9876") && !text.contains("gsk-secret-9876"),
        "{text}"
    );
    stack.stop().await;
}

/// A database of its own migrated up to the last migration before the registry, and its name.
async fn database_before_the_registry() -> (PgPool, String) {
    let (pool, name) = empty_database().await;
    let all = &tollgate_core::db::MIGRATOR;
    let before = sqlx::migrate::Migrator {
        migrations: Cow::Owned(
            all.migrations
                .iter()
                .filter(|m| m.version < 24)
                .cloned()
                .collect(),
        ),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    before
        .run(&pool)
        .await
        .expect("migrations before the registry");
    (pool, name)
}

#[tokio::test]
async fn todays_settings_become_the_registry_with_the_same_answers() {
    let (pool, name) = database_before_the_registry().await;
    // An operator's deployment as it stood: OpenAI active with its key, the fleet its fallback,
    // a route on each, prices on each, and a job the fleet ran.
    let statements = [
        "update settings set ai_provider = 'openai', ai_fallback_provider = 'local',
                openai_api_key_sealed = '\\x0102'::bytea, openai_api_key_last4 = 'wxyz',
                openai_base_url = 'https://proxy.internal/v1', openai_max_concurrency = 40",
        "insert into prices (provider, model, input_per_1k, output_per_1k, effective_from)
         values ('ollama', 'qwen3', 0.0001, 0.0002, now() - interval '1 day')",
        "insert into model_routes (model, provider, host_kind, upstream_model)
         values ('qwen', 'ollama', 'ollama', 'qwen3'), ('qwen', 'openai', null, 'gpt-4.1-mini')",
        "insert into hosts (id, name, kind, base_url, slots, bulk_slots, enabled)
         values (gen_random_uuid(), 'gpu-1', 'ollama', 'http://gpu-1:11434', 4, 3, true)",
    ];
    for statement in statements {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .expect(statement);
    }
    tollgate_core::db::migrate(&pool)
        .await
        .expect("the registry's migration");

    let runtime = tollgate_core::runtime::RuntimeWatch::load(pool.clone())
        .await
        .expect("runtime")
        .current();
    let openai = runtime
        .clouds
        .get(&ProviderName::OPENAI)
        .expect("the account");
    assert_eq!(openai.base_url, "https://proxy.internal/v1");
    assert_eq!(openai.max_concurrency, 40);
    let key = openai.api_key.as_ref().expect("its key");
    assert_eq!(
        (key.sealed.as_slice(), key.last4.as_str()),
        (&[1u8, 2][..], "wxyz")
    );
    assert_eq!(
        runtime.settings.ai_provider,
        Strategy::Provider(ProviderName::OPENAI)
    );
    assert_eq!(
        runtime.settings.ai_fallback_provider,
        Some(ProviderName::LOCAL)
    );
    // The same answer as before: OpenAI first with its model, then the fleet with its own.
    let job = RouteInput {
        policy: DataPolicy::Any,
        bulk: false,
        batch_overflow: false,
        share_draw: 0,
        needs: Capabilities::NONE,
    };
    let route = runtime.route("qwen", job, |p| runtime.is_configured(p));
    let steps: Vec<(&str, &str)> = route
        .candidates
        .iter()
        .map(|c| (c.provider.as_str(), c.upstream_model.as_str()))
        .collect();
    assert_eq!(steps, [("openai", "gpt-4.1-mini"), ("local", "qwen3")]);
    let local_only = runtime.route(
        "qwen",
        RouteInput {
            policy: DataPolicy::LocalOnly,
            ..job
        },
        |p| runtime.is_configured(p),
    );
    assert_eq!(local_only.candidates.len(), 1);
    assert!(local_only.withheld);
    let price = runtime.prices.at(ProviderName::LOCAL, "qwen3", Utc::now());
    assert_eq!(
        price.map(|p| p.input_per_1k),
        Some("0.0001".parse().expect("decimal"))
    );
    let seeded = runtime
        .prices
        .at(ProviderName::OPENAI, "gpt-4.1-mini", Utc::now());
    assert!(seeded.is_some(), "the seeded prices keep their provider");
    let change = SettingsChange {
        ai_provider: Some(Strategy::Hybrid),
        ..SettingsChange::default()
    };
    let after = tollgate_core::db::settings::update(&pool, change, |_, _| None)
        .await
        .expect("update")
        .expect("valid");
    assert_eq!(after.settings.ai_hybrid_cloud, ProviderName::OPENAI);
    pool.close().await;
    drop_database(&name).await;
}
