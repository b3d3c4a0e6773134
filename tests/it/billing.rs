//! Billing: exact costs at the price in force, one bill per job however often its message comes,
//! unpriced usage made visible, usage endpoints scoped to the tenant and served from the rollup,
//! the operator's spend, and quotas that hold under concurrent bursts.

use std::str::FromStr as _;

use futures::future::join_all;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate_core::domain::{JobId, Role};

use crate::harness::{Stack, WAIT, client, idle};

pub(crate) fn decimal(value: &Value) -> Decimal {
    Decimal::from_str(value.as_str().expect("a decimal string")).expect("decimal")
}

/// `tokens` at a per-1K price.
pub(crate) fn at(tokens: i64, per_1k: &str) -> Decimal {
    Decimal::from(tokens) * Decimal::from_str(per_1k).expect("price") / Decimal::from(1000)
}

async fn count(stack: &Stack, sql: &str, id: JobId) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(&stack.pool)
        .await
        .expect("count")
}

pub(crate) async fn admin_json(stack: &Stack, method: Method, path: &str, body: &Value) -> Value {
    let response = stack.admin(method, path, body).await;
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

/// Adds to a tenant's rollup directly: `tokens` of prompt and `cost` on `day` (today when `None`),
/// as if jobs had finished then.
async fn record_usage(stack: &Stack, tenant: &str, day: Option<&str>, tokens: i64, cost: &str) {
    sqlx::query(
        "insert into usage_daily (tenant_id, day, model, route_reason, shard, requests,
                                  prompt_tokens, cost)
         values ($1::uuid, coalesce($2::date, (now() at time zone 'utc')::date), 'llama3',
                 'active', floor(random() * 32)::smallint, 1, $3, $4::numeric)
         on conflict (tenant_id, day, model, route_reason, shard) do update
            set requests = usage_daily.requests + 1,
                prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens,
                cost = usage_daily.cost + excluded.cost",
    )
    .bind(tenant)
    .bind(day)
    .bind(tokens)
    .bind(cost)
    .execute(&stack.pool)
    .await
    .expect("usage");
}

/// `GET` or `PUT` a tenant's quota as the admin.
async fn tenant_quota(stack: &Stack, tenant: &str, method: Method, body: &Value) -> Value {
    admin_json(
        stack,
        method,
        &format!("/v1/admin/tenants/{tenant}/quota"),
        body,
    )
    .await
}

async fn post_as(stack: &Stack, token: &str, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(stack.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("POST")
}

async fn tenant_id(stack: &Stack, name: &str) -> String {
    tollgate_core::db::tenants::find_by_name(&stack.pool, name)
        .await
        .expect("query")
        .expect("tenant")
        .to_string()
}

#[tokio::test]
async fn a_job_is_billed_once_at_the_price_in_force_and_a_new_price_applies_to_later_jobs() {
    let stack = Stack::start().await;

    let first = stack.generate("llama3", "Describe a red bicycle").await;
    let usage = &first["usage"];
    let tokens = usage["total_tokens"].as_i64().expect("tokens");
    assert_eq!(decimal(&usage["cost"]), at(tokens, "0.002"), "{first}");
    assert_eq!(usage["estimated"], false);
    assert_eq!(usage["unpriced"], false);

    // The same message again, as after a redelivery: the job is finished, nothing is billed.
    let id: JobId = first["id"].as_str().expect("id").parse().expect("job id");
    stack.broker.publish_job(id, None).await.expect("publish");
    let price = json!({ "provider": "ollama", "model": "llama3",
                        "input_per_1k": "0.01", "output_per_1k": "0.03" });
    let created = stack.admin(Method::POST, "/v1/admin/prices", &price).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("price");
    assert_eq!(
        created["current"], false,
        "it takes effect shortly, on every process at once"
    );
    let at_new_price = |job: &Value| {
        let usage = &job["usage"];
        let (prompt, completion) = (
            usage["prompt_tokens"].as_i64().expect("prompt"),
            usage["completion_tokens"].as_i64().expect("completion"),
        );
        decimal(&usage["cost"]) == at(prompt, "0.01") + at(completion, "0.03")
    };
    let second = tokio::time::timeout(WAIT, async {
        loop {
            let job = stack.generate("llama3", "Describe a blue bicycle").await;
            if at_new_price(&job) {
                return job;
            }
        }
    })
    .await
    .expect("a later job is billed at the new price");
    let effective_from = chrono::DateTime::parse_from_rfc3339(
        created["effective_from"].as_str().expect("effective_from"),
    )
    .expect("time");
    let finished =
        chrono::DateTime::parse_from_rfc3339(second["finished_at"].as_str().expect("finished_at"))
            .expect("time");
    assert!(
        finished >= effective_from,
        "billed at it only once in force"
    );
    let first_again: Value = stack
        .get(&format!("/v1/jobs/{id}"))
        .await
        .json()
        .await
        .expect("job");
    assert_eq!(
        first_again["usage"]["cost"], first["usage"]["cost"],
        "history kept"
    );

    let bills = "select count(*) from usage_records where job_id = $1";
    assert_eq!(count(&stack, bills, id).await, 1, "billed once");
    let month: Value = stack.get("/v1/usage").await.json().await.expect("usage");
    let listed: Value = stack
        .get("/v1/jobs?limit=100")
        .await
        .json()
        .await
        .expect("jobs");
    let jobs = listed["data"].as_array().expect("jobs");
    assert_eq!(month["requests"], jobs.len(), "{month}");
    let billed: Decimal = jobs.iter().map(|j| decimal(&j["usage"]["cost"])).sum();
    assert_eq!(
        decimal(&month["cost"]),
        billed,
        "the rollup is the sum of the bills"
    );
    assert_eq!(month["by_model"][0]["model"], "llama3");
    let prices = admin_json(&stack, Method::GET, "/v1/admin/prices", &Value::Null).await;
    let llama: Vec<&Value> = prices["data"]
        .as_array()
        .expect("prices")
        .iter()
        .filter(|p| p["provider"] == "local" && p["model"] == "llama3")
        .collect();
    assert_eq!(llama.len(), 2, "both prices are kept");
    assert_eq!(llama[0]["input_per_1k"], "0.0100000000");
    assert_eq!(llama[0]["current"], true);
    assert_eq!(llama[1]["current"], false);
    stack.stop().await;
}

#[tokio::test]
async fn the_usage_record_keeps_the_token_origin_and_client_address() {
    let stack = Stack::start().await;
    let submitted: Value = client()
        .post(stack.url("/v1/generate"))
        .bearer_auth(&stack.token)
        .header("Origin", "https://shop.example.com")
        .json(&json!({ "model": "llama3", "prompt": "hi" }))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("job");
    let job = stack
        .wait_until_finished(submitted["id"].as_str().expect("id"))
        .await;
    let id: JobId = job["id"].as_str().expect("id").parse().expect("job id");

    let (origin, ip, token, latency): (
        Option<String>,
        Option<String>,
        Option<uuid::Uuid>,
        Option<i32>,
    ) = sqlx::query_as(
        "select origin, host(client_ip), token_id, latency_ms from usage_records where job_id = $1",
    )
    .bind(id)
    .fetch_one(&stack.pool)
    .await
    .expect("usage record");
    assert_eq!(origin.as_deref(), Some("shop.example.com"));
    assert_eq!(ip.as_deref(), Some("127.0.0.1"));
    assert!(token.is_some());
    assert!(latency.is_some());
    stack.stop().await;
}

#[tokio::test]
async fn the_operator_sees_spend_per_provider_with_failed_calls_beside_charges_per_tenant() {
    let stack = Stack::with(crate::harness::with_openai_fallback(
        tollgate_core::domain::SettingsChange::default(),
    ))
    .await;
    stack.ollama.set_knobs(provider_sim::Knobs {
        error_rate: 1.0,
        ..Default::default()
    });

    let job = stack.generate("llama3", "fall back").await;
    assert_eq!(job["provider"], "openai");
    let tokens = job["usage"]["prompt_tokens"].as_i64().expect("prompt");
    let completion = job["usage"]["completion_tokens"]
        .as_i64()
        .expect("completion");
    let charged = at(tokens, "0.0004") + at(completion, "0.0016");
    assert_eq!(
        decimal(&job["usage"]["cost"]),
        charged,
        "gpt-4.1-mini's price"
    );

    let spend = admin_json(&stack, Method::GET, "/v1/admin/spend", &Value::Null).await;
    let providers = spend["providers"].as_array().expect("providers");
    let ollama = providers
        .iter()
        .find(|p| p["provider"] == "local")
        .expect("the failed calls are spend too");
    assert_eq!(ollama["calls"], 2);
    assert_eq!(decimal(&ollama["cost"]), Decimal::ZERO);
    let openai = providers
        .iter()
        .find(|p| p["provider"] == "openai")
        .expect("openai");
    assert_eq!(openai["upstream_model"], "gpt-4.1-mini");
    assert_eq!(openai["calls"], 1);
    assert_eq!(decimal(&openai["cost"]), charged);
    let tenants = spend["tenants"].as_array().expect("tenants");
    assert_eq!(tenants.len(), 1);
    assert_eq!(tenants[0]["tenant"], "acme");
    assert_eq!(decimal(&tenants[0]["cost"]), charged);
    stack.stop().await;
}

#[tokio::test]
async fn an_unpriced_model_runs_is_never_billed_as_free_and_admins_see_it() {
    let stack = Stack::start().await;
    let pulled = client()
        .post(format!("{}/api/pull", stack.ollama_url))
        .json(&json!({ "model": "phi3", "stream": false }))
        .send()
        .await
        .expect("pull");
    assert!(pulled.status().is_success());
    admin_json(
        &stack,
        Method::PUT,
        "/v1/admin/aliases/phi3",
        &json!({ "routes": { "ollama": "phi3" } }),
    )
    .await;

    let job = stack.generate("phi3", "hello").await;

    assert_eq!(job["status"], "succeeded", "an unpriced model still runs");
    assert!(job["usage"]["cost"].is_null(), "{job}");
    assert_eq!(job["usage"]["unpriced"], true);
    let unpriced = admin_json(
        &stack,
        Method::GET,
        "/v1/admin/usage/unpriced",
        &Value::Null,
    )
    .await;
    assert_eq!(unpriced["data"][0]["upstream_model"], "phi3", "{unpriced}");
    assert_eq!(unpriced["data"][0]["requests"], 1);
    let month: Value = stack.get("/v1/usage").await.json().await.expect("usage");
    assert_eq!(month["unpriced_requests"], 1);
    assert_eq!(decimal(&month["cost"]), Decimal::ZERO);
    stack.stop().await;
}

#[tokio::test]
async fn counts_the_provider_left_out_are_estimated_with_a_tokenizer_and_flagged() {
    let stack = Stack::start().await;
    stack.ollama.set_knobs(provider_sim::Knobs {
        prompt_cached: true,
        ..Default::default()
    });

    let job = stack
        .generate("llama3", "Write a tagline for a bicycle shop")
        .await;

    let usage = &job["usage"];
    assert_eq!(usage["estimated"], true, "{job}");
    let prompt = usage["prompt_tokens"].as_i64().expect("prompt");
    assert_eq!(
        prompt,
        i64::from(tollgate_core::billing::estimate_tokens(
            "\nWrite a tagline for a bicycle shop"
        ))
    );
    let tokens = usage["total_tokens"].as_i64().expect("tokens");
    assert_eq!(
        decimal(&usage["cost"]),
        at(tokens, "0.002"),
        "billed by the estimate"
    );
    stack.stop().await;
}

#[tokio::test]
async fn usage_is_scoped_to_the_tenant_and_history_has_every_day_across_a_month_boundary() {
    let stack = Stack::with(idle()).await;
    let acme = tenant_id(&stack, "acme").await;
    let globex_token = stack.create_token("globex", Role::Client).await;
    let globex = tenant_id(&stack, "globex").await;
    for (tenant, day, tokens, cost) in [
        (&acme, "2026-10-30", 100, "0.2"),
        (&acme, "2026-11-02", 50, "0.1"),
        (&globex, "2026-11-01", 7, "0.014"),
    ] {
        record_usage(&stack, tenant, Some(day), tokens, cost).await;
    }

    let history: Value = stack
        .get("/v1/usage/history?from=2026-10-29&to=2026-11-03")
        .await
        .json()
        .await
        .expect("history");
    let days = history["data"].as_array().expect("days");
    let summary: Vec<(&str, i64, &str)> = days
        .iter()
        .map(|d| {
            (
                d["day"].as_str().expect("day"),
                d["total_tokens"].as_i64().expect("tokens"),
                d["cost"].as_str().expect("cost"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("2026-10-29", 0, "0"),
            ("2026-10-30", 100, "0.2000000000"),
            ("2026-10-31", 0, "0"),
            ("2026-11-01", 0, "0"),
            ("2026-11-02", 50, "0.1000000000"),
            ("2026-11-03", 0, "0"),
        ],
        "acme's days only, empty ones as zeros"
    );

    let theirs: Value = client()
        .get(stack.url("/v1/usage/history?from=2026-11-01&to=2026-11-01"))
        .bearer_auth(&globex_token)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("history");
    assert_eq!(theirs["data"][0]["total_tokens"], 7);
    let peek = stack
        .get(&format!("/v1/usage/history?tenant_id={globex}"))
        .await;
    assert_eq!(peek.status(), 403, "a client cannot read another tenant");
    let all = admin_json(
        &stack,
        Method::GET,
        "/v1/usage/history?from=2026-10-01&to=2026-11-30&tenant_id=all",
        &Value::Null,
    )
    .await;
    let total: i64 = all["data"]
        .as_array()
        .expect("days")
        .iter()
        .map(|d| d["total_tokens"].as_i64().expect("tokens"))
        .sum();
    assert_eq!(total, 157);
    for bad in [
        "?from=2026-11-05&to=2026-11-01",
        "?from=yesterday",
        "?from=2020-01-01&to=2026-01-01",
    ] {
        let response = stack.get(&format!("/v1/usage/history{bad}")).await;
        assert_eq!(response.status(), 422, "{bad}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_submissions_admit_no_more_than_a_nearly_exhausted_quota_allows() {
    let stack = Stack::with(idle()).await;
    let acme = tenant_id(&stack, "acme").await;
    // 1,000 tokens already used this month.
    record_usage(&stack, &acme, None, 1000, "0").await;
    let per_job = i64::from(tollgate_core::billing::estimate_tokens("\nhi")) + 100;
    let quota = 1000 + 5 * per_job;
    let status = tenant_quota(
        &stack,
        &acme,
        Method::PUT,
        &json!({ "monthly_token_quota": quota }),
    )
    .await;
    assert_eq!(status["used_tokens"], 1000);
    // A token not seen before, so no api cache holds the tenant's old limits.
    let token = stack.create_token("acme", Role::Client).await;

    let body = json!({ "model": "llama3", "prompt": "hi", "options": { "max_tokens": 100 } });
    let responses = join_all((0..50).map(|_| post_as(&stack, &token, "/v1/generate", &body))).await;

    let admitted: Vec<&reqwest::Response> =
        responses.iter().filter(|r| r.status() == 202).collect();
    assert_eq!(admitted.len(), 5, "exactly what fits");
    let refused: Vec<reqwest::Response> = responses
        .into_iter()
        .filter(|r| r.status() == 429)
        .collect();
    assert_eq!(refused.len(), 45);
    assert!(refused[0].headers().contains_key("retry-after"));
    let problem: Value = refused
        .into_iter()
        .next()
        .expect("one")
        .json()
        .await
        .expect("problem");
    assert_eq!(problem["code"], "quota_exceeded");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("monthly token quota"),
        "{problem}"
    );
    let status = tenant_quota(&stack, &acme, Method::GET, &Value::Null).await;
    assert_eq!(status["reserved_tokens"], 5 * per_job);
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&stack.pool)
        .await
        .expect("count");
    assert_eq!(jobs, 5, "a refused request wrote nothing");

    // Cancelling an admitted job gives its reservation back.
    let listed: Value = stack.get("/v1/jobs").await.json().await.expect("jobs");
    let id = listed["data"][0]["id"].as_str().expect("id");
    let cancelled = stack
        .post(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(cancelled.status(), 200);
    let status = tenant_quota(&stack, &acme, Method::GET, &Value::Null).await;
    assert_eq!(status["reserved_tokens"], 4 * per_job);
    stack.stop().await;
}

#[tokio::test]
async fn a_cost_budget_refuses_work_once_spent_and_a_finished_job_settles_its_reservation() {
    let stack = Stack::start().await;
    let acme = tenant_id(&stack, "acme").await;
    tenant_quota(
        &stack,
        &acme,
        Method::PUT,
        &json!({ "monthly_cost_budget": "1.00" }),
    )
    .await;
    let token = stack.create_token("acme", Role::Client).await;

    let submitted = post_as(
        &stack,
        &token,
        "/v1/generate",
        &json!({ "model": "llama3", "prompt": "within budget" }),
    )
    .await;
    assert_eq!(submitted.status(), 202);
    let submitted: Value = submitted.json().await.expect("job");
    let job = stack
        .wait_until_finished(submitted["id"].as_str().expect("id"))
        .await;
    assert_eq!(job["status"], "succeeded");
    let status = tenant_quota(&stack, &acme, Method::GET, &Value::Null).await;
    assert_eq!(
        status["reserved_tokens"], 0,
        "released at the end: {status}"
    );
    assert_eq!(
        decimal(&status["used_cost"]),
        decimal(&job["usage"]["cost"])
    );

    record_usage(&stack, &acme, None, 0, "1.00").await;
    let refused = post_as(
        &stack,
        &token,
        "/v1/generate",
        &json!({ "model": "llama3", "prompt": "over" }),
    )
    .await;
    assert_eq!(refused.status(), 429);
    let problem: Value = refused.json().await.expect("problem");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("monthly cost budget"),
        "{problem}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_prompt_tokens_cost_the_cached_rate_and_reasoning_tokens_are_counted() {
    let stack = Stack::start().await;
    stack
        .patch_settings(&json!({ "ai_fallback_provider": "openai" }))
        .await;
    let routes = json!({ "routes": { "openai": "o4-mini" } });
    let aliased = stack
        .admin(Method::PUT, "/v1/admin/aliases/o4-mini", &routes)
        .await;
    assert_eq!(aliased.status(), 200);
    let price = json!({ "provider": "openai", "model": "gpt-4.1-mini", "input_per_1k": "0.0004",
                        "output_per_1k": "0.0016", "cached_input_per_1k": "0.0001" });
    let created = admin_json(&stack, Method::POST, "/v1/admin/prices", &price).await;
    assert_eq!(created["cached_input_per_1k"], "0.0001000000");
    // A prompt asked again is read from OpenAI's cache (the sim's, as OpenAI's prompt caching):
    // its cached tokens cost the cached rate, once the price is in force everywhere.
    let at_cached_price = |job: &Value| {
        let usage = &job["usage"];
        let tokens = |field: &str| usage[field].as_i64().expect("tokens");
        let cached = tokens("cached_tokens");
        cached > 0
            && cached == tokens("prompt_tokens")
            && decimal(&usage["cost"])
                == at(cached, "0.0001") + at(tokens("completion_tokens"), "0.0016")
    };
    let repeated = tokio::time::timeout(WAIT, async {
        for n in 0.. {
            let ask = json!({ "model": "gpt-4.1-mini",
                              "messages": [{ "role": "user", "content": format!("Hello #{n}") }] });
            let (_, first) = crate::images::submit(&stack, &ask).await;
            assert_eq!(first["usage"]["cached_tokens"], 0, "{first}");
            let (_, again) = crate::images::submit(&stack, &ask).await;
            if at_cached_price(&again) {
                return again;
            }
        }
        unreachable!("the loop returns")
    })
    .await
    .expect("a repeated prompt is billed at the cached rate");
    // Reasoning tokens are counted within the completion, as the provider reported them.
    let ask = json!({ "model": "o4-mini", "messages": [{ "role": "user", "content": "Why?" }],
                      "options": { "reasoning": "high" } });
    let (_, reasoned) = crate::images::submit(&stack, &ask).await;
    let usage = &reasoned["usage"];
    let reasoning = usage["reasoning_tokens"]
        .as_i64()
        .expect("reasoning tokens");
    assert!(
        reasoning > 0 && reasoning < usage["completion_tokens"].as_i64().expect("completion"),
        "{reasoned}"
    );
    // Both are kept on the usage record and the rollups the usage endpoints read.
    let month: Value = stack.get("/v1/usage").await.json().await.expect("usage");
    assert_eq!(month["reasoning_tokens"], reasoning, "{month}");
    assert!(
        month["cached_tokens"].as_i64() >= repeated["usage"]["cached_tokens"].as_i64(),
        "{month}"
    );
    let recorded: (i32, i32) = sqlx::query_as(
        "select reasoning_tokens, cached_tokens from usage_records where job_id = $1::uuid",
    )
    .bind(reasoned["id"].as_str().expect("id"))
    .fetch_one(&stack.pool)
    .await
    .expect("usage record");
    assert_eq!(i64::from(recorded.0), reasoning);
    let spend = admin_json(&stack, Method::GET, "/v1/admin/spend", &Value::Null).await;
    let o4 = spend["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .find(|p| p["upstream_model"] == "o4-mini")
        .cloned()
        .unwrap_or_default();
    assert_eq!(o4["reasoning_tokens"], reasoning, "{spend}");
    let models: Value = stack.get("/v1/models").await.json().await.expect("models");
    let priced = models["data"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["model"] == "gpt-4.1-mini")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        priced["providers"][0]["price"]["cached_input_per_1k"], "0.0001",
        "{priced}"
    );
    stack.stop().await;
}
