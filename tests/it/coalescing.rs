//! Work that arrives together is written together: runs claimed and ended by one statement each,
//! submissions inserted in fewer transactions than requests, with every guarantee kept.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tollgate_core::db::job_attempts::{AttemptOutcome, AttemptRecord};
use tollgate_core::db::runs::{self, ClaimRequest, Finish, Outcome};
use tollgate_core::domain::{DataPolicy, JobError, JobErrorCode, JobId, ProviderName, RouteReason};
use tollgate_core::provider::{TokenCounts, TokenDetails};
use uuid::Uuid;

use crate::harness::{Stack, client, idle};

const LEASE: Duration = Duration::from_secs(60);

/// A run of `id` under `claim_id` that succeeded with `prompt` prompt tokens (and one completion
/// token), with its one call.
pub fn succeeded(id: JobId, claim_id: Uuid, prompt: i32) -> Finish {
    let tokens = TokenCounts {
        prompt,
        completion: 1,
        details: TokenDetails::default(),
        estimated: false,
    };
    let call = AttemptRecord {
        provider: ProviderName::LOCAL,
        host: Some("default".into()),
        upstream_model: "llama3".into(),
        started_at: Utc::now(),
        latency: Duration::from_millis(5),
        status_code: Some(200),
        outcome: AttemptOutcome::Succeeded,
        error: None,
        prompt_tokens: Some(prompt),
        completion_tokens: Some(1),
        details: TokenDetails::default(),
        cost: None,
    };
    Finish {
        id,
        claim_id,
        outcome: Outcome::Succeeded {
            provider: ProviderName::LOCAL,
            reason: RouteReason::Active,
            upstream_model: "llama3".into(),
            routed_model: "llama3".into(),
            result: json!({ "response": format!("{prompt} tokens in") }),
            tokens,
            price: None,
            latency: Duration::from_millis(5),
        },
        attempts: vec![call],
        policy: DataPolicy::Any,
    }
}

fn request(id: JobId, redelivered: bool) -> ClaimRequest {
    ClaimRequest {
        id,
        claim_id: Uuid::now_v7(),
        redelivered,
    }
}

#[tokio::test]
async fn runs_ending_together_are_billed_once_each_even_when_another_worker_finished_one() {
    let stack = Stack::with(idle()).await;
    let pool = &stack.pool;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(stack.insert_unpublished_job(&format!("together {n}")).await);
    }
    // Claimed by one statement; a duplicate message delivered beside the original finds its job
    // already claimed by the first.
    let mut requests: Vec<ClaimRequest> = ids.iter().map(|&id| request(id, false)).collect();
    requests.push(request(ids[0], false));
    let claimed = runs::claim_many(pool, &requests, LEASE)
        .await
        .expect("claim statement");
    let claimed: Vec<_> = claimed
        .into_iter()
        .map(|c| c.expect("readable job"))
        .collect();
    assert!(
        claimed[..5]
            .iter()
            .all(|c| c.as_ref().is_some_and(|j| j.claims == 1))
    );
    assert!(claimed[5].is_none(), "the duplicate claims nothing");
    requests.pop();

    // The last job's message is redelivered to another worker, which claims it and finishes it
    // first: it is billed there, with 7 prompt tokens.
    let other = request(ids[3], true);
    let reclaimed = runs::claim(pool, other, LEASE)
        .await
        .expect("claim")
        .expect("a redelivery reclaims a running job");
    assert_eq!(reclaimed.claims, 2);
    runs::finish(pool, &succeeded(ids[3], other.claim_id, 7))
        .await
        .expect("finish")
        .expect("the newest claim records its end");

    // The last job's message goes to a third worker too, which is still running it.
    let running = request(ids[4], true);
    runs::claim(pool, running, LEASE)
        .await
        .expect("claim")
        .expect("reclaimed");

    // This worker's five runs end together, in one statement: the three it still holds are
    // recorded, the two it lost write nothing.
    let ends: Vec<Finish> = requests
        .iter()
        .map(|r| succeeded(r.id, r.claim_id, 10))
        .collect();
    let recorded = runs::finish_many(pool, &ends)
        .await
        .expect("finish statement");
    assert!(recorded[..3].iter().all(Option::is_some), "{recorded:?}");
    assert_eq!(
        recorded[3], None,
        "a job finished elsewhere records nothing"
    );
    assert_eq!(
        recorded[4], None,
        "a job reclaimed elsewhere records nothing"
    );
    // The run holding the last job ends it later, billed with 5 prompt tokens.
    runs::finish(pool, &succeeded(ids[4], running.claim_id, 5))
        .await
        .expect("finish")
        .expect("the newest claim records its end");

    let billed: Vec<(Uuid, i32)> =
        sqlx::query_as("select job_id, prompt_tokens from usage_records order by job_id")
            .fetch_all(pool)
            .await
            .expect("usage");
    let mut expected: Vec<(Uuid, i32)> = ids
        .iter()
        .zip([10, 10, 10, 7, 5])
        .map(|(id, t)| (id.0, t))
        .collect();
    expected.sort();
    assert_eq!(
        billed, expected,
        "one usage record per job, by the claim that held it"
    );
    let (requests_rolled, prompt_rolled): (i64, i64) =
        sqlx::query_as("select sum(requests)::bigint, sum(prompt_tokens)::bigint from usage_daily")
            .fetch_one(pool)
            .await
            .expect("rollup");
    assert_eq!((requests_rolled, prompt_rolled), (5, 42));
    assert_eq!(
        stack.rows("job_attempts").await,
        5,
        "the lost runs' calls are not written"
    );
    let (spend_calls,): (i64,) =
        sqlx::query_as("select sum(calls)::bigint from provider_spend_daily")
            .fetch_one(pool)
            .await
            .expect("spend");
    assert_eq!(spend_calls, 5);
    let results: Vec<(String, String)> =
        sqlx::query_as("select status, result->>'response' from jobs order by id")
            .fetch_all(pool)
            .await
            .expect("jobs");
    assert!(results.iter().all(|(status, _)| status == "succeeded"));
    assert_eq!(
        results[3].1, "7 tokens in",
        "the other worker's result stands"
    );
    assert_eq!(
        results[4].1, "5 tokens in",
        "the newest claim's result stands"
    );
    stack.stop().await;
}

/// A run that parks its job (every provider failed transiently, runs are left) is one more kind of
/// run end: ended by the same statement as the runs that finish theirs, it records its calls and
/// their spend, and leaves the job `retrying` — unbilled, its quota still held, no webhook.
#[tokio::test]
async fn a_park_and_a_finish_end_together_in_one_statement() {
    let stack = Stack::with(idle()).await;
    let pool = &stack.pool;
    let finished = stack.insert_unpublished_job("finishes").await;
    let parked = stack.insert_unpublished_job("parks").await;
    sqlx::query("update jobs set webhook_url = 'https://hooks.example/tollgate' where id = $1")
        .bind(parked)
        .execute(pool)
        .await
        .expect("a webhook on the parked job");
    let requests = [request(finished, false), request(parked, false)];
    for &request in &requests {
        runs::claim(pool, request, LEASE)
            .await
            .expect("claim")
            .expect("claimed");
    }
    let call = AttemptRecord {
        provider: ProviderName::LOCAL,
        host: Some("default".into()),
        upstream_model: "llama3".into(),
        started_at: Utc::now(),
        latency: Duration::from_millis(30),
        status_code: Some(503),
        outcome: AttemptOutcome::TransientError,
        error: Some(JobError::new(
            JobErrorCode::ProviderUnavailable,
            "upstream answered 503",
        )),
        prompt_tokens: None,
        completion_tokens: None,
        details: TokenDetails::default(),
        cost: None,
    };
    let park = Finish {
        id: parked,
        claim_id: requests[1].claim_id,
        outcome: Outcome::Parked {
            error: JobError::new(JobErrorCode::ProviderUnavailable, "upstream answered 503"),
            delay: Duration::from_secs(30),
        },
        attempts: vec![call.clone(), call],
        policy: DataPolicy::Any,
    };
    let ends = [succeeded(finished, requests[0].claim_id, 10), park];
    let recorded = runs::finish_many(pool, &ends).await.expect("one statement");
    assert!(recorded.iter().all(Option::is_some), "{recorded:?}");
    assert_eq!(
        recorded[1].and_then(|r| r.delivery),
        None,
        "a park sends no webhook"
    );

    let (status, retries, error_code, waits, claim, attempts): (
        String,
        i32,
        String,
        bool,
        Option<Uuid>,
        i32,
    ) = sqlx::query_as(
        "select status, retries, error_code, retry_at between now() + interval '25 seconds'
                and now() + interval '35 seconds', claim_id, attempts
           from jobs where id = $1",
    )
    .bind(parked)
    .fetch_one(pool)
    .await
    .expect("parked job");
    assert_eq!(status, "retrying");
    assert_eq!(retries, 1);
    assert_eq!(error_code, "provider_unavailable");
    assert!(waits, "due again after its delay");
    assert_eq!(
        claim,
        Some(requests[1].claim_id),
        "it keeps the claim that parked it (for that statement's retry to recognise); the next \
         run's claim replaces it"
    );
    assert_eq!(attempts, 2);
    let parked_calls: Vec<(i32, String)> =
        sqlx::query_as("select claim, outcome from job_attempts where job_id = $1 order by id")
            .bind(parked)
            .fetch_all(pool)
            .await
            .expect("attempts");
    assert_eq!(
        parked_calls,
        vec![(1, "transient_error".into()), (1, "transient_error".into())]
    );
    let (spend_calls,): (i64,) =
        sqlx::query_as("select sum(calls)::bigint from provider_spend_daily")
            .fetch_one(pool)
            .await
            .expect("spend");
    assert_eq!(spend_calls, 3, "the park's two calls and the finish's one");
    let billed: Vec<(Uuid,)> = sqlx::query_as("select job_id from usage_records")
        .fetch_all(pool)
        .await
        .expect("usage");
    assert_eq!(
        billed,
        vec![(finished.0,)],
        "only the finished job is billed"
    );
    assert_eq!(stack.rows("webhook_deliveries").await, 0);

    // The next run claims the parked job again and finishes it.
    let next = request(parked, false);
    sqlx::query("update jobs set retry_at = now() where id = $1")
        .bind(parked)
        .execute(pool)
        .await
        .expect("due now");
    let again = runs::claim(pool, next, LEASE)
        .await
        .expect("claim")
        .expect("a parked job is claimed again");
    assert_eq!((again.claims, again.retries), (2, 1));
    let recorded = runs::finish(pool, &succeeded(parked, next.claim_id, 4))
        .await
        .expect("finish")
        .expect("recorded");
    assert!(
        recorded.delivery.is_some(),
        "its end is announced to its webhook"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_burst_of_submissions_is_written_in_fewer_transactions_each_with_its_own_job() {
    let stack = Stack::with(idle()).await;
    const BURST: usize = 200;
    let client = client();
    let submissions = (0..BURST).map(|n| {
        client
            .post(stack.url("/v1/generate"))
            .bearer_auth(&stack.token)
            .json(&json!({ "model": "llama3", "prompt": format!("burst {n}") }))
            .send()
    });
    let answers = futures::future::join_all(submissions).await;
    let mut ids = Vec::new();
    for answer in answers {
        let answer = answer.expect("answered");
        assert_eq!(answer.status(), 202);
        let job: serde_json::Value = answer.json().await.expect("job");
        ids.push(Uuid::parse_str(job["id"].as_str().expect("id")).expect("uuid"));
    }
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), BURST, "each request has its own job");

    // Each row's `xmin` is the transaction that wrote it: Postgres's exact count of the
    // transactions the burst took (pg_stat_database's counters also count the api's own polling,
    // and reach it up to 10 s late).
    let (rows, transactions): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct xmin::text) from jobs where id = any($1)")
            .bind(&ids)
            .fetch_one(&stack.pool)
            .await
            .expect("count");
    assert_eq!(
        rows,
        i64::try_from(BURST).expect("small"),
        "every job was written"
    );
    assert!(
        transactions < rows,
        "{rows} submissions took {transactions} transactions"
    );
    // Each answer came after its job's commit and its message's confirm: all are on the queue.
    let jobs_queue = stack.topology.jobs_queue();
    let queue = stack.topology.unprefixed(&jobs_queue);
    let depths = stack.broker.queue_depths().await.expect("queue depths");
    let depth = depths.iter().find(|(name, _)| *name == queue).map(|d| d.1);
    assert_eq!(
        depth,
        Some(u32::try_from(BURST).expect("small")),
        "{depths:?}"
    );
    stack.stop().await;
}

/// Whether some connection is waiting for a row lock (a claim waiting for the row a test holds).
async fn a_statement_waits_for_a_lock(pool: &sqlx::PgPool) -> bool {
    sqlx::query_scalar(
        "select exists (select 1 from pg_stat_activity
                         where datname = current_database() and wait_event_type = 'Lock')",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity")
}

/// A group claim never waits for a row another statement holds (so it cannot be half of a
/// deadlock): it answers the held job as not claimed, and the claim for one job, which holds no
/// other row while it waits, takes it once the holder lets go.
#[tokio::test]
async fn a_group_claim_skips_a_held_job_which_the_claim_for_one_waits_for() {
    let stack = Stack::with(idle()).await;
    let pool = &stack.pool;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(stack.insert_unpublished_job(&format!("held {n}")).await);
    }
    let holder = stack.hold_job(ids[1]).await;

    let requests: Vec<ClaimRequest> = ids.iter().map(|&id| request(id, false)).collect();
    let claimed = tokio::time::timeout(
        Duration::from_secs(5),
        runs::claim_many(pool, &requests, LEASE),
    )
    .await
    .expect("the group claim does not wait for the held row")
    .expect("claim statement");
    let claimed: Vec<bool> = claimed
        .into_iter()
        .map(|c| c.expect("readable job").is_some())
        .collect();
    assert_eq!(claimed, [true, false, true], "the held job is skipped");

    let alone = tokio::spawn({
        let pool = pool.clone();
        let request = requests[1];
        async move { runs::claim(&pool, request, LEASE).await }
    });
    crate::harness::eventually("the claim for one waits for the row", || {
        a_statement_waits_for_a_lock(pool)
    })
    .await;
    assert!(!alone.is_finished());
    holder.commit().await.expect("let go");
    let job = alone
        .await
        .expect("claim task")
        .expect("claim")
        .expect("claimed once the row is let go");
    assert_eq!((job.id, job.claims), (ids[1], 1));
    stack.stop().await;
}

/// End to end: jobs delivered together while one of their rows is held all run — the others at
/// once, the held one as soon as it is let go — each claimed and billed once.
#[tokio::test]
async fn a_job_held_while_its_group_is_claimed_runs_once_it_is_let_go() {
    let mut stack = Stack::start().await.without_workers().await;
    let ids = stack.submit_many(20, "group").await;
    let held = JobId(Uuid::parse_str(&ids[7]).expect("uuid"));
    // Intake records the broker's confirms after it answers: held from then on, the row is held
    // from the worker's claims alone.
    crate::harness::eventually("intake records every publish", || async {
        let unpublished: i64 =
            sqlx::query_scalar("select count(*) from jobs where published_at is null")
                .fetch_one(&stack.pool)
                .await
                .expect("count");
        unpublished == 0
    })
    .await;
    let holder = stack.hold_job(held).await;
    stack
        .add_worker(crate::harness::test_worker_settings())
        .await;
    for (n, id) in ids.iter().enumerate() {
        if n != 7 {
            let job = stack.wait_until_finished(id).await;
            assert_eq!(job["status"], "succeeded", "{job}");
        }
    }
    crate::harness::eventually("the held job's claim waits for its row", || {
        a_statement_waits_for_a_lock(&stack.pool)
    })
    .await;
    holder.commit().await.expect("let go");
    let job = stack.wait_until_finished(&ids[7]).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (claims, billed): (i64, i64) = sqlx::query_as(
        "select (select sum(claims)::bigint from jobs), (select count(*) from usage_records)",
    )
    .fetch_one(&stack.pool)
    .await
    .expect("counts");
    assert_eq!(
        (claims, billed),
        (20, 20),
        "each job claimed and billed once"
    );
    stack.stop().await;
}
