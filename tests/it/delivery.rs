//! Delivery guarantees: duplicates run once, a dead worker's job is finished exactly once, a
//! publish that never happened is swept up, and a broker outage is survived.

use std::time::{Duration, Instant};

use provider_sim::Knobs;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tollgate_core::db::job_attempts;
use tollgate_core::domain::JobId;
use tollgate_core::queue::{JobMessage, Subscription};
use tollgate_worker::WorkerSettings;

use crate::harness::{Options, Proxy, Stack, eventually, idle, test_worker_settings};

fn one_at_a_time() -> WorkerSettings {
    WorkerSettings {
        concurrency: 1,
        ..test_worker_settings()
    }
}

/// A stack whose sweeper never publishes a job itself, so a test decides what reaches the queues.
fn without_sweeps() -> Options {
    let settings = WorkerSettings {
        sweep_after: Duration::from_secs(3600),
        ..test_worker_settings()
    };
    Options {
        worker_settings: settings,
        ..Options::default()
    }
}

fn job_id(job: &Value) -> JobId {
    job["id"].as_str().expect("id").parse().expect("job id")
}

#[tokio::test]
async fn a_message_delivered_twice_runs_once() {
    let stack = Stack::with(idle()).await;
    let job = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "once" }),
        )
        .await;
    stack
        .broker
        .publish_job(job_id(&job), None)
        .await
        .expect("publish a duplicate");
    // One worker, one message at a time: by the time this later job is done, the duplicate
    // ahead of it in the queue has been handled too.
    let marker = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "marker" }),
        )
        .await;

    let _worker = stack.start_worker(one_at_a_time()).await;
    stack
        .wait_until_finished(marker["id"].as_str().expect("id"))
        .await;

    let job = stack
        .wait_until_finished(job["id"].as_str().expect("id"))
        .await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["attempts"], 1);
    assert_eq!(
        job_attempts::list(&stack.pool, job_id(&job))
            .await
            .expect("attempts")
            .len(),
        1
    );
    assert_eq!(
        stack.ollama.calls("/api/generate"),
        2,
        "one call for the job, one for the marker"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_worker_that_dies_mid_call_leaves_the_job_finished_once_and_its_call_in_spend() {
    let stack = Stack::with(idle()).await;
    stack.ollama.set_knobs(Knobs {
        latency_ms: 60_000,
        ..Knobs::default()
    });
    let no_grace = WorkerSettings {
        shutdown_grace: Duration::ZERO,
        ..one_at_a_time()
    };
    let doomed = stack.start_worker(no_grace).await;
    let job = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "survive" }),
        )
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    stack
        .wait_for_job(&id, |job| job["status"] == "running")
        .await;
    eventually("the dying worker calls the provider", || async {
        stack.ollama.calls("/api/generate") == 1
    })
    .await;

    doomed.crash().await;
    stack.ollama.set_knobs(Knobs::default());
    let _survivor = stack.start_worker(one_at_a_time()).await;
    let job = stack.wait_until_finished(&id).await;

    assert_eq!(job["status"], "succeeded");
    assert_eq!(
        job["attempts"], 2,
        "the dead worker's call is recorded, estimated, with the survivor's end"
    );
    let attempts = job_attempts::list(&stack.pool, job_id(&job))
        .await
        .expect("attempts");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].outcome, "abandoned");
    assert_eq!(attempts[0].claim, 1, "the dead worker's claim");
    assert_eq!(attempts[0].provider, "local");
    assert!(attempts[0].prompt_tokens.is_some_and(|t| t > 0));
    assert_eq!(
        attempts[0].completion_tokens, attempts[1].completion_tokens,
        "its answer is estimated as long as the survivor's"
    );
    assert_eq!(attempts[1].outcome, "succeeded");
    assert_eq!(
        attempts[1].claim, 2,
        "claimed by the dead worker, then by the survivor"
    );
    // The operator's spend counts every call the provider answered, the estimated one marked;
    // the tenant is billed once.
    let spend: Value = stack
        .admin(reqwest::Method::GET, "/v1/admin/spend", &Value::Null)
        .await
        .json()
        .await
        .expect("spend");
    let ollama = &spend["providers"][0];
    assert_eq!(ollama["provider"], "local", "{spend}");
    assert_eq!(ollama["calls"], 2, "{spend}");
    assert_eq!(ollama["estimated_calls"], 1, "{spend}");
    assert_eq!(spend["tenants"][0]["requests"], 1, "{spend}");
    assert_eq!(stack.ollama.calls("/api/generate"), 2);
    stack.stop().await;
}

#[tokio::test]
async fn a_job_whose_publish_never_happened_is_recovered_by_the_sweeper() {
    let stack = Stack::start().await;
    // What the api leaves behind when it crashes between commit and publish.
    let orphan = stack.insert_unpublished_job("orphan").await;

    let job = stack.wait_until_finished(&orphan.to_string()).await;

    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["attempts"], 1);
    stack.stop().await;
}

/// A chat the previous release wrote (its messages plain texts, its JSON answer asked for in
/// `options.format`), waiting in the queue across the upgrade, is read into the conversation model,
/// claimed and run.
#[tokio::test]
async fn a_chat_row_the_previous_release_wrote_runs_after_the_upgrade() {
    let stack = Stack::start().await;
    let job = stack.insert_unpublished_job("placeholder").await;
    let written_before = json!({
        "kind": "chat", "model": "llama3",
        "messages": [{ "role": "system", "content": "Answer in JSON." },
                     { "role": "user", "content": "A mug, described." }],
        "options": { "format": "json", "temperature": 0.2 }
    });
    sqlx::query("update jobs set kind = 'chat', request = $2 where id = $1")
        .bind(job)
        .bind(&written_before)
        .execute(&stack.pool)
        .await
        .expect("an old row");

    let done = stack.wait_until_finished(&job.to_string()).await;

    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["message"]["role"], "assistant", "{done}");
    assert_eq!(stack.ollama.calls("/api/chat"), 1);
    stack.stop().await;
}

#[tokio::test]
async fn the_api_and_the_worker_survive_a_broker_outage() {
    let proxy = Proxy::start().await;
    let stack = Stack::with(Options {
        amqp_url: Some(proxy.url.clone()),
        ..Options::default()
    })
    .await;
    let body = json!({ "model": "llama3", "prompt": "before" });
    let before = stack.submit("/v1/generate", &body).await;
    stack
        .wait_until_finished(before["id"].as_str().expect("id"))
        .await;

    proxy.cut();
    eventually("readiness reports the outage", || async {
        stack.get("/readyz").await.status() == 503
    })
    .await;
    let ready: Value = stack.get("/readyz").await.json().await.expect("ready");
    assert_eq!(ready["checks"]["rabbitmq"], "unavailable");
    let refused = stack.post("/v1/generate", &body).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));

    proxy.restore();
    eventually("readiness recovers", || async {
        stack.get("/readyz").await.status() == 200
    })
    .await;
    let after = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "after" }),
        )
        .await;
    let after = stack
        .wait_until_finished(after["id"].as_str().expect("id"))
        .await;

    assert_eq!(after["status"], "succeeded");
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&stack.pool)
        .await
        .expect("count");
    assert_eq!(jobs, 2, "the refused submission wrote nothing");
    stack.stop().await;
}

#[tokio::test]
async fn a_worker_is_back_at_work_within_two_seconds_of_a_long_broker_outage() {
    let proxy = Proxy::start().await;
    let stack = Stack::with(idle()).await;
    let worker = stack
        .start_worker_through(&proxy.url, test_worker_settings())
        .await;
    let before = stack.generate("llama3", "before").await;
    assert_eq!(before["status"], "succeeded");

    // The worker loses the broker for ten seconds, long enough for a reconnect backoff without a
    // low ceiling to have grown past it; the api keeps its own connection and takes a job.
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(10)).await; // the outage itself, not a wait
    let job = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "during" }),
        )
        .await;
    proxy.restore();
    let restored = Instant::now();
    let done = stack
        .wait_until_finished(job["id"].as_str().expect("id"))
        .await;
    let back_after = restored.elapsed();

    assert_eq!(done["status"], "succeeded");
    assert!(
        back_after < Duration::from_millis(2500),
        "the job ran {back_after:?} after the broker came back"
    );
    worker.crash().await;
    stack.stop().await;
}

#[tokio::test]
async fn a_dead_lettered_job_is_failed_with_internal_error() {
    let stack = Stack::with(without_sweeps()).await;
    let job = stack.insert_unpublished_job("poison").await;
    // What the broker does once a message reached its delivery limit: it lands on the
    // dead-letter exchange instead of the work queue.
    let raw = stack.raw_broker().await.expect("connected");
    let message = tollgate_core::queue::JobMessage::new(job);
    raw.publish(
        stack.topology.dead_letter_exchange(),
        "job",
        &tollgate_core::queue::Versioned::encode(&message),
    )
    .await;

    let failed = stack.wait_until_finished(&job.to_string()).await;

    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "internal_error");
    stack.stop().await;
}

#[tokio::test]
async fn a_job_the_worker_cannot_read_goes_through_the_dead_letter_queue_to_failed() {
    let stack = Stack::with(without_sweeps()).await;
    let job = stack.insert_unpublished_job("unreadable").await;
    // A request this worker version cannot decode: every attempt would fail the same way.
    sqlx::query("update jobs set request = '{\"kind\": \"telepathy\"}' where id = $1")
        .bind(job)
        .execute(&stack.pool)
        .await
        .expect("corrupt the request");

    stack.broker.publish_job(job, None).await.expect("publish");
    let failed = stack.wait_until_finished(&job.to_string()).await;

    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "internal_error");
    assert_eq!(stack.ollama.calls("/api/generate"), 0);
    stack.stop().await;
}

#[tokio::test]
async fn a_retrying_job_whose_delayed_message_was_lost_is_sent_again_once_due() {
    let stack = Stack::start().await;
    // What a worker leaves behind when it parks a job for a retry and dies before publishing the
    // delayed message (or the wait queue loses it).
    let parked = stack.insert_unpublished_job("parked").await;
    sqlx::query(
        "update jobs set status = 'retrying', retries = 1, claims = 1,
                retry_at = now() - interval '2 seconds'
          where id = $1",
    )
    .bind(parked)
    .execute(&stack.pool)
    .await
    .expect("park the job");

    let job = stack.wait_until_finished(&parked.to_string()).await;

    assert_eq!(job["status"], "succeeded");
    let attempts = job_attempts::list(&stack.pool, parked)
        .await
        .expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0].claim, 2,
        "the sweeper's message made the second run"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_message_that_keeps_failing_is_dead_lettered_and_an_admin_can_requeue_its_job() {
    let stack = Stack::with(Options {
        worker: false,
        ..without_sweeps()
    })
    .await;
    let job = stack.insert_unpublished_job("poison").await;
    stack.broker.publish_job(job, None).await.expect("publish");

    // A worker that crashes on this message every time: it takes it and the broker gets it back.
    let queue = stack.topology.jobs_queue();
    let shutdown = CancellationToken::new();
    let mut subscription = Subscription::<JobMessage>::open(&stack.broker, &queue, 1, &shutdown)
        .await
        .expect("subscribed");
    let mut deliveries = 0;
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_secs(2), subscription.next()).await
    {
        deliveries += 1;
        assert_eq!(delivery.message().map(|m| m.job_id), Some(job));
        delivery.requeue().await;
    }
    drop(subscription);
    assert_eq!(
        deliveries,
        tollgate_core::queue::DELIVERY_LIMIT + 1,
        "the broker stopped redelivering at its delivery limit"
    );

    let _worker = stack.start_worker(test_worker_settings()).await;
    let failed = stack.wait_until_finished(&job.to_string()).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "internal_error");
    assert_eq!(stack.ollama.calls("/api/generate"), 0);

    let letters: Value = stack
        .admin(reqwest::Method::GET, "/v1/admin/dead-letters", &Value::Null)
        .await
        .json()
        .await
        .expect("dead letters");
    assert_eq!(
        letters["data"][0]["job"]["id"],
        job.to_string(),
        "{letters}"
    );
    assert!(letters["data"][0]["dead_lettered_at"].is_string());
    let client_try = stack
        .post(&format!("/v1/admin/dead-letters/{job}/requeue"), &json!({}))
        .await;
    assert_eq!(client_try.status(), 403, "clients cannot requeue");

    let requeued = stack
        .admin(
            reqwest::Method::POST,
            &format!("/v1/admin/dead-letters/{job}/requeue"),
            &Value::Null,
        )
        .await;
    assert_eq!(requeued.status(), 202);
    let done = stack.wait_until_finished(&job.to_string()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let letters: Value = stack
        .admin(reqwest::Method::GET, "/v1/admin/dead-letters", &Value::Null)
        .await
        .json()
        .await
        .expect("dead letters");
    assert_eq!(letters["data"], json!([]));
    let again = stack
        .admin(
            reqwest::Method::POST,
            &format!("/v1/admin/dead-letters/{job}/requeue"),
            &Value::Null,
        )
        .await;
    assert_eq!(
        again.status(),
        404,
        "only a dead-lettered job can be requeued"
    );
    stack.stop().await;
}

/// Marking confirmed publishes never waits for a row another statement holds (a claim, a run's
/// end): waiting made it one side of a deadlock with the closing statement, resolved only after
/// Postgres's one-second `deadlock_timeout` (issue 38). The held job is left unmarked (it is being
/// claimed or ended); the others are marked.
#[tokio::test]
async fn marking_publishes_skips_a_held_job_rather_than_waiting_for_it() {
    let stack = Stack::with(idle()).await;
    let held = stack.insert_unpublished_job("held by a run's end").await;
    let free = stack.insert_unpublished_job("nobody holds it").await;
    let holder = stack.hold_job(held).await;

    let marked = tokio::time::timeout(
        Duration::from_secs(5),
        tollgate_core::db::jobs::mark_published(&stack.pool, &[held, free]),
    )
    .await
    .expect("marked without waiting for the held row");
    marked.expect("the statement");
    holder.rollback().await.expect("let go");

    let published: Vec<(JobId, bool)> = sqlx::query_as(
        "select id, published_at is not null from jobs where id = any($1) order by id",
    )
    .bind(vec![held, free])
    .fetch_all(&stack.pool)
    .await
    .expect("the jobs");
    assert_eq!(published, vec![(held, false), (free, true)]);
    stack.stop().await;
}
