//! The fleet of Ollama hosts: slots that hold across workers, models per host, a circuit per host,
//! hybrid routing (overflow and a fixed share) with the reason recorded, and tenants whose data
//! never leaves the fleet. Two provider-sims stand in as two hosts, a third as OpenAI; the sims'
//! peak concurrency and request counts are the evidence.

use std::time::Duration;

use provider_sim::Knobs;
use reqwest::Method;
use serde_json::{Value, json};
use tollgate_core::domain::{ProviderName, SettingsChange, Strategy};

use crate::harness::{Options, Stack, WAIT, eventually, put_host, test_worker_settings};

/// Submits `count` generate jobs at once and waits for all of them.
pub(crate) async fn run_jobs(stack: &Stack, model: &str, count: usize) -> Vec<Value> {
    let submitted = futures::future::join_all((0..count).map(|n| async move {
        let body = json!({ "model": model, "prompt": format!("job {n}") });
        stack.submit("/v1/generate", &body).await
    }))
    .await;
    let mut jobs = Vec::new();
    for job in submitted {
        jobs.push(
            stack
                .wait_until_finished(job["id"].as_str().expect("id"))
                .await,
        );
    }
    jobs
}

/// Which host answered each job, from its attempts.
async fn hosts_of(stack: &Stack, jobs: &[Value]) -> Vec<Option<String>> {
    let mut hosts = Vec::new();
    for job in jobs {
        let id = job["id"].as_str().expect("id").parse().expect("job id");
        let attempts = tollgate_core::db::job_attempts::list(&stack.pool, id)
            .await
            .expect("attempts");
        hosts.push(attempts.last().and_then(|a| a.host.clone()));
    }
    hosts
}

fn count(values: &[Value], field: &str, expected: &str) -> usize {
    values.iter().filter(|v| v[field] == expected).count()
}

/// Model calls the OpenAI sim answered (generate goes to Responses, chat to Chat Completions).
fn cloud_calls(stack: &Stack) -> u64 {
    stack.openai.calls("/v1/responses") + stack.openai.calls("/v1/chat/completions")
}

/// Options for a stack routing `hybrid` from the start, with `change` on top.
fn hybrid(host_slots: u32, change: SettingsChange) -> Options {
    Options {
        host_slots,
        settings: SettingsChange {
            ai_provider: Some(Strategy::Hybrid),
            ..change
        },
        ..Options::default()
    }
}

/// Overflow to the cloud after `wait_ms` waiting for a local slot.
fn overflow_after(wait_ms: u32) -> SettingsChange {
    SettingsChange {
        ai_overflow_wait_ms: Some(wait_ms),
        ..SettingsChange::default()
    }
}

fn slow(latency_ms: u64) -> Knobs {
    Knobs {
        latency_ms,
        ..Knobs::default()
    }
}

/// A stack whose fleet is two sims, `gpu-1` (the stack's Ollama sim) and `gpu-2`, of `slots`
/// each; its worker starts knowing both, and its api is shown to.
async fn two_hosts(options: Options, slots: u32) -> (Stack, provider_sim::Sim) {
    two_hosts_where(options, slots, |_| {}).await
}

/// [`two_hosts`], with `gpu-1`'s sim prepared by `prepare` before the worker starts.
async fn two_hosts_where(
    options: Options,
    slots: u32,
    prepare: impl FnOnce(&provider_sim::Sim),
) -> (Stack, provider_sim::Sim) {
    let worker_settings = options.worker_settings.clone();
    let mut stack = Stack::with(Options {
        host_slots: slots,
        worker: false,
        ..options
    })
    .await;
    sqlx::query("update hosts set name = 'gpu-1' where name = 'default'")
        .execute(&stack.pool)
        .await
        .expect("rename");
    let (second, url) = stack.extra_sim().await;
    put_host(&stack.pool, "gpu-2", &url, slots).await;
    prepare(&stack.ollama);
    stack.add_worker(worker_settings).await;
    eventually("the api knows both hosts", || async {
        let models: Value = stack.get("/v1/models").await.json().await.expect("models");
        models["hosts"].as_array().is_some_and(|hosts| {
            hosts.len() == 2 && hosts[0]["name"] == "gpu-1" && hosts[1]["name"] == "gpu-2"
        })
    })
    .await;
    (stack, second)
}

#[tokio::test]
async fn local_jobs_spread_over_the_hosts_and_each_keeps_to_its_slots() {
    let (stack, second) = two_hosts(Options::default(), 2).await;
    stack.ollama.set_knobs(slow(200));
    second.set_knobs(slow(200));

    let jobs = run_jobs(&stack, "llama3", 12).await;

    assert_eq!(count(&jobs, "status", "succeeded"), 12);
    assert_eq!(count(&jobs, "route_reason", "active"), 12);
    let hosts = hosts_of(&stack, &jobs).await;
    let on = |name: &str| hosts.iter().filter(|h| h.as_deref() == Some(name)).count();
    assert!(on("gpu-1") >= 3 && on("gpu-2") >= 3, "{hosts:?}");
    assert_eq!(on("gpu-1") + on("gpu-2"), 12);
    assert!(stack.ollama.peak_in_flight() <= 2, "gpu-1 over its slots");
    assert!(second.peak_in_flight() <= 2, "gpu-2 over its slots");
    assert_eq!(
        stack.ollama.peak_in_flight() + second.peak_in_flight(),
        4,
        "both hosts were full at some point"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_model_installed_on_one_host_only_goes_there() {
    let (stack, second) = two_hosts_where(Options::default(), 4, |gpu_1| {
        gpu_1.uninstall("mistral:latest");
    })
    .await;

    let jobs = run_jobs(&stack, "mistral", 6).await;

    assert_eq!(count(&jobs, "status", "succeeded"), 6, "{jobs:?}");
    let hosts = hosts_of(&stack, &jobs).await;
    assert!(
        hosts.iter().all(|h| h.as_deref() == Some("gpu-2")),
        "{hosts:?}"
    );
    assert_eq!(stack.ollama.calls("/api/generate"), 0);
    assert_eq!(second.calls("/api/generate"), 6);

    // Deleted behind the fleet's back: the host that lost it answers 404 once, and the job goes on
    // to a host that has it.
    let deleted = super::harness::client()
        .delete(format!("{}/api/delete", stack.ollama_url))
        .json(&json!({ "model": "llama3" }))
        .send()
        .await
        .expect("delete on the sim");
    assert!(deleted.status().is_success());
    let mut later = Vec::new();
    for n in 0..4 {
        later.push(stack.generate("llama3", &format!("after {n}")).await);
    }
    assert_eq!(count(&later, "status", "succeeded"), 4, "{later:?}");
    assert!(stack.ollama.calls("/api/generate") <= 1);
    stack.stop().await;
}

#[tokio::test]
async fn a_host_that_fails_opens_its_circuit_and_the_other_takes_over() {
    let options = Options {
        settings: SettingsChange {
            circuit_failure_threshold: Some(2),
            circuit_cooldown_ms: Some(60_000),
            ..SettingsChange::default()
        },
        ..Options::default()
    };
    let (stack, second) = two_hosts(options, 4).await;
    stack.ollama.set_knobs(Knobs {
        error_rate: 1.0,
        ..Knobs::default()
    });

    let mut jobs = Vec::new();
    for n in 0..8 {
        jobs.push(stack.generate("llama3", &format!("one by one {n}")).await);
    }

    assert_eq!(count(&jobs, "status", "succeeded"), 8, "{jobs:?}");
    let hosts = hosts_of(&stack, &jobs).await;
    assert!(
        hosts.iter().all(|h| h.as_deref() == Some("gpu-2")),
        "{hosts:?}"
    );
    // Two failures opened gpu-1's circuit; after that it was left alone.
    assert!(
        stack.ollama.calls("/api/generate") <= 2,
        "gpu-1 got {} calls",
        stack.ollama.calls("/api/generate")
    );
    assert_eq!(second.calls("/api/generate"), 8);
    stack.stop().await;
}

#[tokio::test]
async fn two_workers_never_exceed_a_hosts_slots_and_a_dead_workers_slots_come_back() {
    let worker_settings = tollgate_worker::WorkerSettings {
        slot_lease: Duration::from_secs(1),
        ..test_worker_settings()
    };
    let stack = Stack::with(Options {
        host_slots: 2,
        worker_settings: worker_settings.clone(),
        ..Options::default()
    })
    .await;
    // It stops without grace: its calls are dropped mid-way.
    let second_worker = stack
        .start_worker(tollgate_worker::WorkerSettings {
            shutdown_grace: Duration::ZERO,
            ..worker_settings.clone()
        })
        .await;
    stack.ollama.set_knobs(slow(150));

    let jobs = run_jobs(&stack, "llama3", 16).await;
    assert_eq!(count(&jobs, "status", "succeeded"), 16);
    assert_eq!(
        stack.ollama.peak_in_flight(),
        2,
        "two workers together kept to the host's two slots, and filled them"
    );

    // A worker stopped holding both slots gives them back as its calls are dropped, and its jobs
    // run again elsewhere.
    let stack = stack.without_workers().await;
    stack.ollama.set_knobs(slow(3_000));
    let held: Vec<Value> = futures::future::join_all((0..2).map(|n| {
        let stack = &stack;
        async move {
            let body = json!({ "model": "llama3", "prompt": format!("held {n}") });
            stack.submit("/v1/generate", &body).await
        }
    }))
    .await;
    eventually("both slots held", || async {
        slots_held(&stack).await == 2
    })
    .await;
    second_worker.crash().await;
    stack.ollama.set_knobs(slow(50));
    let _survivor = stack.start_worker(worker_settings).await;
    for job in held {
        let job = stack
            .wait_until_finished(job["id"].as_str().expect("id"))
            .await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }

    // A worker killed outright frees nothing: its slots come back when their leases run out.
    sqlx::query(
        "update host_slots set holder = gen_random_uuid(), held_until = now() + interval '1 second'
          where slot <= 2",
    )
    .execute(&stack.pool)
    .await
    .expect("slots held by a dead worker");
    let after = stack.generate("llama3", "after the leases").await;
    assert_eq!(after["status"], "succeeded", "{after}");
    eventually("no slot left held", || async {
        slots_held(&stack).await == 0
    })
    .await;
    stack.stop().await;
}

/// Slots held now, across the fleet.
async fn slots_held(stack: &Stack) -> i64 {
    sqlx::query_scalar("select count(*) from host_slots where held_until >= now()")
        .fetch_one(&stack.pool)
        .await
        .expect("count held slots")
}

#[tokio::test]
async fn hybrid_overflows_to_the_cloud_only_when_every_local_slot_is_busy() {
    let stack = Stack::with(hybrid(2, overflow_after(150))).await;
    stack.ollama.set_knobs(slow(1_500));

    let alone = stack.generate("llama3", "alone").await;
    assert_eq!(alone["provider"], "local", "{alone}");
    assert_eq!(alone["route_reason"], "active");

    let jobs = run_jobs(&stack, "llama3", 6).await;

    assert_eq!(count(&jobs, "status", "succeeded"), 6, "{jobs:?}");
    assert_eq!(count(&jobs, "provider", "local"), 2, "{jobs:?}");
    assert_eq!(count(&jobs, "route_reason", "active"), 2);
    assert_eq!(count(&jobs, "provider", "openai"), 4);
    assert_eq!(count(&jobs, "route_reason", "overflow"), 4);
    assert_eq!(cloud_calls(&stack), 4);
    assert!(stack.ollama.peak_in_flight() <= 2);

    let usage: Value = stack.get("/v1/usage").await.json().await.expect("usage");
    let by_reason = usage["by_route_reason"].as_array().expect("by reason");
    let requests = |reason: &str| {
        by_reason
            .iter()
            .find(|r| r["route_reason"] == reason)
            .map_or(0, |r| r["requests"].as_i64().unwrap_or(0))
    };
    assert_eq!(requests("active"), 3, "{usage}");
    assert_eq!(requests("overflow"), 4, "{usage}");
    stack.stop().await;
}

#[tokio::test]
async fn a_fixed_local_share_splits_the_jobs_within_tolerance() {
    let share = SettingsChange {
        ai_local_share: Some(Some(30)),
        ..SettingsChange::default()
    };
    let stack = Stack::with(hybrid(64, share)).await;

    let jobs = run_jobs(&stack, "llama3", 300).await;

    assert_eq!(count(&jobs, "status", "succeeded"), 300);
    assert_eq!(count(&jobs, "route_reason", "share"), 300);
    let local = count(&jobs, "provider", "local");
    // 30 % of 300 is 90; three standard deviations are about 24.
    assert!((66..=114).contains(&local), "{local} of 300 ran locally");
    stack.stop().await;
}

#[tokio::test]
async fn settings_and_hosts_changed_at_run_time_reach_the_running_workers() {
    let stack = Stack::start().await;
    let (second, url) = stack.extra_sim().await;

    let created = stack
        .admin(
            Method::POST,
            "/v1/admin/hosts",
            &json!({ "name": "gpu-2", "base_url": url, "slots": 3 }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("host");
    assert_eq!(created["bulk_slots"], 2);
    let disabled = stack
        .admin(
            Method::PATCH,
            "/v1/admin/hosts/default",
            &json!({ "enabled": false }),
        )
        .await;
    assert_eq!(disabled.status(), 200);

    eventually("the worker uses gpu-2 alone", || async {
        stack.generate("llama3", "where now").await;
        second.calls("/api/generate") > 0
    })
    .await;
    let before = stack.ollama.calls("/api/generate");
    let jobs = run_jobs(&stack, "llama3", 4).await;
    assert_eq!(count(&jobs, "status", "succeeded"), 4);
    assert_eq!(
        stack.ollama.calls("/api/generate"),
        before,
        "default is disabled"
    );

    let names = listed(&stack, "/v1/admin/hosts", "name").await;
    assert_eq!(names, ["default", "gpu-2"]);
    eventually("gpu-2's kept slots go back", || async {
        let gpu_2: Value = stack
            .admin(Method::GET, "/v1/admin/hosts/gpu-2", &Value::Null)
            .await
            .json()
            .await
            .expect("host");
        gpu_2["slots_held"] == 0 && gpu_2["slots"] == 3
    })
    .await;

    let removed = stack
        .admin(Method::DELETE, "/v1/admin/hosts/gpu-2", &Value::Null)
        .await;
    assert_eq!(removed.status(), 204);
    let actions = listed(&stack, "/v1/admin/audit", "action").await;
    for action in ["host.create", "host.update", "host.delete"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    stack.stop().await;
}

/// `field` of every entry of an admin listing's `data`.
async fn listed(stack: &Stack, path: &str, field: &str) -> Vec<String> {
    let listing: Value = stack
        .admin(Method::GET, path, &Value::Null)
        .await
        .json()
        .await
        .expect("a listing");
    listing["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|entry| entry[field].as_str().expect("a string").to_owned())
        .collect()
}

#[tokio::test]
async fn hosts_are_checked_when_written() {
    let stack = Stack::start().await;
    for (body, field) in [
        (
            json!({ "name": "GPU", "base_url": "http://x", "slots": 1 }),
            "name",
        ),
        (
            json!({ "name": "a", "base_url": "ftp://x", "slots": 1 }),
            "base_url",
        ),
        (
            json!({ "name": "a", "base_url": "http://x", "slots": 0 }),
            "slots",
        ),
    ] {
        let response = stack.admin(Method::POST, "/v1/admin/hosts", &body).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.expect("problem");
        assert_eq!(problem["field"], field, "{problem}");
    }
    let taken = stack
        .admin(
            Method::POST,
            "/v1/admin/hosts",
            &json!({ "name": "default", "base_url": "http://x", "slots": 1 }),
        )
        .await;
    assert_eq!(taken.status(), 409);
    let missing = stack
        .admin(
            Method::PATCH,
            "/v1/admin/hosts/nope",
            &json!({ "slots": 2 }),
        )
        .await;
    assert_eq!(missing.status(), 404);
    stack.stop().await;
}

/// Makes tenant `acme` (the stack's client) `local_only`, through the admin API.
async fn keep_acme_local(stack: &Stack) {
    let id = stack.tenant_id("acme").await;
    let changed = stack
        .admin(
            Method::PATCH,
            &format!("/v1/admin/tenants/{id}"),
            &json!({ "data_policy": "local_only", "batch_overflow": true }),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let tenant: Value = changed.json().await.expect("tenant");
    assert_eq!(tenant["data_policy"], "local_only");
}

#[tokio::test]
async fn a_local_only_tenant_never_reaches_the_cloud_by_fallback_overflow_or_batch() {
    let stack = Stack::with(Options {
        host_slots: 1,
        ..Options::default()
    })
    .await;
    keep_acme_local(&stack).await;

    // Fallback: the host fails and OpenAI is the fallback.
    stack
        .patch_settings(&json!({ "ai_fallback_provider": "openai", "max_job_attempts": 1 }))
        .await;
    stack.ollama.set_knobs(Knobs {
        error_rate: 1.0,
        ..Knobs::default()
    });
    let failed = stack.generate("llama3", "stays home").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["data_policy"], "local_only");

    // A model only the cloud has: refused at intake, saying why.
    let cloud_only = stack
        .post(
            "/v1/generate",
            &json!({ "model": "gpt-4o-mini", "prompt": "cloud model" }),
        )
        .await;
    assert_eq!(cloud_only.status(), 422);
    let problem: Value = cloud_only.json().await.expect("problem");
    assert_eq!(problem["code"], "model_not_served");
    let detail = problem["detail"].as_str().expect("detail");
    assert!(detail.contains("local_only"), "{detail}");

    // Overflow: hybrid with one slot and a short wait; every job waits for the slot instead.
    stack
        .patch_settings(&json!({ "ai_provider": "hybrid", "ai_overflow_wait_ms": 20 }))
        .await;
    stack.ollama.set_knobs(slow(100));
    let jobs = run_jobs(&stack, "llama3", 5).await;
    assert_eq!(count(&jobs, "status", "succeeded"), 5, "{jobs:?}");
    assert_eq!(count(&jobs, "provider", "local"), 5);

    // A batch, although the tenant lets batches overflow.
    let items: Vec<Value> = (0..4)
        .map(|n| json!({ "custom_id": format!("item-{n}"), "prompt": format!("item {n}") }))
        .collect();
    let batch = stack
        .post(
            "/v1/batches",
            &json!({ "kind": "generate", "model": "llama3", "items": items }),
        )
        .await;
    assert_eq!(batch.status(), 202);
    let batch: Value = batch.json().await.expect("batch");
    let id = batch["id"].as_str().expect("id").to_owned();
    eventually("the batch ends", || async {
        let batch: Value = stack
            .get(&format!("/v1/batches/{id}"))
            .await
            .json()
            .await
            .expect("batch");
        batch["counts"]["succeeded"] == 4
    })
    .await;

    assert_eq!(
        cloud_calls(&stack),
        0,
        "the OpenAI sim never saw a request of this tenant"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_tokens_data_policy_overrides_its_tenants() {
    let stack = Stack::with(Options {
        settings: SettingsChange {
            ai_provider: Some(Strategy::Provider(ProviderName::OPENAI)),
            ai_fallback_provider: Some(Some(ProviderName::LOCAL)),
            ..SettingsChange::default()
        },
        ..Options::default()
    })
    .await;
    let id = stack.tenant_id("acme").await;
    let created = stack
        .admin(
            Method::POST,
            &format!("/v1/admin/tenants/{id}/tokens"),
            &json!({ "name": "on-prem", "role": "client", "data_policy": "local_only" }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("token");
    let token = created["token"].as_str().expect("secret");

    let response = super::harness::client()
        .post(stack.url("/v1/generate"))
        .bearer_auth(token)
        .header("prefer", "wait=10")
        .json(&json!({ "model": "llama3", "prompt": "mine stays local" }))
        .send()
        .await
        .expect("submit");
    let job: Value = response.json().await.expect("job");
    assert_eq!(job["provider"], "local", "{job}");
    assert_eq!(job["data_policy"], "local_only");
    // Its route has the fleet alone, so the fleet is its first choice.
    assert_eq!(job["route_reason"], "active");
    let open = stack.generate("llama3", "the tenant's default").await;
    assert_eq!(open["provider"], "openai", "{open}");
    assert_eq!(open["data_policy"], "any");
    stack.stop().await;
}

#[tokio::test]
async fn under_hybrid_batches_overflow_only_if_their_tenant_allows_it() {
    let stack = Stack::with(hybrid(2, overflow_after(20))).await;
    stack.ollama.set_knobs(slow(200));
    let run_batch = |tag: &'static str| {
        let stack = &stack;
        async move {
            let items: Vec<Value> = (0..8)
                .map(|n| json!({ "custom_id": format!("{tag}-{n}"), "prompt": format!("{tag} {n}") }))
                .collect();
            let batch: Value = stack
                .post(
                    "/v1/batches",
                    &json!({ "kind": "generate", "model": "llama3", "items": items }),
                )
                .await
                .json()
                .await
                .expect("batch");
            let id = batch["id"].as_str().expect("id").to_owned();
            let poll = async {
                loop {
                    let batch: Value = stack
                        .get(&format!("/v1/batches/{id}"))
                        .await
                        .json()
                        .await
                        .expect("batch");
                    if batch["counts"]["succeeded"] == 8 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            tokio::time::timeout(WAIT, poll)
                .await
                .expect("the batch ends");
        }
    };

    run_batch("kept").await;
    assert_eq!(cloud_calls(&stack), 0, "kept local");
    assert!(
        stack.ollama.peak_in_flight() <= 1,
        "batch items left a slot free"
    );

    let id = stack.tenant_id("acme").await;
    let allowed = stack
        .admin(
            Method::PATCH,
            &format!("/v1/admin/tenants/{id}"),
            &json!({ "batch_overflow": true }),
        )
        .await;
    assert_eq!(allowed.status(), 200);
    run_batch("spilled").await;
    assert!(
        cloud_calls(&stack) > 0,
        "an allowed batch overflows when the fleet is full"
    );
    stack.stop().await;
}

#[tokio::test]
async fn models_show_which_host_has_what_and_pull_and_delete_take_a_host() {
    let (stack, second) = two_hosts(Options::default(), 2).await;
    let deleted = stack
        .admin(
            Method::DELETE,
            "/v1/models/mistral?host=gpu-1",
            &Value::Null,
        )
        .await;
    assert_eq!(deleted.status(), 200);

    let models: Value = stack.get("/v1/models").await.json().await.expect("models");
    let hosts_of = |model: &str| -> Vec<String> {
        let served = models["data"]
            .as_array()
            .expect("models")
            .iter()
            .find(|m| m["model"] == model)
            .expect("served");
        let ollama = served["providers"]
            .as_array()
            .expect("providers")
            .iter()
            .find(|p| p["provider"] == "local")
            .expect("an ollama route");
        serde_json::from_value(ollama["hosts"].clone()).expect("hosts")
    };
    assert_eq!(hosts_of("mistral"), ["gpu-2"]);
    assert_eq!(hosts_of("llama3"), ["gpu-1", "gpu-2"]);

    let pulled = stack
        .admin(
            Method::POST,
            "/v1/models/pull",
            &json!({ "model": "mistral", "host": "gpu-1" }),
        )
        .await;
    assert_eq!(pulled.status(), 200);
    assert_eq!(second.calls("/api/pull"), 0, "only gpu-1 pulled");
    let models: Value = stack.get("/v1/models").await.json().await.expect("models");
    let hosts = &models["hosts"];
    assert_eq!(hosts.as_array().expect("hosts").len(), 2, "{hosts}");
    stack.stop().await;
}
