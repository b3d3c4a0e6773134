//! The statement that parks a job for another run after every provider failed transiently.

use std::time::Duration;

use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use super::outcome::{EndOfRun, Recorded};
use crate::db::job_attempts::{AttemptColumns, AttemptRecord};
use crate::domain::{JobError, JobId};

/// Parks a claimed job as `retrying` after a run in which every provider failed transiently: the
/// last error is shown meanwhile, the run's attempts are recorded, and `retry_at` says when it is
/// due. The caller then publishes its message to the delay queue. `None` if the claim was lost.
///
/// Long on purpose: one statement written out whole, like [`super::finish`].
pub async fn park(
    pool: &PgPool,
    id: JobId,
    claim_id: Uuid,
    error: &JobError,
    delay: Duration,
    attempts: &[AttemptRecord],
) -> Result<Option<Recorded>, sqlx::Error> {
    let attempts = AttemptColumns::new(attempts);
    // If claim $2 still holds job $1: the job parked, the run's attempts (from the arrays $7-$18)
    // and the day's provider spend, as in [`finish`].
    let parked = sqlx::query_as!(
        EndOfRun,
        r#"with done as (
            update jobs
               set status = 'retrying', retries = retries + 1, attempts = attempts + $6,
                   error_code = $3, error_message = $4,
                   retry_at = now() + make_interval(secs => $5),
                   claim_id = null, lease_expires_at = null, published_at = null,
                   revision = revision + 1, abandoned_recorded = claims - retries - 1
             where id = $1 and claim_id = $2 and status = 'running'
         returning id, claims, revision
         ), run_attempts as (
            select * from unnest($7::text[], $8::text[], $9::timestamptz[], $10::int[],
                                 $11::int[], $12::text[], $13::text[], $14::text[], $15::int[],
                                 $16::int[], $17::numeric[], $18::text[])
                     with ordinality as a(provider, upstream_model, started_at, latency_ms,
                                          status_code, outcome, error_code, error_message,
                                          prompt_tokens, completion_tokens, cost, host, n)
         ), abandoned as (
            select count(*) as runs from run_attempts where outcome = 'abandoned'
         ), attempt as (
            insert into job_attempts (job_id, claim, provider, upstream_model, started_at,
                                      finished_at, latency_ms, status_code, outcome, error_code,
                                      error_message, prompt_tokens, completion_tokens, cost, host)
            select done.id,
                   done.claims - case when a.outcome = 'abandoned' then abandoned.runs - a.n + 1
                                      else 0 end,
                   a.provider, a.upstream_model, a.started_at,
                   a.started_at + make_interval(secs => a.latency_ms / 1000.0), a.latency_ms,
                   a.status_code, a.outcome, a.error_code, a.error_message, a.prompt_tokens,
                   a.completion_tokens, a.cost, a.host
              from done, abandoned, run_attempts a
             order by a.n
         ), spend as (
            insert into provider_spend_daily as s (day, provider, upstream_model, shard, calls,
                                                   prompt_tokens, completion_tokens, cost,
                                                   unpriced_calls, estimated_calls)
            select (now() at time zone 'utc')::date, a.provider, a.upstream_model,
                   floor(random() * 32)::smallint, count(*),
                   coalesce(sum(a.prompt_tokens), 0), coalesce(sum(a.completion_tokens), 0),
                   coalesce(sum(a.cost), 0),
                   count(*) filter (where a.cost is null
                                      and coalesce(a.prompt_tokens, 0)
                                          + coalesce(a.completion_tokens, 0) > 0),
                   count(*) filter (where a.outcome = 'abandoned')
              from done, run_attempts a
             group by a.provider, a.upstream_model
            on conflict (day, provider, upstream_model, shard) do update
               set calls = s.calls + excluded.calls,
                   prompt_tokens = s.prompt_tokens + excluded.prompt_tokens,
                   completion_tokens = s.completion_tokens + excluded.completion_tokens,
                   cost = s.cost + excluded.cost,
                   unpriced_calls = s.unpriced_calls + excluded.unpriced_calls,
                   estimated_calls = s.estimated_calls + excluded.estimated_calls
         )
         select count(*) as "ended!", max(revision) as revision, null::uuid as delivery
           from done"#,
        id as JobId,                                   // $1
        claim_id,                                      // $2
        error.code.as_str(),                           // $3
        error.message,                                 // $4
        delay.as_secs_f64(),                           // $5
        attempts.len(),                                // $6
        &attempts.provider as &[&str],                 // $7
        &attempts.upstream_model,                      // $8
        &attempts.started_at,                          // $9
        &attempts.latency_ms,                          // $10
        &attempts.status_code as &[Option<i32>],       // $11
        &attempts.outcome as &[&str],                  // $12
        &attempts.error_code as &[Option<String>],     // $13
        &attempts.error_message as &[Option<String>],  // $14
        &attempts.prompt_tokens as &[Option<i32>],     // $15
        &attempts.completion_tokens as &[Option<i32>], // $16
        &attempts.cost as &[Option<Decimal>],          // $17
        &attempts.host as &[Option<String>],           // $18
    )
    .fetch_one(pool)
    .await?;
    Ok(parked.recorded())
}
