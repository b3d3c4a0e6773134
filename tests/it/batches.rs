//! Batches end to end: a JSON array with a template and a JSONL body both accepted in one piece,
//! validation errors naming the item and line (nothing written), 50,001 items refused, results as
//! JSONL joined by `custom_id`, cancel, fairness between tenants, and dispatchers that never
//! release an item twice.

use std::collections::HashSet;
use std::time::Duration;

use provider_sim::Knobs;
use serde_json::{Value, json};
use tollgate_core::domain::{BatchId, JobId, Role, SettingsChange};
use tollgate_worker::WorkerSettings;

use crate::events::read_stream;
use crate::harness::{Options, Stack, WAIT, client, idle, test_worker_settings};
use crate::webhooks::{Receiver, set_endpoint, signatures_by};

pub(crate) async fn post_batch(stack: &Stack, token: &str, body: &Value) -> reqwest::Response {
    client()
        .post(stack.url("/v1/batches"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("POST /v1/batches")
}

pub(crate) async fn accepted(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(status, 202, "{body}");
    body
}

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.expect("problem JSON")
}

/// Submits `count` generate items (`custom_id` `{tag}{i}`) for `token`; the accepted batch.
async fn generate_batch(stack: &Stack, token: &str, tag: &str, count: usize) -> Value {
    let items: Vec<Value> = (0..count)
        .map(|i| json!({ "custom_id": format!("{tag}{i}"), "prompt": format!("{tag} item {i}") }))
        .collect();
    let body = json!({ "kind": "generate", "model": "llama3", "items": items });
    accepted(post_batch(stack, token, &body).await).await
}

async fn batch(stack: &Stack, token: &str, id: &str) -> Value {
    client()
        .get(stack.url(&format!("/v1/batches/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET batch")
        .json()
        .await
        .expect("batch JSON")
}

/// Polls the batch until `done` says so; panics after the harness's wait.
pub(crate) async fn wait_for_batch(
    stack: &Stack,
    token: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let poll = async {
        loop {
            let batch = batch(stack, token, id).await;
            if done(&batch) {
                return batch;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT * 2, poll)
        .await
        .unwrap_or_else(|_| panic!("batch {id} did not get there"))
}

pub(crate) fn ended(batch: &Value) -> bool {
    batch["finished_at"].is_string()
}

pub(crate) async fn results(stack: &Stack, token: &str, id: &str) -> Vec<Value> {
    let response = client()
        .get(stack.url(&format!("/v1/batches/{id}/results")))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET results");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/jsonl");
    let text = response.text().await.expect("JSONL");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[tokio::test]
async fn a_templated_batch_runs_to_completion_with_results_by_custom_id() {
    let stack = Stack::start().await;
    let items: Vec<Value> = (0..30)
        .map(|i| {
            json!({ "custom_id": format!("sku-{i}"),
                          "fields": { "product": format!("mug {i}"), "grams": 300 + i } })
        })
        .collect();
    let response = post_batch(
        &stack,
        &stack.token,
        &json!({ "kind": "generate", "model": "llama3", "items": items,
                 "template": "Describe {{product}} ({{grams}} g) for a shop.",
                 "metadata": { "campaign": "autumn" } }),
    )
    .await;
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let created = accepted(response).await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(location, format!("/v1/batches/{id}"));
    assert_eq!(created["counts"]["total"], 30);
    assert_eq!(created["metadata"]["campaign"], "autumn");
    assert_eq!(created["status"], "in_progress");

    let done = wait_for_batch(&stack, &stack.token, &id, ended).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["counts"]["succeeded"], 30, "{done}");

    let lines = results(&stack, &stack.token, &id).await;
    assert_eq!(lines.len(), 30);
    let ids: HashSet<&str> = lines
        .iter()
        .map(|l| l["custom_id"].as_str().expect("custom_id"))
        .collect();
    assert_eq!(ids.len(), 30);
    let mut prompt_tokens = 0;
    for line in &lines {
        assert_eq!(line["status"], "succeeded", "{line}");
        assert!(!line["result"]["text"].as_str().expect("text").is_empty());
        let i: usize = line["custom_id"].as_str().expect("id")[4..]
            .parse()
            .expect("index");
        // provider-sim counts a prompt's tokens as a quarter of its characters: the template
        // was filled with this item's fields.
        let prompt = format!("Describe mug {i} ({} g) for a shop.", 300 + i);
        let expected = prompt.chars().count().div_ceil(4) as i64;
        assert_eq!(line["usage"]["prompt_tokens"], expected, "{line}");
        prompt_tokens += expected;
    }
    assert_eq!(done["usage"]["prompt_tokens"], prompt_tokens);
    let stored: String = sqlx::query_scalar(
        "select request->>'prompt' from jobs where batch_id = $1 and custom_id = 'sku-7'",
    )
    .bind(id.parse::<BatchId>().expect("batch id"))
    .fetch_one(&stack.pool)
    .await
    .expect("item");
    assert_eq!(stored, "Describe mug 7 (307 g) for a shop.");

    let listed: Value = stack
        .get(&format!("/v1/jobs?batch_id={id}&limit=100"))
        .await
        .json()
        .await
        .expect("jobs");
    let listed = listed["data"].as_array().expect("data");
    assert_eq!(listed.len(), 30, "the batch's items, and only them");
    assert!(listed.iter().all(|job| job["batch_id"] == id.as_str()));
    assert_eq!(
        listed
            .iter()
            .filter(|job| job["custom_id"] == "sku-7")
            .count(),
        1
    );

    let late = client()
        .post(stack.url(&format!("/v1/batches/{id}/cancel")))
        .bearer_auth(&stack.token)
        .send()
        .await
        .expect("cancel");
    assert_eq!(problem(late, 409).await["code"], "batch_not_cancellable");
    // Items do not announce themselves one by one.
    assert_eq!(stack.rows("webhook_deliveries").await, 0);
    stack.stop().await;
}

#[tokio::test]
async fn jsonl_and_array_batches_are_validated_whole_and_errors_name_the_item() {
    let stack = Stack::with(idle()).await;
    let jsonl = "{\"custom_id\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n\
                 \n\
                 {\"custom_id\":\"b\",\"messages\":[{\"role\":\"user\",\"content\":\"yo\"}]}\n";
    let send_jsonl = |query: &str, body: &'static str| {
        client()
            .post(stack.url(&format!("/v1/batches?{query}")))
            .bearer_auth(&stack.token)
            .header("content-type", "application/jsonl")
            .body(body)
            .send()
    };
    let created = accepted(
        send_jsonl("kind=chat&model=llama3", jsonl)
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(created["kind"], "chat");
    assert_eq!(created["counts"]["total"], 2);
    assert_eq!(
        created["counts"]["pending"], 2,
        "no worker: nothing released"
    );

    let wrong_kind = "{\"custom_id\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n\
                      {\"custom_id\":\"b\",\"prompt\":\"yo\"}\n";
    let refused = problem(
        send_jsonl("kind=chat&model=llama3", wrong_kind)
            .await
            .expect("send"),
        422,
    )
    .await;
    assert_eq!(refused["field"], "items[1].prompt", "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .expect("detail")
            .contains("line 2: "),
        "{refused}"
    );
    let broken = "{\"custom_id\":\"a\",\"messages\":[]}\n{\"custom_id\":\n";
    let refused = problem(
        send_jsonl("kind=chat&model=llama3", broken)
            .await
            .expect("send"),
        400,
    )
    .await;
    assert!(
        refused["detail"]
            .as_str()
            .expect("detail")
            .starts_with("line 2, column 13: not valid JSON: "),
        "{refused}"
    );

    let cases = [
        (
            json!({ "kind": "generate", "model": "llama3", "items": [{ "prompt": "x" }] }),
            "items[0].custom_id",
        ),
        (
            json!({ "kind": "generate", "model": "llama3", "template": "Hi {{name}}",
                    "items": [{ "custom_id": "a", "fields": { "name": "x" } },
                              { "custom_id": "b", "fields": {} }] }),
            "items[1].fields",
        ),
        (
            json!({ "kind": "generate", "model": "llama3",
                    "items": [{ "custom_id": "a", "prompt": "x" }, { "custom_id": "a", "prompt": "y" }] }),
            "items[1].custom_id",
        ),
        (
            json!({ "kind": "generate", "model": "no-such-model",
                    "items": [{ "custom_id": "a", "prompt": "x" }] }),
            "model",
        ),
        (
            json!({ "kind": "painting", "model": "llama3", "items": [] }),
            "kind",
        ),
        (
            json!({ "kind": "generate", "model": "llama3", "options": { "top_p": 3 },
                    "items": [{ "custom_id": "a", "prompt": "x" }] }),
            "options.top_p",
        ),
        (
            json!({ "kind": "embedding", "model": "llama3", "options": { "seed": 1 },
                    "items": [{ "custom_id": "a", "input": "x" }] }),
            "options",
        ),
    ];
    for (body, field) in cases {
        let refused = problem(post_batch(&stack, &stack.token, &body).await, 422).await;
        assert_eq!(refused["field"], field, "{refused}");
    }

    let too_many: Vec<Value> = (0..50_001)
        .map(|i| json!({ "custom_id": i.to_string(), "prompt": "x" }))
        .collect();
    let refused = problem(
        post_batch(
            &stack,
            &stack.token,
            &json!({ "kind": "generate", "model": "llama3", "items": too_many }),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(refused["field"], "items");
    assert!(
        refused["detail"]
            .as_str()
            .expect("detail")
            .contains("50000")
    );
    assert_eq!(stack.rows("batches").await, 1);
    assert_eq!(stack.rows("jobs").await, 2);

    // Several insert statements' worth, in one transaction.
    let big = generate_batch(&stack, &stack.token, "p", 12_000).await;
    assert_eq!(big["counts"]["total"], 12_000);
    assert_eq!(big["counts"]["pending"], 12_000);
    stack.stop().await;
}

#[tokio::test]
async fn a_cancelled_batch_cancels_its_waiting_items_and_ends() {
    let stack = Stack::with(idle()).await;
    let items: Vec<Value> = (0..20)
        .map(|i| json!({ "custom_id": format!("c{i}"), "input": format!("text {i}") }))
        .collect();
    let created = accepted(
        post_batch(
            &stack,
            &stack.token,
            &json!({ "kind": "embedding", "model": "llama3", "items": items }),
        )
        .await,
    )
    .await;
    let id = created["id"].as_str().expect("id");
    let cancel = || {
        client()
            .post(stack.url(&format!("/v1/batches/{id}/cancel")))
            .bearer_auth(&stack.token)
            .send()
    };
    let cancelled: Value = cancel().await.expect("cancel").json().await.expect("JSON");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["counts"]["cancelled"], 20);
    assert!(cancelled["finished_at"].is_string());
    let again = cancel().await.expect("cancel again");
    assert_eq!(again.status(), 200, "cancelling twice is harmless");
    let lines = results(&stack, &stack.token, id).await;
    assert!(
        lines
            .iter()
            .all(|l| l["status"] == "cancelled" && l["error"]["code"] == "cancelled")
    );

    let stranger = stack.create_token("globex", Role::Client).await;
    let hidden = client()
        .get(stack.url(&format!("/v1/batches/{id}")))
        .bearer_auth(&stranger)
        .send()
        .await
        .expect("GET");
    assert_eq!(hidden.status(), 404);
    let listed: Value = client()
        .get(stack.url("/v1/batches"))
        .bearer_auth(&stack.token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed["data"][0]["id"], id);
    stack.stop().await;
}

#[tokio::test]
async fn a_large_batch_does_not_delay_another_tenants_single_job_or_small_batch() {
    let stack = Stack::with(Options {
        worker_settings: shared_slots(),
        ..Options::default()
    })
    .await;
    stack.ollama.set_knobs(Knobs {
        latency_ms: 20,
        ..Knobs::default()
    });
    let large = generate_batch(&stack, &stack.token, "a", 2_000).await;
    let large_id = large["id"].as_str().expect("id").to_owned();
    wait_for_batch(&stack, &stack.token, &large_id, |b| {
        b["counts"]["succeeded"].as_i64() > Some(20)
    })
    .await;

    let other = stack.create_token("globex", Role::Client).await;
    let single: Value = client()
        .post(stack.url("/v1/generate"))
        .bearer_auth(&other)
        .header("prefer", "wait=10")
        .json(&json!({ "model": "llama3", "prompt": "just one" }))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("job");
    assert_eq!(single["status"], "succeeded", "{single}");
    let small = generate_batch(&stack, &other, "b", 5).await;
    let small = wait_for_batch(&stack, &other, small["id"].as_str().expect("id"), ended).await;
    assert_eq!(small["counts"]["succeeded"], 5);

    let large = batch(&stack, &stack.token, &large_id).await;
    let pending = large["counts"]["pending"].as_i64().expect("pending");
    assert!(
        pending > 1_000,
        "most of the large batch still waits: {large}"
    );
    stack.stop().await;
}

/// Few slots and a shallow bulk queue, so that a batch keeps the worker busy for a while.
fn shared_slots() -> WorkerSettings {
    WorkerSettings {
        concurrency: 4,
        bulk_concurrency: 4,
        bulk_depth: 8,
        ..test_worker_settings()
    }
}

#[tokio::test]
async fn concurrent_dispatchers_never_release_an_item_twice() {
    let stack = Stack::with(idle()).await;
    let created = generate_batch(&stack, &stack.token, "", 2_000).await;
    let id: BatchId = created["id"].as_str().expect("id").parse().expect("id");
    let dispatchers = (0..8).map(|_| {
        let pool = stack.pool.clone();
        tokio::spawn(async move {
            let mut released: Vec<JobId> = Vec::new();
            loop {
                let mut tx = pool.begin().await.expect("begin");
                let round = tollgate_core::db::dispatch::release(&mut tx, &[(id, 37)])
                    .await
                    .expect("release");
                tx.commit().await.expect("commit");
                if round.is_empty() {
                    return released;
                }
                released.extend(round.into_iter().map(|(id, _trace)| id));
            }
        })
    });
    let mut all = Vec::new();
    for dispatcher in dispatchers {
        all.extend(dispatcher.await.expect("dispatcher"));
    }
    let unique: HashSet<JobId> = all.iter().copied().collect();
    assert_eq!(all.len(), 2_000, "every item released");
    assert_eq!(unique.len(), 2_000, "none twice");

    // And two whole workers, each with its dispatcher, run a batch with one provider call per item.
    let second = accepted(
        post_batch(
            &stack,
            &stack.token,
            &json!({ "kind": "generate", "model": "llama3",
                     "items": (0..300).map(|i| json!({ "custom_id": i.to_string(), "prompt": "y" }))
                                      .collect::<Vec<_>>() }),
        )
        .await,
    )
    .await;
    let workers = [
        stack.start_worker(test_worker_settings()).await,
        stack.start_worker(test_worker_settings()).await,
    ];
    let second_id = second["id"].as_str().expect("id");
    let done = wait_for_batch(&stack, &stack.token, second_id, |b| {
        b["counts"]["succeeded"] == 300
    })
    .await;
    assert_eq!(done["counts"]["failed"], 0);
    let calls: i64 = sqlx::query_scalar(
        "select count(*) from job_attempts a join jobs j on j.id = a.job_id where j.batch_id = $1",
    )
    .bind(second_id.parse::<BatchId>().expect("id"))
    .fetch_one(&stack.pool)
    .await
    .expect("attempts");
    assert_eq!(calls, 300);
    for worker in workers {
        worker.crash().await;
    }
    stack.stop().await;
}

#[tokio::test]
async fn a_batch_announces_its_end_with_one_signed_webhook_and_its_items_none() {
    let stack = Stack::start().await;
    let receiver = Receiver::start(vec![200]).await;
    let secret = set_endpoint(&stack, json!(receiver.url)).await["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let created = generate_batch(&stack, &stack.token, "w", 5).await;
    let id = created["id"].as_str().expect("id");
    wait_for_batch(&stack, &stack.token, id, ended).await;

    let received = receiver.wait_for(1).await;
    let event: Value = serde_json::from_str(&received[0].body).expect("JSON body");
    assert_eq!(event["type"], "batch.completed");
    assert_eq!(event["data"]["id"], id);
    assert_eq!(event["data"]["counts"]["succeeded"], 5);
    assert_eq!(signatures_by(&secret, &received[0]), 1);
    assert_eq!(
        stack.rows("webhook_deliveries").await,
        1,
        "one delivery, for the batch"
    );

    // A cancelled batch says so, whether its item was waiting or running (a slow provider keeps
    // it from completing first); its own URL replaces the tenant's endpoint.
    stack.ollama.set_knobs(Knobs {
        latency_ms: 1_500,
        ..Knobs::default()
    });
    let own = Receiver::start(vec![200]).await;
    let waiting = accepted(
        post_batch(
            &stack,
            &stack.token,
            &json!({ "kind": "generate", "model": "llama3", "webhook_url": own.url,
                     "items": [{ "custom_id": "x", "prompt": "slow" }] }),
        )
        .await,
    )
    .await;
    assert_eq!(waiting["webhook_url"], own.url.as_str());
    let wid = waiting["id"].as_str().expect("id");
    let cancel = client()
        .post(stack.url(&format!("/v1/batches/{wid}/cancel")))
        .bearer_auth(&stack.token)
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancel.status(), 200);
    let done = wait_for_batch(&stack, &stack.token, wid, ended).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    let received = own.wait_for(1).await;
    let event: Value = serde_json::from_str(&received[0].body).expect("JSON body");
    assert_eq!(event["type"], "batch.cancelled");
    assert_eq!(event["data"]["id"], wid);
    stack.stop().await;
}

#[tokio::test]
async fn a_batch_streams_its_progress_until_it_ends() {
    let stack = Stack::with(Options {
        worker_settings: shared_slots(),
        ..Options::default()
    })
    .await;
    stack.ollama.set_knobs(Knobs {
        latency_ms: 100,
        ..Knobs::default()
    });
    let created = generate_batch(&stack, &stack.token, "s", 24).await;
    let id = created["id"].as_str().expect("id");
    let response = client()
        .get(stack.url(&format!("/v1/batches/{id}/events")))
        .bearer_auth(&stack.token)
        .send()
        .await
        .expect("open the stream");
    let (events, _) = read_stream(response, WAIT).await;

    assert!(events.len() >= 2, "progress along the way: {events:?}");
    assert!(events.iter().all(|e| e.event == "batch"));
    let ended: Vec<i64> = events
        .iter()
        .map(|e| e.id.parse().expect("the id counts ended items"))
        .collect();
    assert!(ended.windows(2).all(|w| w[0] <= w[1]), "{ended:?}");
    let last = &events.last().expect("a last event").data;
    assert_eq!(last["status"], "completed");
    assert_eq!(last["counts"]["succeeded"], 24);
    assert_eq!(ended.last(), Some(&24));

    // Reconnecting after the end gets the final state once, and the stream ends.
    let again = client()
        .get(stack.url(&format!("/v1/batches/{id}/events")))
        .bearer_auth(&stack.token)
        .header("last-event-id", "24")
        .send()
        .await
        .expect("reopen");
    let (events, _) = read_stream(again, WAIT).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data["status"], "completed");
    stack.stop().await;
}

#[tokio::test]
async fn batch_items_leave_a_providers_last_slot_to_single_jobs() {
    let stack = Stack::with(Options {
        host_slots: 2,
        ..Options::default()
    })
    .await;
    stack.ollama.set_knobs(Knobs {
        latency_ms: 150,
        ..Knobs::default()
    });
    let created = generate_batch(&stack, &stack.token, "q", 12).await;
    let id = created["id"].as_str().expect("id").to_owned();
    wait_for_batch(&stack, &stack.token, &id, |b| {
        b["counts"]["succeeded"].as_i64() >= Some(2)
    })
    .await;
    let single = stack.generate("llama3", "a single job").await;
    assert_eq!(single["status"], "succeeded");
    wait_for_batch(&stack, &stack.token, &id, ended).await;

    // (started, finished) of every provider call, with whether it was a batch item's.
    let calls: Vec<(
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        bool,
    )> = sqlx::query_as(
        "select a.started_at, a.started_at + make_interval(secs => a.latency_ms / 1000.0),
                    j.batch_id is not null
               from job_attempts a join jobs j on j.id = a.job_id",
    )
    .fetch_all(&stack.pool)
    .await
    .expect("calls");
    let overlap = |a: &(_, _, bool), b: &(_, _, bool)| a.0 < b.1 && b.0 < a.1;
    let bulk: Vec<_> = calls.iter().filter(|c| c.2).collect();
    assert_eq!(bulk.len(), 12);
    for (i, a) in bulk.iter().enumerate() {
        for b in &bulk[i + 1..] {
            assert!(
                !overlap(a, b),
                "two batch calls at once with 2 slots: {a:?} {b:?}"
            );
        }
    }
    let mine = calls.iter().find(|c| !c.2).expect("the single job's call");
    assert!(
        bulk.iter().any(|b| overlap(b, mine)),
        "the single job took the slot batch items leave free, beside a batch call"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_batch_item_waiting_to_retry_comes_back_through_the_bulk_queue() {
    let stack = Stack::with(Options {
        settings: SettingsChange {
            provider_attempts: Some(1),
            ..SettingsChange::default()
        },
        ..Options::default()
    })
    .await;
    // Every call is told to come back in 5 s: the item waits in the 5 s bucket.
    stack.ollama.set_knobs(Knobs {
        rate_limit_rate: 1.0,
        retry_after_secs: 5,
        ..Knobs::default()
    });
    let created = accepted(
        post_batch(
            &stack,
            &stack.token,
            &json!({ "kind": "generate", "model": "llama3",
                     "items": [{ "custom_id": "later", "prompt": "busy now" }] }),
        )
        .await,
    )
    .await;
    let id = created["id"].as_str().expect("id").to_owned();
    wait_for_batch(&stack, &stack.token, &id, |b| b["counts"]["running"] == 1).await;
    let waiting = |queue: String| async {
        let raw = stack.raw_broker().await.expect("connected");
        raw.message_count(queue).await
    };
    let bucket = Duration::from_secs(5);
    tokio::time::timeout(WAIT, async {
        while waiting(stack.topology.bulk_wait_queue(bucket)).await != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the item waits in the bulk wait queue");
    assert_eq!(waiting(stack.topology.wait_queue(bucket)).await, 0);

    stack.ollama.set_knobs(Knobs::default());
    let done = wait_for_batch(&stack, &stack.token, &id, ended).await;
    assert_eq!(done["counts"]["succeeded"], 1, "{done}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_lettered_item_is_requeued_into_its_batch_which_ends_again() {
    let stack = Stack::with(idle()).await;
    let created = generate_batch(&stack, &stack.token, "dl", 2).await;
    let id = created["id"].as_str().expect("id");
    let batch_id: BatchId = id.parse().expect("batch id");
    let items: Vec<JobId> =
        sqlx::query_scalar("select id from jobs where batch_id = $1 order by id")
            .bind(batch_id)
            .fetch_all(&stack.pool)
            .await
            .expect("items");
    // What the dead-letter consumer leaves of an item whose message kept failing; its sibling
    // ended another way.
    sqlx::query(
        "update jobs set status = 'failed', error_code = 'internal_error', error_message = 'x',
                finished_at = now(), dead_lettered_at = now()
          where id = $1",
    )
    .bind(items[0])
    .execute(&stack.pool)
    .await
    .expect("dead-letter the first item");
    sqlx::query("update jobs set status = 'cancelled', finished_at = now() where id = $1")
        .bind(items[1])
        .execute(&stack.pool)
        .await
        .expect("end the second item");
    let worker = stack.start_worker(test_worker_settings()).await;
    wait_for_batch(&stack, &stack.token, id, |b| b["status"] == "completed").await;

    let response = stack
        .admin(
            reqwest::Method::POST,
            &format!("/v1/admin/dead-letters/{}/requeue", items[0]),
            &Value::Null,
        )
        .await;
    assert_eq!(response.status(), 202);
    let requeued: Value = response.json().await.expect("job");
    assert_eq!(requeued["status"], "pending", "{requeued}");
    // The batch is open again until the item has run, in its own lane, and then ends again.
    let done = wait_for_batch(&stack, &stack.token, id, |b| {
        b["status"] == "completed" && b["counts"]["succeeded"] == 1
    })
    .await;
    assert_eq!(done["counts"]["cancelled"], 1);
    assert_eq!(stack.ollama.calls("/api/generate"), 1);
    let bulk: bool = sqlx::query_scalar("select released_at is not null from jobs where id = $1")
        .bind(items[0])
        .fetch_one(&stack.pool)
        .await
        .expect("released");
    assert!(bulk, "the dispatcher released the item to the bulk queue");

    // An item of a cancelled batch stays failed.
    let other = generate_batch(&stack, &stack.token, "dc", 1).await;
    let other_id: BatchId = other["id"].as_str().expect("id").parse().expect("batch id");
    let item: JobId = sqlx::query_scalar("select id from jobs where batch_id = $1")
        .bind(other_id)
        .fetch_one(&stack.pool)
        .await
        .expect("item");
    sqlx::query(
        "with item as (
            update jobs set status = 'failed', error_code = 'internal_error',
                   finished_at = now(), dead_lettered_at = now()
             where id = $1)
         update batches set status = 'cancelled', cancelled_at = now(), finished_at = now()
          where id = $2",
    )
    .bind(item)
    .bind(other_id)
    .execute(&stack.pool)
    .await
    .expect("cancel the batch");
    let response = stack
        .admin(
            reqwest::Method::POST,
            &format!("/v1/admin/dead-letters/{item}/requeue"),
            &Value::Null,
        )
        .await;
    assert_eq!(response.status(), 409);
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["code"], "batch_cancelled");
    worker.crash().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_item_can_be_followed_as_a_job_though_workers_do_not_broadcast_it() {
    let stack = Stack::with(idle()).await;
    let created = generate_batch(&stack, &stack.token, "f", 1).await;
    let batch_id: BatchId = created["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("batch id");
    let item: JobId = sqlx::query_scalar("select id from jobs where batch_id = $1")
        .bind(batch_id)
        .fetch_one(&stack.pool)
        .await
        .expect("item");
    let stream = client()
        .get(stack.url(&format!("/v1/jobs/{item}/events")))
        .bearer_auth(&stack.token)
        .send()
        .await
        .expect("SSE");
    let worker = stack.start_worker(test_worker_settings()).await;
    // Read again every second (not every 15 s, the safety net for a single job's lost event).
    let (events, _) = read_stream(stream, Duration::from_secs(8)).await;
    assert_eq!(events[0].data["status"], "pending");
    let last = events.last().expect("events");
    assert_eq!(last.data["status"], "succeeded", "{:?}", last.data);
    assert_eq!(last.data["custom_id"], "f0");
    worker.crash().await;
    stack.stop().await;
}
