//! The statement that ends a job: the closing statement of its last run, written whole.

use std::time::Duration;

use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use super::outcome::{EndOfRun, Outcome, Recorded};
use crate::billing::{self, Price};
use crate::db::job_attempts::{AttemptColumns, AttemptRecord};
use crate::domain::{DataPolicy, JobId, ProviderName, RouteReason};
use crate::provider::TokenCounts;

/// What a job is billed (a success, or a stop after text was generated).
#[derive(Clone, Copy)]
struct Bill<'a> {
    tokens: TokenCounts,
    price_id: Option<i64>,
    cost: Option<rust_decimal::Decimal>,
    latency_ms: i32,
    routed_model: &'a str,
}

/// Records a claimed job's terminal outcome in one statement (one commit): the job row, the run's
/// attempts and provider spend, and for a success (or a stop with text generated) its usage
/// record (unique per job: a redelivered completion can never bill twice) and the tenant's daily
/// rollup; any quota reservation is released (what was used now counts through the rollup).
///
/// The job's webhook delivery, if it has a URL or its tenant an endpoint, is written too, and so
/// are why the job went where it went and the data policy its run honoured.
///
/// Returns `None` when the claim was no longer the job's (another worker reclaimed it after a
/// redelivery): nothing is written, and the caller drops its result.
///
/// Long on purpose: it is one statement, written out whole so that a reader sees every parameter
/// beside its use and the compiler checks all of it against the schema.
pub async fn finish(
    pool: &PgPool,
    id: JobId,
    claim_id: Uuid,
    outcome: &Outcome,
    attempts: &[AttemptRecord],
    policy: DataPolicy,
) -> Result<Option<Recorded>, sqlx::Error> {
    let bill_of =
        |routed_model, tokens: &TokenCounts, price: &Option<Price>, latency: &Duration| Bill {
            tokens: *tokens,
            price_id: price.map(|p| p.id),
            cost: price
                .map(|p| billing::cost(i64::from(tokens.prompt), i64::from(tokens.completion), &p)),
            latency_ms: i32::try_from(latency.as_millis()).unwrap_or(i32::MAX),
            routed_model,
        };
    let (provider, upstream_model, result, error, bill) = match outcome {
        Outcome::Succeeded {
            provider,
            reason: _,
            upstream_model,
            routed_model,
            result,
            tokens,
            price,
            latency,
        } => (
            Some(*provider),
            Some(upstream_model.as_str()),
            Some(result),
            None,
            Some(bill_of(routed_model.as_str(), tokens, price, latency)),
        ),
        Outcome::Failed {
            provider,
            upstream_model,
            error,
        } => (
            *provider,
            upstream_model.as_deref(),
            None,
            Some(error),
            None,
        ),
        Outcome::Stopped {
            provider,
            upstream_model,
            error,
            partial,
            ..
        } => (
            *provider,
            upstream_model.as_deref(),
            partial.as_ref().map(|p| &p.result),
            Some(error),
            partial
                .as_ref()
                .map(|p| bill_of(p.routed_model.as_str(), &p.tokens, &p.price, &p.latency)),
        ),
    };
    let status = outcome.status();
    let reason = outcome.reason();
    let attempts = AttemptColumns::new(attempts);
    // If claim $2 still holds job $1: the job's end (`done`), the run's attempts (from the arrays
    // $19-$30) and the day's provider spend, the usage record when billed (`bill`) and the
    // tenant's day (`daily`), the quota reservation released and the webhook delivery written.
    // The estimates for abandoned runs, first among the attempts, take the claims just before
    // this run's, oldest first. Its row: the jobs ended (1, or 0 when the claim was lost), the new
    // revision, the delivery.
    let finished = sqlx::query_as!(
        EndOfRun,
        r#"with done as (
            update jobs
               set status = $3, provider = $4, upstream_model = $5, result = $6,
                   error_code = $7, error_message = $8,
                   prompt_tokens = $9, completion_tokens = $10, total_tokens = $9::int + $10::int,
                   attempts = attempts + $11, cost = $12, usage_estimated = $13,
                   unpriced = ($9::int is not null and $14::bigint is null),
                   finished_at = now(), lease_expires_at = null, retry_at = null,
                   route_reason = $17, data_policy = $18, revision = revision + 1,
                   abandoned_recorded = claims - retries - 1
             where id = $1 and claim_id = $2 and status = 'running'
         returning id, claims, tenant_id, token_id, model, origin, client_ip, finished_at,
                   reserved_tokens, reserved_cost, reserved_month, status, webhook_url, revision,
                   batch_id
         ), run_attempts as (
            select * from unnest($19::text[], $20::text[], $21::timestamptz[], $22::int[],
                                 $23::int[], $24::text[], $25::text[], $26::text[], $27::int[],
                                 $28::int[], $29::numeric[], $30::text[])
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
         ), bill as (
            insert into usage_records (job_id, tenant_id, token_id, model, provider,
                                       upstream_model, prompt_tokens, completion_tokens,
                                       estimated, price_id, cost, latency_ms, origin,
                                       client_ip, finished_at, route_reason)
            select id, tenant_id, token_id, model, $4, $16, $9, $10, $13, $14, $12, $15,
                   origin, client_ip, finished_at, $17
              from done where $9::int is not null
         returning tenant_id, model, prompt_tokens, completion_tokens, cost, finished_at,
                   route_reason
         ), daily as (
            insert into usage_daily as d (tenant_id, day, model, route_reason, shard, requests,
                                          prompt_tokens, completion_tokens, cost,
                                          unpriced_requests)
            select tenant_id, (finished_at at time zone 'utc')::date, model,
                   coalesce(route_reason, 'unrecorded'),
                   floor(random() * 32)::smallint, 1, prompt_tokens, completion_tokens,
                   coalesce(cost, 0), (cost is null)::int
              from bill
            on conflict (tenant_id, day, model, route_reason, shard) do update
               set requests = d.requests + 1,
                   prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
                   completion_tokens = d.completion_tokens + excluded.completion_tokens,
                   cost = d.cost + excluded.cost,
                   unpriced_requests = d.unpriced_requests + excluded.unpriced_requests
         ), release as (
            update quota_months q
               set reserved_tokens = q.reserved_tokens - done.reserved_tokens,
                   reserved_cost = q.reserved_cost - done.reserved_cost
              from done
             where q.tenant_id = done.tenant_id and q.month = done.reserved_month
         ), hook as (
            insert into webhook_deliveries
                   (id, tenant_id, job_id, event_type, url, tenant_endpoint)
            select gen_random_uuid(), done.tenant_id, done.id, 'job.' || done.status,
                   coalesce(done.webhook_url, t.webhook_url), done.webhook_url is null
              from done join tenants t on t.id = done.tenant_id
             where done.status in ('succeeded', 'failed', 'cancelled')
               and done.batch_id is null
               and (done.webhook_url is not null
                    or (t.webhook_url is not null and t.webhook_disabled_at is null))
            returning id
         )
         select count(*) as "ended!", max(revision) as revision,
                (select id from hook) as delivery
           from done"#,
        id as JobId,                                   // $1
        claim_id,                                      // $2
        status.as_str(),                               // $3
        provider.map(ProviderName::as_str),            // $4
        upstream_model,                                // $5
        result,                                        // $6
        error.map(|e| e.code.as_str()),                // $7
        error.map(|e| e.message.as_str()),             // $8
        bill.map(|b| b.tokens.prompt),                 // $9
        bill.map(|b| b.tokens.completion),             // $10
        attempts.len(),                                // $11
        bill.and_then(|b| b.cost),                     // $12
        bill.map(|b| b.tokens.estimated),              // $13
        bill.and_then(|b| b.price_id),                 // $14
        bill.map(|b| b.latency_ms),                    // $15
        bill.map(|b| b.routed_model),                  // $16
        reason.map(RouteReason::as_str),               // $17
        policy.as_str(),                               // $18
        &attempts.provider as &[&str],                 // $19
        &attempts.upstream_model,                      // $20
        &attempts.started_at,                          // $21
        &attempts.latency_ms,                          // $22
        &attempts.status_code as &[Option<i32>],       // $23
        &attempts.outcome as &[&str],                  // $24
        &attempts.error_code as &[Option<String>],     // $25
        &attempts.error_message as &[Option<String>],  // $26
        &attempts.prompt_tokens as &[Option<i32>],     // $27
        &attempts.completion_tokens as &[Option<i32>], // $28
        &attempts.cost as &[Option<Decimal>],          // $29
        &attempts.host as &[Option<String>],           // $30
    )
    .fetch_one(pool)
    .await?;
    Ok(finished.recorded())
}
