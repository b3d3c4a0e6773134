//! Statements whose commit answer was lost: Postgres committed them, but the connection broke
//! before the worker heard so, and the worker tries the statement again. A proxy in front of
//! Postgres forwards the statement, waits for the server's answer (sent once it committed), and
//! closes the client's side without forwarding it. The retry must find its own effect and return
//! it without counting it again. And a claim lost whole, as a crash of the database can lose one
//! (claims commit without waiting for the disk): the run's end takes the job again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use provider_sim::Knobs;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::harness::{
    Stack, database_url, eventually, idle, resolve, test_api_settings, test_worker_settings,
};

/// A TCP proxy to Postgres that, once armed with a piece of a statement's text, loses the answer to
/// the first statement that carries it (prepared, or a simple query such as `COMMIT`): the
/// statement reaches the server, the server's answer up to its `ReadyForQuery` (sent after the
/// commit) is swallowed, and both sides are closed.
struct AnswerLosingProxy {
    addr: SocketAddr,
    armed: Arc<Mutex<Option<&'static str>>>,
    lost: Arc<Mutex<u32>>,
    stop: CancellationToken,
}

impl AnswerLosingProxy {
    async fn start() -> Self {
        let target = resolve(&database_url(), 5432).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (armed, lost, stop) = (
            Arc::new(Mutex::new(None)),
            Arc::new(Mutex::new(0)),
            CancellationToken::new(),
        );
        let (accept_armed, accept_lost, accept_stop) = (armed.clone(), lost.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let inbound = tokio::select! {
                    () = accept_stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((inbound, _)) => inbound,
                        Err(_) => return,
                    },
                };
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (armed, lost) = (accept_armed.clone(), accept_lost.clone());
                tokio::spawn(relay(inbound, outbound, armed, lost));
            }
        });
        Self {
            addr,
            armed,
            lost,
            stop,
        }
    }

    /// Loses the answer to the next statement whose text contains `needle`.
    fn lose_answer_to(&self, needle: &'static str) {
        *self.armed.lock().expect("proxy lock") = Some(needle);
    }

    /// How many answers it lost.
    fn lost(&self) -> u32 {
        *self.lost.lock().expect("proxy lock")
    }
}

impl Drop for AnswerLosingProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One proxied connection (unencrypted: the pool asks for `sslmode=disable`), read message by
/// message both ways (`type (1) | length (4, itself included) | body`, after the client's untyped
/// startup message). Every `Sync` or simple `Query` the client sends is answered by exactly one
/// `ReadyForQuery`, as is the startup: counting both sides lines the answers up with what they
/// answer. When the client executes a statement parsed with the armed text, the answer to that
/// execution — everything after the previous `ReadyForQuery` up to its own, which the server sends
/// once the statement committed — is swallowed, and the connection closed on both sides.
async fn relay(
    inbound: TcpStream,
    outbound: TcpStream,
    armed: Arc<Mutex<Option<&'static str>>>,
    lost: Arc<Mutex<u32>>,
) {
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut server_read, mut server_write) = outbound.into_split();
    // Which `ReadyForQuery` (counted from 1) ends the answer to lose.
    let target: Arc<Mutex<Option<u64>>> = Arc::new(Mutex::new(None));
    let losing = target.clone();
    let upstream = async move {
        let mut pending: Vec<u8> = Vec::new();
        let mut buffer = vec![0; 64 * 1024];
        let mut started = false;
        // The startup is answered by one `ReadyForQuery`.
        let mut points: u64 = 1;
        let mut parsed_armed = false;
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buffer[..n]);
            let mut at = 0;
            if !started && pending.len() >= 4 {
                let length = be_u32(&pending[0..4]);
                if pending.len() >= length {
                    at = length;
                    started = true;
                }
            }
            while started && pending.len() >= at + 5 {
                let length = be_u32(&pending[at + 1..at + 5]);
                if pending.len() < at + 1 + length {
                    break;
                }
                let body = &pending[at + 5..at + 1 + length];
                match pending[at] {
                    b'P' => {
                        let mut needle = armed.lock().expect("proxy lock");
                        if needle.is_some_and(|needle| contains(body, needle.as_bytes())) {
                            *needle = None;
                            parsed_armed = true;
                        }
                    }
                    b'E' if parsed_armed => {
                        parsed_armed = false;
                        *losing.lock().expect("proxy lock") = Some(points + 1);
                    }
                    b'Q' => {
                        // A simple query (a transaction's `COMMIT`) is its own sync point.
                        let mut needle = armed.lock().expect("proxy lock");
                        if needle.is_some_and(|needle| contains(body, needle.as_bytes())) {
                            *needle = None;
                            *losing.lock().expect("proxy lock") = Some(points + 1);
                        }
                        points += 1;
                    }
                    b'S' => points += 1,
                    _ => {}
                }
                at += 1 + length;
            }
            if server_write.write_all(&pending[..at]).await.is_err() {
                return;
            }
            pending.drain(..at);
        }
    };
    let downstream = async move {
        let mut pending: Vec<u8> = Vec::new();
        let mut buffer = vec![0; 64 * 1024];
        let mut ready: u64 = 0;
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buffer[..n]);
            let mut at = 0;
            let mut forward = 0;
            while pending.len() >= at + 5 {
                let length = be_u32(&pending[at + 1..at + 5]);
                if pending.len() < at + 1 + length {
                    break;
                }
                let kind = pending[at];
                let to_lose = *target.lock().expect("proxy lock");
                if to_lose.is_some_and(|t| ready + 1 >= t) {
                    if kind == b'Z' {
                        *lost.lock().expect("proxy lock") += 1;
                        return; // both halves dropped: the client sees its connection close
                    }
                } else {
                    forward = at + 1 + length;
                    if kind == b'Z' {
                        ready += 1;
                    }
                }
                at += 1 + length;
            }
            if client_write.write_all(&pending[..forward]).await.is_err() {
                return;
            }
            pending.drain(..at);
        }
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

fn be_u32(bytes: &[u8]) -> usize {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The worker claims a job; Postgres commits the claim, but its answer is lost with the
/// connection. The worker tries the same claim again on a new connection: it finds the job running
/// under its own claim and runs it at once — one claim counted, no run taken for abandoned (no
/// estimated attempt for a call that never happened), the job done long before its lease would
/// have run out.
#[tokio::test]
async fn a_claim_whose_commit_answer_was_lost_is_recognised_by_its_retry() {
    let stack = Stack::with(idle()).await;
    let proxy = AnswerLosingProxy::start().await;
    let pool = stack.pool_at(proxy.addr).await;
    let settings = tollgate_worker::WorkerSettings {
        // Without the fix the job would wait out this lease and run again as an abandoned run.
        lease: Duration::from_secs(3),
        ..test_worker_settings()
    };
    let _worker = stack.start_worker_on(pool, settings).await;
    // The one-job claim's statement, and only it, carries this text.
    proxy.lose_answer_to("set status = 'running', claim_id = $2,");

    let job = stack
        .generate("llama3", "a claim answered into the void")
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    let finished = stack.wait_until_finished(&id).await;

    assert_eq!(proxy.lost(), 1, "the claim's answer was lost once");
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_eq!(finished["attempts"], 1, "{finished}");
    let (claims, abandoned_recorded): (i32, i32) =
        sqlx::query_as("select claims, abandoned_recorded from jobs where id = $1::uuid")
            .bind(&id)
            .fetch_one(&stack.pool)
            .await
            .expect("the job");
    assert_eq!(claims, 1, "the retried claim is not counted again");
    assert_eq!(abandoned_recorded, 0);
    let outcomes: Vec<(String,)> =
        sqlx::query_as("select outcome from job_attempts where job_id = $1::uuid")
            .bind(&id)
            .fetch_all(&stack.pool)
            .await
            .expect("attempts");
    assert_eq!(
        outcomes,
        vec![("succeeded".to_owned(),)],
        "no abandoned-run estimate"
    );
    stack.stop().await;
}

/// Jobs queued before the worker starts are delivered to it together and claimed by one
/// statement (`claim_many`); Postgres commits it, but its answer is lost. The statement tried
/// again finds every job running under its own claim: each job runs once, its claim counted once,
/// no run taken for abandoned.
#[tokio::test]
async fn a_group_claim_whose_commit_answer_was_lost_is_recognised_by_its_retry() {
    let stack = Stack::with(idle()).await;
    let ids = stack.submit_many(24, "claimed together").await;
    let proxy = AnswerLosingProxy::start().await;
    let pool = stack.pool_at(proxy.addr).await;
    let settings = tollgate_worker::WorkerSettings {
        lease: Duration::from_secs(3),
        ..test_worker_settings()
    };
    // The statement that claims several jobs, and only it, carries this text.
    proxy.lose_answer_to("from (select distinct on (id) id, claim_id, redelivered");
    let _worker = stack.start_worker_on(pool, settings).await;

    for id in &ids {
        let finished = stack.wait_until_finished(id).await;
        assert_eq!(finished["status"], "succeeded", "{finished}");
        assert_eq!(finished["attempts"], 1, "{finished}");
    }
    assert_eq!(proxy.lost(), 1, "a group claim's answer was lost once");
    let (claims, abandoned): (i64, i64) =
        sqlx::query_as("select sum(claims)::bigint, sum(abandoned_recorded)::bigint from jobs")
            .fetch_one(&stack.pool)
            .await
            .expect("the jobs");
    assert_eq!(claims, 24, "each job claimed once");
    assert_eq!(abandoned, 0);
    assert_eq!(
        stack.rows("job_attempts").await,
        24,
        "no abandoned-run estimate"
    );
    stack.stop().await;
}

/// The worker runs a job and ends it; Postgres commits the closing statement, but its answer is
/// lost with the connection. The retry finds the end this claim already wrote and answers as if it
/// had just written it, so the worker counts the job finished and publishes its event, instead of
/// dropping the result as if another worker had taken the job. Nothing is billed twice.
#[tokio::test]
async fn a_run_end_whose_commit_answer_was_lost_is_told_as_if_just_written() {
    let stack = Stack::with(idle()).await;
    let proxy = AnswerLosingProxy::start().await;
    let pool = stack.pool_at(proxy.addr).await;
    let worker = stack.start_worker_on(pool, test_worker_settings()).await;
    // The closing statement, and only it, carries this text.
    proxy.lose_answer_to("), parked as (");

    let job = stack
        .generate("llama3", "an end answered into the void")
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    let finished = stack.wait_until_finished(&id).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");

    let finished_counted = || async {
        let metrics = crate::harness::client()
            .get(format!("{}/metrics", worker.probe))
            .send()
            .await
            .expect("the worker's metrics")
            .text()
            .await
            .expect("text");
        metrics
            .lines()
            .filter(|line| line.starts_with("tollgate_jobs_finished_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
            == 1.0
    };
    crate::harness::eventually("the worker counts the job finished once", finished_counted).await;
    assert_eq!(
        proxy.lost(),
        1,
        "the closing statement's answer was lost once"
    );
    assert_eq!(stack.rows("usage_records").await, 1, "billed once");
    assert_eq!(stack.rows("job_attempts").await, 1);
    stack.stop().await;
}

/// Every call fails, so the run parks its job for a delayed retry; Postgres commits the park, but
/// its answer is lost. The retry finds the park this claim already wrote and answers as if it had
/// just written it, so the worker publishes the delayed message at once — it does not leave the job
/// for the sweeper to find after its retry was due — and the park is counted once.
#[tokio::test]
async fn a_park_whose_commit_answer_was_lost_is_told_as_if_just_written() {
    let stack = Stack::with(idle()).await;
    stack.ollama.set_knobs(provider_sim::Knobs {
        error_rate: 1.0,
        ..provider_sim::Knobs::default()
    });
    let proxy = AnswerLosingProxy::start().await;
    let pool = stack.pool_at(proxy.addr).await;
    let _worker = stack.start_worker_on(pool, test_worker_settings()).await;
    proxy.lose_answer_to("), parked as (");

    let job = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "a park answered into the void" }),
        )
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    stack
        .wait_for_job(&id, |job| job["status"] == "retrying")
        .await;
    let published_before_due = || async {
        let (early,): (Option<bool>,) =
            sqlx::query_as("select published_at < retry_at from jobs where id = $1::uuid")
                .bind(&id)
                .fetch_one(&stack.pool)
                .await
                .expect("the job");
        early == Some(true)
    };
    crate::harness::eventually(
        "the worker publishes the delayed message before the retry is due",
        published_before_due,
    )
    .await;
    stack.ollama.set_knobs(provider_sim::Knobs::default());
    let finished = stack.wait_until_finished(&id).await;

    assert_eq!(proxy.lost(), 1, "the park's answer was lost once");
    assert_eq!(finished["status"], "succeeded", "{finished}");
    let (claims, retries): (i32, i32) =
        sqlx::query_as("select claims, retries from jobs where id = $1::uuid")
            .bind(&id)
            .fetch_one(&stack.pool)
            .await
            .expect("the job");
    assert_eq!((claims, retries), (2, 1), "one park, counted once");
    assert_eq!(
        stack.rows("job_attempts").await,
        finished["attempts"].as_i64().expect("attempts"),
        "each call recorded once"
    );
    stack.stop().await;
}

/// The api inserts a job; Postgres commits the insert, but its answer is lost. The insert tried
/// again finds the job it wrote and answers `202` with it: the client is not told of an error for a
/// job that exists (and would run), and there is one job.
#[tokio::test]
async fn an_intake_whose_commit_answer_was_lost_accepts_the_job_once() {
    let stack = Stack::with(idle()).await;
    let proxy = AnswerLosingProxy::start().await;
    let pool = stack.pool_at(proxy.addr).await;
    let api = stack.start_api_on(pool, test_api_settings()).await;
    // The first try's insert (its retry is a statement of its own).
    proxy.lose_answer_to("$5::text[], $6::jsonb[],");

    let response = crate::harness::client()
        .post(format!("{api}/v1/generate"))
        .bearer_auth(&stack.token)
        .json(&json!({ "model": "llama3", "prompt": "an insert answered into the void" }))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 202);
    let job: serde_json::Value = response.json().await.expect("job JSON");

    assert_eq!(proxy.lost(), 1, "the insert's answer was lost once");
    assert_eq!(job["status"], "queued", "{job}");
    let stored: Vec<(String,)> = sqlx::query_as("select id::text from jobs")
        .fetch_all(&stack.pool)
        .await
        .expect("jobs");
    assert_eq!(stored, vec![(job["id"].as_str().expect("id").to_owned(),)]);
    stack.stop().await;
}

/// A batch is admitted in a transaction; Postgres commits it, but the answer to the `COMMIT` is
/// lost. The api finds the batch stored and answers `202` with it: the client is not sent to
/// submit a second batch of the same items.
#[tokio::test]
async fn a_batch_whose_commit_answer_was_lost_is_accepted_once() {
    let stack = Stack::with(idle()).await;
    let proxy = AnswerLosingProxy::start().await;
    let pool = stack.pool_at(proxy.addr).await;
    let api = stack.start_api_on(pool, test_api_settings()).await;
    proxy.lose_answer_to("COMMIT");

    let items: Vec<serde_json::Value> = (0..3)
        .map(|n| json!({ "custom_id": format!("item-{n}"), "prompt": format!("item {n}") }))
        .collect();
    let response = crate::harness::client()
        .post(format!("{api}/v1/batches"))
        .bearer_auth(&stack.token)
        .json(&json!({ "kind": "generate", "model": "llama3", "items": items }))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 202);
    let batch: serde_json::Value = response.json().await.expect("batch JSON");

    assert_eq!(proxy.lost(), 1, "the commit's answer was lost once");
    let stored: Vec<(String,)> = sqlx::query_as("select id::text from batches")
        .fetch_all(&stack.pool)
        .await
        .expect("batches");
    assert_eq!(
        stored,
        vec![(batch["id"].as_str().expect("id").to_owned(),)]
    );
    assert_eq!(stack.rows("jobs").await, 3, "its items, once");
    stack.stop().await;
}

/// A claim lost in a crash of the database: claims commit without waiting for the disk, so a
/// crash between a run's claim and its end can leave the job as it was before the claim
/// (`queued`) while the run calls the provider, its message held. The run's end finds no claim of
/// its own, claims the job again and records its end: the job is not lost, its one call is
/// recorded and billed once, and nothing is left queued.
#[tokio::test]
async fn a_claim_lost_in_a_crash_is_taken_again_and_its_run_recorded() {
    let stack = Stack::start().await;
    stack.ollama.set_knobs(Knobs {
        latency_ms: 1_000,
        ..Knobs::default()
    });
    let body = json!({ "model": "llama3", "prompt": "a claim the database forgot" });
    let job = stack.submit("/v1/generate", &body).await;
    let id = job["id"].as_str().expect("id").to_owned();
    let running = || async {
        let status: String = sqlx::query_scalar("select status from jobs where id = $1::uuid")
            .bind(&id)
            .fetch_one(&stack.pool)
            .await
            .expect("the job");
        status == "running"
    };
    eventually("the job is claimed", running).await;

    // What the crash leaves: the row as the claim found it.
    let forgotten = sqlx::query(
        "update jobs set status = 'queued', claim_id = null, claims = claims - 1,
                revision = revision - 1, lease_expires_at = null, started_at = null
          where id = $1::uuid and status = 'running'",
    )
    .bind(&id)
    .execute(&stack.pool)
    .await
    .expect("forget the claim");
    assert_eq!(forgotten.rows_affected(), 1, "claimed while its call ran");
    let finished = stack.wait_until_finished(&id).await;

    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_eq!(finished["attempts"], 1, "{finished}");
    assert_eq!(stack.ollama.calls("/api/generate"), 1, "one provider call");
    let (claims, records): (i32, i64) = sqlx::query_as(
        "select claims, (select count(*) from usage_records where job_id = jobs.id)
           from jobs where id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&stack.pool)
    .await
    .expect("the job");
    assert_eq!(claims, 1, "claimed once, as far as the database knows");
    assert_eq!(records, 1, "the call billed once");
    stack.stop().await;
}
