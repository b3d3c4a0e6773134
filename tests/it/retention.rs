//! Data that ages out: days of jobs dropped whole once past `job_retention_days` (usage, rollups
//! and jobs still in flight untouched), months of usage past `usage_retention_days`, and an
//! expired job's id answering 410.

use std::time::Duration;

use chrono::{DateTime, Days, Utc};
use serde_json::json;
use tollgate_core::db::partitions::{self, Maintained, floor};
use tollgate_core::db::runs::{self, ClaimRequest};
use tollgate_core::domain::{JobId, Retention};
use uuid::Uuid;

use crate::harness::{Stack, WAIT, client};

/// Midnight (UTC) `days` before today.
fn midnight_before(days: u64) -> DateTime<Utc> {
    let today = Utc::now().date_naive();
    (today - Days::new(days))
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
}

/// Makes the day that starts at `day` a partition of its own, as the sweeper does ahead of time.
async fn make_day(stack: &Stack, day: DateTime<Utc>) -> String {
    let suffix = format!("p{}", day.format("%Y%m%d"));
    for (table, name) in [
        ("jobs", "jobs"),
        ("job_attempts", "job_attempts"),
        ("images", "images"),
    ] {
        let ddl = format!(
            "create table {name}_{suffix} partition of {table} for values from ('{}') to ('{}')",
            floor(day),
            floor(day + Days::new(1))
        );
        sqlx::query(&ddl)
            .execute(&stack.pool)
            .await
            .expect("partition");
    }
    format!("jobs_{suffix}")
}

/// A job of the stack's tenant whose id was made an hour into `day`, inserted as intake would.
async fn job_made_on(stack: &Stack, day: DateTime<Utc>, prompt: &str) -> JobId {
    let made = day + chrono::Duration::hours(1);
    let seconds = u64::try_from(made.timestamp()).expect("after 1970");
    let id = JobId(Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        seconds,
        0,
    )));
    stack.insert_job_as(id, prompt).await
}

/// One whole upkeep of the partitions by this test, once the worker's sweeper (which keeps them
/// too) is not at it; tried again while a lock is not had in time, as the sweeper does.
async fn maintain(
    pool: &sqlx::PgPool,
    now: DateTime<Utc>,
    retention: Retention,
    days_ahead: Option<u64>,
) -> Maintained {
    let turn = async {
        loop {
            let done = partitions::maintain(pool, now, retention, days_ahead)
                .await
                .expect("the upkeep");
            match done {
                Some(done) if done.unprepared.is_none() => return done,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    };
    tokio::time::timeout(WAIT, turn)
        .await
        .expect("the sweeper let go of the partitions")
}

async fn exists(stack: &Stack, table: &str) -> bool {
    sqlx::query_scalar::<_, bool>("select to_regclass($1) is not null")
        .bind(table)
        .fetch_one(&stack.pool)
        .await
        .expect("regclass")
}

#[tokio::test]
async fn expiry_drops_whole_days_and_keeps_usage_rollups_and_jobs_in_flight() {
    let stack = Stack::start().await;
    let pool = &stack.pool;
    // Three days ago: two jobs that ran to the end and were billed.
    let old_day = midnight_before(3);
    let old = make_day(&stack, old_day).await;
    let mut finished = Vec::new();
    for n in 0..2 {
        let id = job_made_on(&stack, old_day, &format!("old {n}")).await;
        let claim = ClaimRequest {
            id,
            claim_id: Uuid::now_v7(),
            redelivered: false,
        };
        runs::claim(pool, claim, Duration::from_secs(60))
            .await
            .expect("claim")
            .expect("claimed");
        let run = crate::coalescing::succeeded(id, claim.claim_id, 10);
        runs::finish(pool, &run)
            .await
            .expect("finish")
            .expect("recorded");
        finished.push(id);
    }
    // An image one of them showed, stored under its day.
    sqlx::query(
        "insert into images (day, tenant_id, sha256, media_type, data)
         select $1, tenant_id, '\\x00', 'image/png', '\\x89504e47' from jobs where id = $2",
    )
    .bind(floor(old_day))
    .bind(finished[0].0)
    .execute(pool)
    .await
    .expect("an image of the old day");
    // Two days ago: a job still waiting for a worker.
    let waiting_day = midnight_before(2);
    let waiting = make_day(&stack, waiting_day).await;
    let in_flight = job_made_on(&stack, waiting_day, "still queued").await;
    // Its message is in the queue, as far as the sweeper knows: left unpublished, it would be
    // published and run before the upkeep below on a loaded machine (a second is all it takes).
    sqlx::query("update jobs set published_at = now() where id = $1")
        .bind(in_flight.0)
        .execute(pool)
        .await
        .expect("mark published");
    // Today: a job through the api, run by the worker.
    let today = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "today" }),
        )
        .await;
    let today_id = today["id"].as_str().expect("id").to_owned();
    stack.wait_until_finished(&today_id).await;
    let usage_before = stack.rows("usage_records").await;
    let rollup_before: i64 = sqlx::query_scalar("select sum(requests)::bigint from usage_daily")
        .fetch_one(pool)
        .await
        .expect("rollup");

    // Operators keep jobs a day.
    stack
        .patch_settings(&json!({ "job_retention_days": 1 }))
        .await;
    let retention = Retention {
        job_days: 1,
        usage_days: 400,
    };
    let done = maintain(pool, Utc::now(), retention, None).await;

    let old_attempts = old.replace("jobs_", "job_attempts_");
    let old_images = old.replace("jobs_", "images_");
    assert!(done.dropped.contains(&old), "{done:?}");
    assert!(done.dropped.contains(&old_attempts), "{done:?}");
    assert!(done.dropped.contains(&old_images), "{done:?}");
    assert!(!exists(&stack, &old_images).await);
    assert_eq!(
        stack.rows("images").await,
        0,
        "the day's images went with it"
    );
    assert_eq!(
        done.held,
        vec![waiting.clone()],
        "a day with a job in flight is kept whole"
    );
    assert!(!exists(&stack, &old).await && !exists(&stack, &old_attempts).await);
    assert!(exists(&stack, &waiting).await);
    assert_eq!(
        stack.rows("usage_records").await,
        usage_before,
        "usage outlives jobs"
    );
    let rollup_after: i64 = sqlx::query_scalar("select sum(requests)::bigint from usage_daily")
        .fetch_one(pool)
        .await
        .expect("rollup");
    assert_eq!(rollup_after, rollup_before, "rollups are kept");

    // An expired job's id is gone, not unknown; the job in flight and today's are there.
    let expired = stack.get(&format!("/v1/jobs/{}", finished[0])).await;
    assert_eq!(expired.status(), 410);
    let problem: serde_json::Value = expired.json().await.expect("problem");
    assert_eq!(problem["code"], "job_expired", "{problem}");
    let attempts = stack
        .get(&format!("/v1/jobs/{}/attempts", finished[1]))
        .await;
    assert_eq!(attempts.status(), 410);
    let queued = stack.get(&format!("/v1/jobs/{in_flight}")).await;
    assert_eq!(queued.status(), 200);
    assert_eq!(
        stack.get(&format!("/v1/jobs/{today_id}")).await.status(),
        200
    );
    let unknown = stack.get(&format!("/v1/jobs/{}", JobId::new())).await;
    assert_eq!(
        unknown.status(),
        404,
        "a recent id that names nothing is unknown"
    );

    // Usage ages out by the month, long after: the rollups stay.
    let far = Utc::now() + Days::new(800);
    let retention = Retention {
        job_days: 3650,
        usage_days: 400,
    };
    let done = maintain(pool, far, retention, None).await;
    assert!(
        done.dropped
            .iter()
            .any(|name| name.starts_with("usage_records_p")),
        "{done:?}"
    );
    assert!(
        done.dropped
            .iter()
            .all(|name| name.starts_with("usage_records_"))
    );
    let rollup_later: i64 = sqlx::query_scalar("select sum(requests)::bigint from usage_daily")
        .fetch_one(pool)
        .await
        .expect("rollup");
    assert_eq!(rollup_later, rollup_before);
    stack.stop().await;
}

#[tokio::test]
async fn the_sweeper_keeps_a_week_of_days_ready_and_settings_bound_retention() {
    let stack = Stack::start().await;
    let week_ahead = Utc::now() + Days::new(partitions::DAYS_AHEAD);
    let name = format!("jobs_p{}", week_ahead.format("%Y%m%d"));
    let done = maintain(
        &stack.pool,
        Utc::now(),
        Retention {
            job_days: 30,
            usage_days: 400,
        },
        Some(partitions::DAYS_AHEAD),
    )
    .await;
    assert!(exists(&stack, &name).await, "{name} after {done:?}");
    assert!(done.dropped.is_empty());

    // A job of a day no process prepared in time sits in the default partition: that day is
    // skipped (the job stays where it is) and the days after it are still prepared.
    let late = Utc::now() + Days::new(partitions::DAYS_AHEAD + 3);
    let late_day = late
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let stranded = job_made_on(&stack, late_day, "ahead of its day").await;
    let done = maintain(
        &stack.pool,
        late,
        Retention {
            job_days: 30,
            usage_days: 400,
        },
        Some(partitions::DAYS_AHEAD),
    )
    .await;
    let skipped = format!("jobs_p{}", late_day.format("%Y%m%d"));
    assert!(!exists(&stack, &skipped).await, "{done:?}");
    let after = format!("jobs_p{}", (late_day + Days::new(1)).format("%Y%m%d"));
    assert!(exists(&stack, &after).await, "{done:?}");
    let home: String =
        sqlx::query_scalar("select tableoid::regclass::text from jobs where id = $1")
            .bind(stranded.0)
            .fetch_one(&stack.pool)
            .await
            .expect("the job");
    assert_eq!(home, "jobs_default");

    let refused = client()
        .patch(stack.url("/v1/admin/settings"))
        .bearer_auth(&stack.admin_token)
        .json(&json!({ "job_retention_days": 0 }))
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), 422);
    let settings = stack
        .patch_settings(&json!({ "job_retention_days": 7, "usage_retention_days": 500 }))
        .await;
    assert_eq!(settings["job_retention_days"], 7);
    assert_eq!(settings["usage_retention_days"], 500);
    stack.stop().await;
}
