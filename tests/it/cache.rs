//! The response cache: identical requests answered once and billed at the cache rate, scoped by
//! tenant, never storing a failure, a cancelled stream or an invalid structured answer; the
//! per-request opt-outs; keys that hold across key orders and processes; identical jobs in
//! flight making one provider call (a batch's, across two workers), a failed leader handing the
//! key to a waiter; a purge; a route change.

use std::time::Duration;

use provider_sim::Knobs;
use reqwest::Method;
use serde_json::{Value, json};
use tollgate_core::domain::Role;

use crate::batches::{ended, post_batch, results, wait_for_batch};
use crate::harness::{Stack, client, eventually, test_worker_settings};

const CHAT: &str = "/openai/v1/chat/completions";
/// The sim's Ollama chat, which the fleet's `llama3` calls.
const CALLED: &str = "/api/chat";

/// A deterministic question (temperature 0).
pub(crate) fn question(text: &str) -> Value {
    json!({ "model": "llama3", "temperature": 0,
            "messages": [{ "role": "user", "content": text }] })
}

/// A call's answer: what the cache did, the job behind it and the body.
pub(crate) struct Answer {
    cache: Option<String>,
    job: String,
    body: Value,
}

pub(crate) async fn ask(
    stack: &Stack,
    token: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = client().post(stack.url(CHAT)).bearer_auth(token).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("POST chat");
    assert_eq!(response.status(), 200, "{body}");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("text").to_owned())
    };
    let cache = header("x-tollgate-cache");
    let job = header("x-request-id").expect("a job id");
    let body = response.json().await.expect("JSON");
    Answer { cache, job, body }
}

fn text(answer: &Answer) -> &str {
    answer.body["choices"][0]["message"]["content"]
        .as_str()
        .expect("text")
}

/// What the cache said of the stack's client asking `text` (see [`question`]).
async fn said(stack: &Stack, text: &str) -> Option<String> {
    ask(stack, &stack.token, &question(text), &[]).await.cache
}

/// Turns `tenant`'s cache on with `policy`, and waits until the api sees it (each instance keeps
/// a caller's rules for a second): a `no-store` embedding's answer says `bypass`.
pub(crate) async fn cache_on(stack: &Stack, tenant: &str, token: &str, policy: Value) {
    let id = stack.tenant_id(tenant).await;
    let path = format!("/v1/admin/tenants/{id}");
    let body = json!({ "cache": policy });
    let response = stack.admin(Method::PATCH, &path, &body).await;
    assert_eq!(response.status(), 200);
    let tenant: Value = response.json().await.expect("tenant");
    assert_eq!(tenant["cache"]["enabled"], policy["enabled"], "{tenant}");
    let probe = json!({ "model": "nomic-embed-text", "input": "probe" });
    eventually("the api sees the tenant's cache", || async {
        let response = client()
            .post(stack.url("/openai/v1/embeddings"))
            .bearer_auth(token)
            .header("cache-control", "no-store")
            .json(&probe)
            .send()
            .await
            .expect("POST embeddings");
        response.headers().get("x-tollgate-cache").is_some()
    })
    .await;
}

/// The single number `sql` counts in the stack's database.
async fn count(stack: &Stack, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&stack.pool)
        .await
        .expect("a count")
}

fn on() -> Value {
    json!({ "enabled": true, "ttl_secs": 3600 })
}

async fn job(stack: &Stack, id: &str) -> Value {
    stack
        .get(&format!("/v1/jobs/{id}"))
        .await
        .json()
        .await
        .expect("job")
}

#[tokio::test]
async fn identical_requests_are_answered_once_and_billed_at_the_cache_rate() {
    let stack = Stack::start().await;
    // The cache is off by default: no header, every request a call.
    let before = ask(&stack, &stack.token, &question("teapot"), &[]).await;
    assert_eq!(before.cache, None);
    assert_eq!(job(&stack, &before.job).await["cache"], Value::Null);
    let price = json!({ "provider": "local", "model": "llama3", "input_per_1k": "0.002",
                        "output_per_1k": "0.004", "cache_hit_per_1k": "0.001",
                        "effective_from": "2001-01-01T00:00:00Z" });
    let added = stack.admin(Method::POST, "/v1/admin/prices", &price).await;
    assert_eq!(added.status(), 201);
    cache_on(&stack, "acme", &stack.token, on()).await;
    stack.ollama.set_knobs(Knobs::default());
    let calls = stack.ollama.calls(CALLED);

    let miss = ask(&stack, &stack.token, &question("kettle"), &[]).await;
    assert_eq!(miss.cache.as_deref(), Some("miss"));
    // The same request with its keys in another order, through a second api process.
    let reordered = json!({ "messages": [{ "content": "kettle", "role": "user" }],
                            "temperature": 0, "model": "llama3" });
    let hit = ask(&stack, &stack.token, &reordered, &[]).await;
    assert_eq!(hit.cache.as_deref(), Some("hit"));
    assert_eq!(text(&hit), text(&miss));
    assert_eq!(hit.body["usage"], miss.body["usage"]);
    let second_api = stack.start_api(crate::harness::test_api_settings()).await;
    let elsewhere = client()
        .post(format!("{second_api}{CHAT}"))
        .bearer_auth(&stack.token)
        .json(&question("kettle"))
        .send()
        .await
        .expect("POST");
    assert_eq!(elsewhere.headers()["x-tollgate-cache"], "hit");
    assert_eq!(stack.ollama.calls(CALLED), calls + 1, "one provider call");

    // A hit is a job: succeeded, with the answer's tokens, billed at the cache rate, recording
    // what the answer cost when it was called; no provider spend.
    let (called, replayed) = (job(&stack, &miss.job).await, job(&stack, &hit.job).await);
    assert_eq!(replayed["status"], "succeeded");
    assert_eq!(replayed["cache"], "hit");
    assert_eq!(called["cache"], "miss");
    assert_eq!(replayed["attempts"], 0);
    assert_eq!(replayed["result"], called["result"]);
    let tokens = replayed["usage"]["total_tokens"].as_i64().expect("tokens");
    let rows: Vec<(bool, Option<String>, Option<String>)> = sqlx::query_as(
        "select cache_hit, cost::text, saved_cost::text from usage_records
          where job_id = any($1::uuid[]) order by finished_at",
    )
    .bind(vec![
        miss.job.parse::<uuid::Uuid>().expect("id"),
        hit.job.parse::<uuid::Uuid>().expect("id"),
    ])
    .fetch_all(&stack.pool)
    .await
    .expect("usage records");
    let called_cost: rust_decimal::Decimal =
        rows[0].1.as_deref().expect("cost").parse().expect("n");
    assert!(!rows[0].0, "the call's record is no hit");
    assert!(rows[1].0, "the hit's record says so");
    let hit_cost: rust_decimal::Decimal = rows[1].1.as_deref().expect("cost").parse().expect("n");
    let expected = rust_decimal::Decimal::from(tokens) * rust_decimal::Decimal::new(1, 3)
        / rust_decimal::Decimal::ONE_THOUSAND;
    assert_eq!(hit_cost, expected);
    let saved: rust_decimal::Decimal = rows[1].2.as_deref().expect("saved").parse().expect("n");
    assert_eq!(saved, called_cost);
    let spent = count(
        &stack,
        "select coalesce(sum(calls), 0)::bigint from provider_spend_daily
          where upstream_model = 'llama3'",
    )
    .await;
    assert_eq!(
        spent, 2,
        "the provider was paid for the two calls made, not for the hits"
    );
    // The usage endpoint shows the hits and what they saved, per model.
    let usage: Value = stack.get("/v1/usage").await.json().await.expect("usage");
    let llama = usage["by_model"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["model"] == "llama3"))
        .unwrap_or_else(|| panic!("llama3 in {usage}"));
    assert_eq!(llama["cache_hits"], 2, "{usage}");
    let saved_twice: rust_decimal::Decimal = llama["saved_cost"]
        .as_str()
        .expect("saved")
        .parse()
        .expect("n");
    assert_eq!(saved_twice, called_cost * rust_decimal::Decimal::TWO);
    stack.stop().await;
}

#[tokio::test]
async fn tenants_never_share_answers_and_requests_may_opt_out() {
    let stack = Stack::start().await;
    let other = stack.create_token("globex", Role::Client).await;
    cache_on(&stack, "acme", &stack.token, on()).await;
    cache_on(&stack, "globex", &other, on()).await;
    let calls = stack.ollama.calls(CALLED);
    let acme = ask(&stack, &stack.token, &question("lamp"), &[]).await;
    let globex = ask(&stack, &other, &question("lamp"), &[]).await;
    assert_eq!(acme.cache.as_deref(), Some("miss"));
    assert_eq!(
        globex.cache.as_deref(),
        Some("miss"),
        "another tenant's answer is not served"
    );
    assert_eq!(stack.ollama.calls(CALLED), calls + 2);

    // `no-store`: neither read nor written; `no-cache`: not read, but written.
    let lamp = question("lamp");
    let no_store = ask(
        &stack,
        &stack.token,
        &lamp,
        &[("cache-control", "no-store")],
    )
    .await;
    assert_eq!(no_store.cache.as_deref(), Some("bypass"));
    let fresh = ask(
        &stack,
        &stack.token,
        &question("rug"),
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(fresh.cache.as_deref(), Some("bypass"));
    assert_eq!(stack.ollama.calls(CALLED), calls + 4);
    let stored = ask(&stack, &stack.token, &question("rug"), &[]).await;
    assert_eq!(
        stored.cache.as_deref(),
        Some("hit"),
        "no-cache wrote its answer"
    );
    assert_eq!(text(&stored), text(&fresh));
    // A token's own setting overrides its tenant's.
    let tenant = stack.tenant_id("acme").await;
    let body = json!({ "name": "uncached", "role": "client", "cache": { "enabled": false } });
    let made = stack
        .admin(
            Method::POST,
            &format!("/v1/admin/tenants/{tenant}/tokens"),
            &body,
        )
        .await;
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.expect("token");
    assert_eq!(made["cache"]["enabled"], false, "{made}");
    let uncached = made["token"].as_str().expect("token");
    let own = ask(&stack, uncached, &question("rug"), &[]).await;
    assert_eq!(own.cache, None, "the token's cache is off");
    // The native API's body field says the same.
    let body = json!({ "model": "llama3", "prompt": "vase", "options": { "temperature": 0 },
                       "cache": { "mode": "no-store" } });
    let native = stack.submit("/v1/generate", &body).await;
    assert_eq!(native["cache"], "bypass");
    let body = json!({ "model": "llama3", "prompt": "vase", "options": { "temperature": 0 } });
    let first = stack.submit("/v1/generate", &body).await;
    assert_eq!(first["cache"], "miss");
    stack
        .wait_until_finished(first["id"].as_str().expect("id"))
        .await;
    let again = stack.submit("/v1/generate", &body).await;
    assert_eq!(again["cache"], "hit");
    assert_eq!(again["status"], "succeeded", "answered at intake: {again}");

    // A sampled request (no temperature: the provider's default samples) is not cached unless
    // the tenant says so.
    let sampled = json!({ "model": "llama3", "messages": [{ "role": "user", "content": "mug" }] });
    let twice = [
        ask(&stack, &stack.token, &sampled, &[]).await,
        ask(&stack, &stack.token, &sampled, &[]).await,
    ];
    assert!(twice.iter().all(|a| a.cache.as_deref() == Some("bypass")));
    cache_on(
        &stack,
        "acme",
        &stack.token,
        json!({ "enabled": true, "sampled": true }),
    )
    .await;
    eventually("the api caches sampled requests", || async {
        ask(&stack, &stack.token, &sampled, &[])
            .await
            .cache
            .as_deref()
            != Some("bypass")
    })
    .await;
    assert_eq!(
        ask(&stack, &stack.token, &sampled, &[])
            .await
            .cache
            .as_deref(),
        Some("hit")
    );
    stack.stop().await;
}

#[tokio::test]
async fn failures_cancelled_streams_and_invalid_answers_are_never_stored() {
    let stack = Stack::start().await;
    cache_on(&stack, "acme", &stack.token, on()).await;
    // A provider's failure.
    stack.ollama.set_knobs(Knobs {
        error_rate: 1.0,
        error_status: Some(400),
        ..Knobs::default()
    });
    let failed = client()
        .post(stack.url(CHAT))
        .bearer_auth(&stack.token)
        .json(&question("chair"))
        .send()
        .await
        .expect("POST");
    assert!(failed.status().is_client_error(), "{}", failed.status());
    stack.ollama.set_knobs(Knobs::default());
    assert_eq!(said(&stack, "chair").await.as_deref(), Some("miss"));

    // A structured answer that does not match its schema (every try).
    stack.ollama.set_knobs(Knobs {
        invalid_structured: 100,
        ..Knobs::default()
    });
    let schema = json!({ "type": "json_schema", "json_schema": { "name": "item", "strict": true,
        "schema": { "type": "object", "properties": { "name": { "type": "string" } },
                    "required": ["name"], "additionalProperties": false } } });
    let mut structured = question("desk");
    structured["response_format"] = schema;
    let invalid = client()
        .post(stack.url(CHAT))
        .bearer_auth(&stack.token)
        .json(&structured)
        .send()
        .await
        .expect("POST");
    assert!(!invalid.status().is_success());
    stack.ollama.set_knobs(Knobs::default());
    let valid = ask(&stack, &stack.token, &structured, &[]).await;
    assert_eq!(
        valid.cache.as_deref(),
        Some("miss"),
        "the invalid answer was not stored"
    );

    // A stream the client leaves: cancelled with its text billed, and not stored.
    stack.ollama.set_knobs(Knobs {
        token_delay_ms: 200,
        reply_words: Some(30),
        ..Knobs::default()
    });
    let mut streamed = question("shelf");
    streamed["stream"] = json!(true);
    let response = client()
        .post(stack.url(CHAT))
        .bearer_auth(&stack.token)
        .json(&streamed)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.headers()["x-tollgate-cache"], "miss");
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let mut body = response.bytes_stream();
    let _first = futures::StreamExt::next(&mut body).await;
    drop(body);
    let cancelled = stack.wait_until_finished(&id).await;
    assert_eq!(cancelled["status"], "cancelled");
    stack.ollama.set_knobs(Knobs::default());
    assert_eq!(said(&stack, "shelf").await.as_deref(), Some("miss"));
    let stored = count(
        &stack,
        "select count(*) from jobs where cache_expires_at is not null and status <> 'succeeded'",
    )
    .await;
    assert_eq!(stored, 0);
    stack.stop().await;
}

#[tokio::test]
async fn a_batch_of_identical_items_makes_one_call_across_two_workers() {
    let mut stack = Stack::start().await;
    stack.add_worker(test_worker_settings()).await;
    cache_on(&stack, "acme", &stack.token, on()).await;
    stack.ollama.set_knobs(Knobs {
        latency_ms: 50,
        ..Knobs::default()
    });
    let calls = stack.ollama.calls("/api/generate");
    let items: Vec<Value> = (0..200)
        .map(|i| {
            let prompt = if i % 2 == 0 {
                "the same".to_owned()
            } else {
                format!("item {i}")
            };
            json!({ "custom_id": format!("c{i}"), "prompt": prompt })
        })
        .collect();
    let body = json!({ "kind": "generate", "model": "llama3", "items": items,
                       "options": { "temperature": 0 } });
    let response = post_batch(&stack, &stack.token, &body).await;
    assert_eq!(response.status(), 202);
    let batch: Value = response.json().await.expect("batch");
    let id = batch["id"].as_str().expect("id");
    let done = wait_for_batch(&stack, &stack.token, id, ended).await;
    assert_eq!(done["counts"]["succeeded"], 200, "{done}");
    let called = count(
        &stack,
        "select count(*) from jobs
          where batch_id is not null and request->>'prompt' = 'the same' and cache = 'miss'",
    )
    .await;
    assert_eq!(called, 1, "one of the identical items called the provider");
    assert_eq!(stack.ollama.calls("/api/generate"), calls + 101);
    let lines = results(&stack, &stack.token, id).await;
    let same: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["custom_id"]
                .as_str()
                .is_some_and(|c| c[1..].parse::<u32>().is_ok_and(|n| n % 2 == 0))
        })
        .collect();
    assert_eq!(same.len(), 100);
    let first = &same[0]["result"];
    assert!(
        same.iter().all(|l| l["result"]["text"] == first["text"]),
        "{first}"
    );
    let hits = count(
        &stack,
        "select count(*) from jobs where batch_id is not null and cache = 'hit'",
    )
    .await;
    assert_eq!(hits, 99);
    stack.stop().await;
}

#[tokio::test]
async fn a_failed_leader_hands_the_key_to_one_waiter() {
    let stack = Stack::start().await;
    cache_on(&stack, "acme", &stack.token, on()).await;
    stack.ollama.set_knobs(Knobs {
        latency_ms: 1500,
        error_rate: 1.0,
        error_status: Some(400),
        ..Knobs::default()
    });
    let calls = stack.ollama.calls("/api/generate");
    let body = json!({ "model": "llama3", "prompt": "stool", "options": { "temperature": 0 } });
    let mut ids = Vec::new();
    for _ in 0..3 {
        let job = stack.submit("/v1/generate", &body).await;
        ids.push(job["id"].as_str().expect("id").to_owned());
    }
    eventually("two jobs wait for the first", || async {
        let waiting = count(&stack, "select count(*) from jobs where cache_waiting").await;
        waiting == 2
    })
    .await;
    // The leader's call fails (it drew its fault when it began); the promoted waiter's succeeds.
    stack.ollama.set_knobs(Knobs::default());
    let mut ends = Vec::new();
    for id in &ids {
        let job = stack.wait_until_finished(id).await;
        ends.push((
            job["status"].as_str().map(str::to_owned),
            job["cache"].as_str().map(str::to_owned),
        ));
    }
    ends.sort();
    assert_eq!(
        ends,
        vec![
            (Some("failed".into()), Some("miss".into())),
            (Some("succeeded".into()), Some("hit".into())),
            (Some("succeeded".into()), Some("miss".into())),
        ]
    );
    assert_eq!(stack.ollama.calls("/api/generate"), calls + 2);
    stack.stop().await;
}

#[tokio::test]
async fn the_sweeper_settles_jobs_whose_leader_ended_without_them() {
    let stack = Stack::start().await;
    cache_on(&stack, "acme", &stack.token, on()).await;
    stack.ollama.set_knobs(Knobs {
        latency_ms: 1500,
        ..Knobs::default()
    });
    let body = json!({ "model": "llama3", "prompt": "bench", "options": { "temperature": 0 } });
    let leader = stack.submit("/v1/generate", &body).await;
    let leader = leader["id"].as_str().expect("id").to_owned();
    stack
        .wait_for_job(&leader, |job| job["status"] == "running")
        .await;
    let waiter = stack.submit("/v1/generate", &body).await;
    let waiter = waiter["id"].as_str().expect("id").to_owned();
    eventually("the second job waits", || async {
        count(&stack, "select count(*) from jobs where cache_waiting").await == 1
    })
    .await;
    // The leader ends without its worker (as the dead-letter consumer fails a job): its flight
    // is left behind, and nobody settles the waiter but the sweeper.
    sqlx::query(
        "update jobs set status = 'failed', error_code = 'internal_error',
                error_message = 'dead-lettered', finished_at = now()
          where id = $1::uuid",
    )
    .bind(&leader)
    .execute(&stack.pool)
    .await
    .expect("fail the leader");
    stack.ollama.set_knobs(Knobs::default());
    let settled = stack.wait_until_finished(&waiter).await;
    assert_eq!(settled["status"], "succeeded", "{settled}");
    assert_eq!(
        settled["cache"], "miss",
        "promoted, it called the provider: {settled}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_purge_and_a_route_change_end_stored_answers() {
    let stack = Stack::start().await;
    cache_on(&stack, "acme", &stack.token, on()).await;
    let first = ask(&stack, &stack.token, &question("clock"), &[]).await;
    assert_eq!(first.cache.as_deref(), Some("miss"));
    assert_eq!(said(&stack, "clock").await.as_deref(), Some("hit"));
    let tenant = stack.tenant_id("acme").await;
    for purge in [json!({ "tenant_id": tenant, "model": "llama3" }), json!({})] {
        let response = stack
            .admin(Method::POST, "/v1/admin/cache/purge", &purge)
            .await;
        if purge == json!({}) {
            assert_eq!(response.status(), 422, "a purge names what it purges");
        } else {
            let purged: Value = response.json().await.expect("purged");
            assert_eq!(purged["purged"], 1, "{purged}");
        }
    }
    let after = ask(&stack, &stack.token, &question("clock"), &[]).await;
    assert_eq!(after.cache.as_deref(), Some("miss"));
    // By key: the one the job stored.
    let key: Vec<u8> = sqlx::query_scalar("select cache_key from jobs where id = $1::uuid")
        .bind(&after.job)
        .fetch_one(&stack.pool)
        .await
        .expect("key");
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let purge = json!({ "key": hex });
    let response = stack
        .admin(Method::POST, "/v1/admin/cache/purge", &purge)
        .await;
    assert_eq!(response.json::<Value>().await.expect("purged")["purged"], 1);
    let stored = ask(&stack, &stack.token, &question("clock"), &[]).await;
    assert_eq!(stored.cache.as_deref(), Some("miss"));
    assert_eq!(said(&stack, "clock").await.as_deref(), Some("hit"));
    // A route change: the route is in the key, so the old route's answer is not served.
    stack
        .patch_settings(&json!({ "ai_fallback_provider": "openai" }))
        .await;
    eventually("the api serves the new route", || async {
        said(&stack, "clock").await.as_deref() == Some("miss")
    })
    .await;
    stack.stop().await;
}

#[tokio::test]
async fn the_openai_package_gets_a_streamed_hit_in_pieces() {
    let stack = Stack::start().await;
    cache_on(&stack, "acme", &stack.token, on()).await;
    let seen =
        crate::openai_batches::run_sdk_script(&stack, "openai/cache.py", Duration::from_secs(60))
            .await;
    assert!(seen["pieces"].as_u64().expect("pieces") > 1, "{seen}");
    stack.stop().await;
}
