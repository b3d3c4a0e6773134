//! The statement that ends runs: for every run that ended together, its job's end (or its park for
//! another run), its attempts and what it is billed, written whole in one statement.

use std::borrow::Borrow;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::outcome::{Outcome, Recorded};
use crate::billing::{self, Price};
use crate::db::job_attempts::{AttemptColumns, AttemptRecord};
use crate::domain::cache::MAX_CACHED_ANSWER_BYTES;
use crate::domain::{DataPolicy, JobError, JobId, ProviderName, RouteReason};
use crate::provider::TokenCounts;

/// What a job is billed (a success, or a stop after text was generated).
#[derive(Clone, Copy)]
struct Bill<'a> {
    tokens: TokenCounts,
    price_id: Option<i64>,
    cost: Option<Decimal>,
    latency_ms: i32,
    routed_model: &'a str,
}

/// A run to be recorded: the claim it ran under, how it ended (its job finished, or parked), its
/// calls (the estimates for abandoned runs first) and the data policy it honoured.
#[derive(Clone)]
pub struct Finish {
    pub id: JobId,
    pub claim_id: Uuid,
    pub outcome: Outcome,
    pub attempts: Vec<AttemptRecord>,
    pub policy: DataPolicy,
}

/// Records one claimed job's run: [`finish_many`] with one run.
pub async fn finish(
    pool: impl PgExecutor<'_>,
    run: &Finish,
) -> Result<Option<Recorded>, sqlx::Error> {
    let mut recorded = finish_many(pool, std::slice::from_ref(run)).await?;
    Ok(recorded.pop().flatten())
}

/// Records the runs that ended together in one statement (one commit): for each, the job row (its
/// end, or its park: `retrying` until `retry_at`), the run's attempts and provider spend; for a job
/// that ended, a success's (or a stop's with text generated) usage record (unique per job: a
/// redelivered completion can never bill twice) and the tenant's daily rollup, its quota
/// reservation released (what was used now counts through the rollup), and its webhook delivery
/// where `tollgate_webhook_target` (migration 0017) says, with
/// why the job went where it went and the data policy its run honoured. For the response cache
/// (migration 0026): a success of a job with a key and a time to live becomes a stored answer
/// (`cache_expires_at`, when its result is at most [`MAX_CACHED_ANSWER_BYTES`]), an ended job
/// gives up its key's flight, and a hit ([`Outcome::Hit`]) is written as `cache = 'hit'` with
/// its source and what the answer cost when it was called (on its usage record and the rollup
/// too), with no attempt and no provider spend.
///
/// Answers in the runs' order; `None` for a run whose claim was no longer the job's (another worker
/// reclaimed it after a redelivery, or finished it): nothing of that run is written, and its caller
/// drops its result. The others are written as if alone.
///
/// A run whose end (or park) this claim already wrote (the statement committed, but its answer was
/// lost with the connection, and this is the retry) is answered as if it had just been written —
/// its revision and its webhook delivery — and nothing is written again: its caller publishes the
/// event, the delivery or the delayed message the lost answer would have led to. A parked job
/// keeps the claim of the run that parked it for this (a job's next claim replaces it). (The rows
/// the statement's reads see are those from before its own updates, so a run it ends now is never
/// answered twice.)
///
/// Long on purpose: it is one statement, written out whole so that a reader sees every parameter
/// beside its use and the compiler checks all of it against the schema.
pub async fn finish_many<R: Borrow<Finish>>(
    pool: impl PgExecutor<'_>,
    runs: &[R],
) -> Result<Vec<Option<Recorded>>, sqlx::Error> {
    let runs: Vec<&Finish> = runs.iter().map(Borrow::borrow).collect();
    let jobs = EndColumns::new(&runs);
    let (attempts, run_of) = AttemptColumns::of_runs(runs.iter().map(|r| r.attempts.as_slice()));
    let (low, high) = crate::db::id_bounds(&jobs.id);
    // Each run `r` (numbered by its place, `r.run`) whose claim still holds its job: the job's end
    // (`ended`) or its park (`parked`, a run with `retry_in`), either way `done`; the run's
    // attempts and the day's provider spend; for an ended job the usage record when billed
    // (`bill`) and the tenant's day (`daily`), the quota reservations released and the webhook
    // deliveries written. The estimates for abandoned runs, first among a run's attempts, take the
    // claims just before its own, oldest first. The rollups are summed per row before they are
    // written (an upsert may change a row once) and written in key order, so two statements never
    // wait on each other's rows in a circle. `id = any($1)` and `id between` the ids' bounds
    // repeat the join for the plan: they prune the partitions (days) none of the runs' jobs is
    // in. The jobs are locked in id order first (`locked`), as a batch's cancel locks its items,
    // so that the two never wait on each other's rows in a circle (a group claim never waits).
    // Its rows: each run recorded, with the job's new revision and its delivery.
    let rows = sqlx::query!(
        r#"with run as (
            select *
              from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
                          $7::text[], $8::text[], $9::int[], $10::int[], $11::int[],
                          $12::numeric[], $13::bool[], $14::bigint[], $15::int[], $16::text[],
                          $17::text[], $18::text[], $19::float8[], $33::int[], $34::int[],
                          $37::int[], $38::jsonb[], $41::bool[], $42::uuid[], $43::numeric[])
                   with ordinality as r(id, claim_id, status, provider, upstream_model, result,
                                        error_code, error_message, prompt_tokens,
                                        completion_tokens, attempts, cost, estimated, price_id,
                                        latency_ms, routed_model, route_reason, data_policy,
                                        retry_in, reasoning_tokens, cached_tokens,
                                        cache_write_tokens, error_body, cache_hit,
                                        cache_source, cache_saved, run)
         ), locked as (
            select id from jobs where id = any($1::uuid[]) and id between $45 and $46
             order by id for update
         ), ended as (
            update jobs
               set status = r.status, provider = r.provider, upstream_model = r.upstream_model,
                   result = r.result, error_code = r.error_code, error_message = r.error_message,
                   prompt_tokens = r.prompt_tokens, completion_tokens = r.completion_tokens,
                   total_tokens = r.prompt_tokens + r.completion_tokens,
                   reasoning_tokens = r.reasoning_tokens, cached_tokens = r.cached_tokens,
                   cache_write_tokens = r.cache_write_tokens, error_body = r.error_body,
                   attempts = jobs.attempts + r.attempts, cost = r.cost,
                   usage_estimated = r.estimated,
                   unpriced = (r.prompt_tokens is not null and r.price_id is null),
                   finished_at = now(), lease_expires_at = null, retry_at = null,
                   route_reason = r.route_reason, data_policy = r.data_policy,
                   revision = jobs.revision + 1,
                   abandoned_recorded = jobs.claims - jobs.retries - 1,
                   cache = case when r.cache_hit then 'hit' else jobs.cache end,
                   cache_source = r.cache_source, cache_saved = r.cache_saved,
                   cache_expires_at =
                       case when r.status = 'succeeded' and not r.cache_hit
                                 and jobs.cache_key is not null
                                 and jobs.cache_ttl_secs is not null
                                 and octet_length(r.result::text) <= $44
                            then now() + make_interval(secs => jobs.cache_ttl_secs) end
              from run r join locked on locked.id = r.id
             where jobs.id = r.id and jobs.claim_id = r.claim_id and jobs.status = 'running'
               and r.retry_in is null and jobs.id = any($1::uuid[])
               and jobs.id between $45 and $46
         returning jobs.id, r.run, jobs.claims, jobs.tenant_id, jobs.token_id, jobs.model,
                   jobs.origin, jobs.client_ip, jobs.finished_at, jobs.reserved_tokens,
                   jobs.reserved_cost, jobs.reserved_month, jobs.status, jobs.webhook_url,
                   jobs.revision, jobs.batch_id, r.provider, r.routed_model, r.prompt_tokens,
                   r.completion_tokens, r.reasoning_tokens, r.cached_tokens,
                   r.cache_write_tokens, r.estimated, r.price_id, r.cost, r.latency_ms,
                   r.route_reason, r.cache_hit, r.cache_saved, jobs.cache_key
         ), flown as (
            delete from cache_flights f using ended
             where f.tenant_id = ended.tenant_id and f.key = ended.cache_key
               and f.job_id = ended.id
         ), parked as (
            update jobs
               set status = 'retrying', retries = jobs.retries + 1,
                   attempts = jobs.attempts + r.attempts, error_code = r.error_code,
                   error_message = r.error_message, error_body = r.error_body,
                   retry_at = now() + make_interval(secs => r.retry_in),
                   lease_expires_at = null, published_at = null,
                   revision = jobs.revision + 1,
                   abandoned_recorded = jobs.claims - jobs.retries - 1
              from run r join locked on locked.id = r.id
             where jobs.id = r.id and jobs.claim_id = r.claim_id and jobs.status = 'running'
               and r.retry_in is not null and jobs.id = any($1::uuid[])
               and jobs.id between $45 and $46
         returning jobs.id, r.run, jobs.claims, jobs.revision
         ), done as (
            select id, run, claims, revision from ended
            union all
            select id, run, claims, revision from parked
         ), run_attempts as (
            select a.*,
                   count(*) filter (where a.outcome = 'abandoned') over (partition by a.run)
                       as abandoned_runs,
                   row_number() over (partition by a.run order by a.n) as k
              from unnest($20::int[], $21::text[], $22::text[], $23::timestamptz[], $24::int[],
                          $25::int[], $26::text[], $27::text[], $28::text[], $29::int[],
                          $30::int[], $31::numeric[], $32::text[], $35::int[], $36::int[],
                          $39::int[], $40::jsonb[])
                   with ordinality as a(run, provider, upstream_model, started_at, latency_ms,
                                        status_code, outcome, error_code, error_message,
                                        prompt_tokens, completion_tokens, cost, host,
                                        reasoning_tokens, cached_tokens, cache_write_tokens,
                                        error_body, n)
         ), attempt as (
            insert into job_attempts (job_id, claim, provider, upstream_model, started_at,
                                      finished_at, latency_ms, status_code, outcome, error_code,
                                      error_message, prompt_tokens, completion_tokens, cost, host,
                                      reasoning_tokens, cached_tokens, cache_write_tokens,
                                      error_body)
            select done.id,
                   done.claims - case when a.outcome = 'abandoned' then a.abandoned_runs - a.k + 1
                                      else 0 end,
                   a.provider, a.upstream_model, a.started_at,
                   a.started_at + make_interval(secs => a.latency_ms / 1000.0), a.latency_ms,
                   a.status_code, a.outcome, a.error_code, a.error_message, a.prompt_tokens,
                   a.completion_tokens, a.cost, a.host, a.reasoning_tokens, a.cached_tokens,
                   a.cache_write_tokens, a.error_body
              from done join run_attempts a on a.run = done.run
             order by done.run, a.k
         ), spend as (
            insert into provider_spend_daily as s (day, provider, upstream_model, shard, calls,
                                                   prompt_tokens, completion_tokens,
                                                   reasoning_tokens, cached_tokens, cost,
                                                   unpriced_calls, estimated_calls)
            select (now() at time zone 'utc')::date, a.provider, a.upstream_model,
                   floor(random() * 32)::smallint, count(*),
                   coalesce(sum(a.prompt_tokens), 0), coalesce(sum(a.completion_tokens), 0),
                   coalesce(sum(a.reasoning_tokens), 0), coalesce(sum(a.cached_tokens), 0),
                   coalesce(sum(a.cost), 0),
                   count(*) filter (where a.cost is null
                                      and coalesce(a.prompt_tokens, 0)
                                          + coalesce(a.completion_tokens, 0) > 0),
                   count(*) filter (where a.outcome = 'abandoned')
              from done join run_attempts a on a.run = done.run
             group by a.provider, a.upstream_model
             order by a.provider, a.upstream_model
            on conflict (day, provider, upstream_model, shard) do update
               set calls = s.calls + excluded.calls,
                   prompt_tokens = s.prompt_tokens + excluded.prompt_tokens,
                   completion_tokens = s.completion_tokens + excluded.completion_tokens,
                   reasoning_tokens = s.reasoning_tokens + excluded.reasoning_tokens,
                   cached_tokens = s.cached_tokens + excluded.cached_tokens,
                   cost = s.cost + excluded.cost,
                   unpriced_calls = s.unpriced_calls + excluded.unpriced_calls,
                   estimated_calls = s.estimated_calls + excluded.estimated_calls
         ), bill as (
            insert into usage_records (job_id, tenant_id, token_id, model, provider,
                                       upstream_model, prompt_tokens, completion_tokens,
                                       reasoning_tokens, cached_tokens, cache_write_tokens,
                                       estimated, price_id, cost, latency_ms, origin, client_ip,
                                       finished_at, route_reason, cache_hit, saved_cost)
            select id, tenant_id, token_id, model, provider, routed_model, prompt_tokens,
                   completion_tokens, coalesce(reasoning_tokens, 0), coalesce(cached_tokens, 0),
                   coalesce(cache_write_tokens, 0), estimated, price_id, cost, latency_ms,
                   origin, client_ip, finished_at, route_reason, cache_hit, cache_saved
              from ended where prompt_tokens is not null
         returning tenant_id, model, prompt_tokens, completion_tokens, reasoning_tokens,
                   cached_tokens, cost, finished_at, route_reason, cache_hit, saved_cost
         ), daily as (
            insert into usage_daily as d (tenant_id, day, model, route_reason, shard, requests,
                                          prompt_tokens, completion_tokens, reasoning_tokens,
                                          cached_tokens, cost, unpriced_requests, cache_hits,
                                          saved_cost)
            select tenant_id, (finished_at at time zone 'utc')::date as day, model,
                   coalesce(route_reason, 'unrecorded') as reason,
                   floor(random() * 32)::smallint, count(*), sum(prompt_tokens),
                   sum(completion_tokens), sum(reasoning_tokens), sum(cached_tokens),
                   coalesce(sum(cost), 0),
                   count(*) filter (where cost is null),
                   count(*) filter (where cache_hit), coalesce(sum(saved_cost), 0)
              from bill
             group by tenant_id, day, model, reason
             order by tenant_id, day, model, reason
            on conflict (tenant_id, day, model, route_reason, shard) do update
               set requests = d.requests + excluded.requests,
                   prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
                   completion_tokens = d.completion_tokens + excluded.completion_tokens,
                   reasoning_tokens = d.reasoning_tokens + excluded.reasoning_tokens,
                   cached_tokens = d.cached_tokens + excluded.cached_tokens,
                   cost = d.cost + excluded.cost,
                   unpriced_requests = d.unpriced_requests + excluded.unpriced_requests,
                   cache_hits = d.cache_hits + excluded.cache_hits,
                   saved_cost = d.saved_cost + excluded.saved_cost
         ), release as (
            update quota_months q
               set reserved_tokens = q.reserved_tokens - held.tokens,
                   reserved_cost = q.reserved_cost - held.cost
              from (select tenant_id, reserved_month, sum(reserved_tokens)::bigint as tokens,
                           sum(reserved_cost) as cost
                      from ended where reserved_month is not null
                     group by tenant_id, reserved_month) held
             where q.tenant_id = held.tenant_id and q.month = held.reserved_month
         ), hook as (
            insert into webhook_deliveries
                   (id, tenant_id, job_id, event_type, url, tenant_endpoint)
            select gen_random_uuid(), ended.tenant_id, ended.id, 'job.' || ended.status, w.url,
                   w.tenant_endpoint
              from ended, tollgate_webhook_target(ended.tenant_id, ended.webhook_url) w
             where ended.batch_id is null
            returning id, job_id
         )
         select done.run as "run!", done.revision as "revision!", hook.id as "delivery?"
           from done left join hook on hook.job_id = done.id
          union all
         select r.run, j.revision,
                case when r.retry_in is null
                     then (select d.id from webhook_deliveries d
                            where d.job_id = j.id order by d.created_at limit 1) end
           from run r join jobs j on j.id = r.id and j.claim_id = r.claim_id
          where j.id = any($1::uuid[]) and j.id between $45 and $46
            and case when r.retry_in is null
                     then j.status in ('succeeded', 'failed', 'cancelled')
                     else j.status = 'retrying' end"#,
        &jobs.id as &[JobId],                           // $1
        &jobs.claim_id,                                 // $2
        &jobs.status as &[&str],                        // $3
        &jobs.provider as &[Option<&str>],              // $4
        &jobs.upstream_model as &[Option<&str>],        // $5
        &jobs.result as &[Option<&Value>],              // $6
        &jobs.error_code as &[Option<&str>],            // $7
        &jobs.error_message as &[Option<&str>],         // $8
        &jobs.prompt_tokens as &[Option<i32>],          // $9
        &jobs.completion_tokens as &[Option<i32>],      // $10
        &jobs.attempts,                                 // $11
        &jobs.cost as &[Option<Decimal>],               // $12
        &jobs.estimated as &[Option<bool>],             // $13
        &jobs.price_id as &[Option<i64>],               // $14
        &jobs.latency_ms as &[Option<i32>],             // $15
        &jobs.routed_model as &[Option<&str>],          // $16
        &jobs.route_reason as &[Option<&str>],          // $17
        &jobs.policy as &[&str],                        // $18
        &jobs.retry_in as &[Option<f64>],               // $19
        &run_of,                                        // $20
        &attempts.provider as &[&str],                  // $21
        &attempts.upstream_model,                       // $22
        &attempts.started_at,                           // $23
        &attempts.latency_ms,                           // $24
        &attempts.status_code as &[Option<i32>],        // $25
        &attempts.outcome as &[&str],                   // $26
        &attempts.error_code as &[Option<String>],      // $27
        &attempts.error_message as &[Option<String>],   // $28
        &attempts.prompt_tokens as &[Option<i32>],      // $29
        &attempts.completion_tokens as &[Option<i32>],  // $30
        &attempts.cost as &[Option<Decimal>],           // $31
        &attempts.host as &[Option<String>],            // $32
        &jobs.reasoning_tokens as &[Option<i32>],       // $33
        &jobs.cached_tokens as &[Option<i32>],          // $34
        &attempts.reasoning_tokens as &[Option<i32>],   // $35
        &attempts.cached_tokens as &[Option<i32>],      // $36
        &jobs.cache_write_tokens as &[Option<i32>],     // $37
        &jobs.error_body as &[Option<&Value>],          // $38
        &attempts.cache_write_tokens as &[Option<i32>], // $39
        &attempts.error_body as &[Option<Value>],       // $40
        &jobs.cache_hit,                                // $41
        &jobs.cache_source as &[Option<JobId>],         // $42
        &jobs.cache_saved as &[Option<Decimal>],        // $43
        MAX_CACHED_ANSWER_BYTES,                        // $44
        low as JobId,                                   // $45
        high as JobId,                                  // $46
    )
    .fetch_all(pool)
    .await?;
    let mut recorded = vec![None; runs.len()];
    for row in rows {
        let slot = usize::try_from(row.run - 1)
            .ok()
            .and_then(|i| recorded.get_mut(i));
        if let Some(slot) = slot {
            *slot = Some(Recorded {
                revision: row.revision,
                delivery: row.delivery,
            });
        }
    }
    Ok(recorded)
}

/// The runs' ends as column arrays: what each job row is set to, and what it is billed.
#[derive(Default)]
struct EndColumns<'a> {
    id: Vec<JobId>,
    claim_id: Vec<Uuid>,
    status: Vec<&'static str>,
    provider: Vec<Option<&'static str>>,
    upstream_model: Vec<Option<&'a str>>,
    result: Vec<Option<&'a Value>>,
    error_code: Vec<Option<&'a str>>,
    error_message: Vec<Option<&'a str>>,
    prompt_tokens: Vec<Option<i32>>,
    completion_tokens: Vec<Option<i32>>,
    reasoning_tokens: Vec<Option<i32>>,
    cached_tokens: Vec<Option<i32>>,
    cache_write_tokens: Vec<Option<i32>>,
    /// The provider's own error body, for a failure.
    error_body: Vec<Option<&'a Value>>,
    attempts: Vec<i32>,
    cost: Vec<Option<Decimal>>,
    estimated: Vec<Option<bool>>,
    price_id: Vec<Option<i64>>,
    latency_ms: Vec<Option<i32>>,
    routed_model: Vec<Option<&'a str>>,
    route_reason: Vec<Option<&'static str>>,
    policy: Vec<&'static str>,
    /// Seconds until a parked job's next run; `None` for a job that ended.
    retry_in: Vec<Option<f64>>,
    /// A hit's: answered from the cache, by which job's answer, and what that answer cost.
    cache_hit: Vec<bool>,
    cache_source: Vec<Option<JobId>>,
    cache_saved: Vec<Option<Decimal>>,
}

impl<'a> EndColumns<'a> {
    fn new(runs: &[&'a Finish]) -> Self {
        let mut c = Self::default();
        for &run in runs {
            let end = End::of(&run.outcome);
            let bill = end.bill;
            c.id.push(run.id);
            c.claim_id.push(run.claim_id);
            c.status.push(run.outcome.status().as_str());
            c.provider.push(end.provider.map(ProviderName::as_str));
            c.upstream_model.push(end.upstream_model);
            c.result.push(end.result);
            c.error_code.push(end.error.map(|e| e.code.as_str()));
            c.error_message.push(end.error.map(|e| e.message.as_str()));
            c.prompt_tokens.push(bill.map(|b| b.tokens.prompt));
            c.completion_tokens.push(bill.map(|b| b.tokens.completion));
            c.reasoning_tokens
                .push(bill.map(|b| b.tokens.details.reasoning));
            c.cached_tokens.push(bill.map(|b| b.tokens.details.cached));
            c.cache_write_tokens
                .push(bill.map(|b| b.tokens.details.cache_written));
            c.error_body
                .push(end.error.and_then(|e| e.upstream.as_deref()));
            c.attempts
                .push(i32::try_from(run.attempts.len()).unwrap_or(i32::MAX));
            c.cost.push(bill.and_then(|b| b.cost));
            c.estimated.push(bill.map(|b| b.tokens.estimated));
            c.price_id.push(bill.and_then(|b| b.price_id));
            c.latency_ms.push(bill.map(|b| b.latency_ms));
            c.routed_model.push(bill.map(|b| b.routed_model));
            c.route_reason
                .push(run.outcome.reason().map(RouteReason::as_str));
            c.policy.push(run.policy.as_str());
            c.retry_in
                .push(end.retry_in.map(|delay| delay.as_secs_f64()));
            let hit = match &run.outcome {
                Outcome::Hit(hit) => Some(&hit.answer),
                _ => None,
            };
            c.cache_hit.push(hit.is_some());
            c.cache_source.push(hit.map(|a| a.source));
            c.cache_saved.push(hit.and_then(|a| a.cost));
        }
        c
    }
}

/// What an outcome writes on its job: who answered, the result or error, and the bill.
struct End<'a> {
    provider: Option<ProviderName>,
    upstream_model: Option<&'a str>,
    result: Option<&'a Value>,
    error: Option<&'a JobError>,
    bill: Option<Bill<'a>>,
    retry_in: Option<Duration>,
}

impl<'a> End<'a> {
    fn of(outcome: &'a Outcome) -> Self {
        let bill_of = |routed_model,
                       tokens: &TokenCounts,
                       price: &Option<Price>,
                       latency: &Duration| Bill {
            tokens: *tokens,
            price_id: price.map(|p| p.id),
            cost: price.map(|p| {
                let count = |tokens: i32| i64::from(tokens);
                let cache = billing::Cache {
                    read: count(tokens.details.cached),
                    written: count(tokens.details.cache_written),
                };
                billing::cost_with_cache(count(tokens.prompt), cache, count(tokens.completion), &p)
            }),
            latency_ms: i32::try_from(latency.as_millis()).unwrap_or(i32::MAX),
            routed_model,
        };
        match outcome {
            Outcome::Succeeded {
                provider,
                reason: _,
                upstream_model,
                routed_model,
                result,
                tokens,
                price,
                latency,
            } => Self {
                provider: Some(*provider),
                upstream_model: Some(upstream_model.as_str()),
                result: Some(result),
                error: None,
                bill: Some(bill_of(routed_model.as_str(), tokens, price, latency)),
                retry_in: None,
            },
            Outcome::Failed {
                provider,
                upstream_model,
                error,
            } => Self {
                provider: *provider,
                upstream_model: upstream_model.as_deref(),
                result: None,
                error: Some(error),
                bill: None,
                retry_in: None,
            },
            Outcome::Stopped {
                provider,
                upstream_model,
                error,
                partial,
                ..
            } => Self {
                provider: *provider,
                upstream_model: upstream_model.as_deref(),
                result: partial.as_ref().map(|p| &p.result),
                error: Some(error),
                bill: partial
                    .as_ref()
                    .map(|p| bill_of(p.routed_model.as_str(), &p.tokens, &p.price, &p.latency)),
                retry_in: None,
            },
            Outcome::Hit(hit) => {
                let answer = &hit.answer;
                let tokens = &answer.tokens;
                let count = |tokens: i32| i64::from(tokens);
                Self {
                    provider: Some(answer.provider),
                    upstream_model: answer.upstream_model.as_deref(),
                    result: Some(&answer.result),
                    error: None,
                    bill: Some(Bill {
                        tokens: *tokens,
                        price_id: hit.price.map(|p| p.id),
                        cost: hit.price.map(|p| {
                            billing::hit_cost(count(tokens.prompt), count(tokens.completion), &p)
                        }),
                        latency_ms: 0,
                        routed_model: answer.routed_model.as_str(),
                    }),
                    retry_in: None,
                }
            }
            Outcome::Parked { error, delay } => Self {
                provider: None,
                upstream_model: None,
                result: None,
                error: Some(error),
                bill: None,
                retry_in: Some(*delay),
            },
        }
    }
}
