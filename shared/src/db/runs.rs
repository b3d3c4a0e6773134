//! A worker's run of a job: claiming it, then recording how the run ended — finished, or parked in
//! a delay queue for another run — together with the run's attempt rows, in one statement.
//!
//! The `where` clauses carry the rules: a job is claimed only from a claimable state, and only the
//! claim that holds it may record its end, so a worker that lost its claim writes nothing.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use rust_decimal::Decimal;

use super::job_attempts::{AttemptColumns, AttemptRecord};
use crate::billing::{self, Price};
use crate::domain::{
    DataPolicy, JobError, JobId, JobRequest, JobStatus, ProviderName, RouteReason, TenantId,
    TraceParent,
};
use crate::provider::TokenCounts;

/// A job a worker now holds.
pub struct ClaimedJob {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub request: JobRequest,
    /// How many times the job has been claimed, this claim included.
    pub claims: i32,
    /// How many earlier runs ended with the job parked for a delayed retry.
    pub retries: i32,
    /// The job's revision once claimed (its `running` event's id).
    pub revision: i32,
    /// A batch's item: its provider calls leave room for single jobs.
    pub bulk: bool,
    /// How many of its abandoned runs have their estimated attempt recorded.
    pub abandoned_recorded: i32,
    /// The client follows its text as it is generated.
    pub stream: bool,
    /// The key of the api instance holding the streaming client, if one does.
    pub stream_to: Option<String>,
    /// A cancel was asked for while the job ran (before this claim, or racing it).
    pub cancel_requested: bool,
    /// The data policy in force now: the token's, else its tenant's.
    pub data_policy: DataPolicy,
    /// Its tenant lets batch items overflow to the cloud.
    pub batch_overflow: bool,
    /// The trace it was accepted in, if it was.
    pub traceparent: Option<TraceParent>,
}

impl ClaimedJob {
    /// Claims whose run neither finished nor parked the job: its workers died (or lost the job to
    /// the sweeper) this many times, this claim included.
    pub fn abandoned_runs(&self) -> i32 {
        self.claims - self.retries
    }

    /// The abandoned runs before this one with no estimated attempt yet: this run's end writes
    /// one for each (and marks them recorded).
    pub fn unrecorded_abandoned_runs(&self) -> i32 {
        (self.abandoned_runs() - 1 - self.abandoned_recorded).max(0)
    }
}

/// A `retrying` job's message may arrive a little before `retry_at` (clocks differ); one that
/// arrives earlier than this many seconds is a stale duplicate and is left alone.
const EARLY_ARRIVAL_SECS: f64 = 1.0;

/// Claims a job for one worker run.
///
/// Claimable: `queued`; `retrying` once it is due; or `running` when the message is a broker
/// redelivery (the worker that held it died before acking) or the previous claim's lease ran out.
/// Anything else — a finished or cancelled job, or a duplicate message for a job another worker is
/// running — is `None`, and the caller acks the message without working it.
pub async fn claim(
    pool: &PgPool,
    id: JobId,
    claim_id: Uuid,
    redelivered: bool,
    lease: Duration,
) -> Result<Option<ClaimedJob>, sqlx::Error> {
    struct Row {
        tenant_id: TenantId,
        request: Value,
        claims: i32,
        retries: i32,
        revision: i32,
        bulk: bool,
        abandoned_recorded: i32,
        stream: bool,
        stream_to: Option<String>,
        cancel_requested: bool,
        data_policy: String,
        batch_overflow: bool,
        traceparent: Option<String>,
    }
    // The data policy is read at each claim, not kept from intake: a tenant made `local_only`
    // keeps its queued jobs off the cloud too.
    let row = sqlx::query_as!(
        Row,
        r#"update jobs
            set status = 'running', claim_id = $2, claims = claims + 1, revision = revision + 1,
                started_at = coalesce(started_at, now()),
                lease_expires_at = now() + make_interval(secs => $4)
          where id = $1
            and (status = 'queued'
                 or (status = 'retrying' and retry_at <= now() + make_interval(secs => $5))
                 or (status = 'running' and ($3 or lease_expires_at < now())))
          returning tenant_id as "tenant_id: TenantId", request, claims, retries, revision,
                    batch_id is not null as "bulk!", abandoned_recorded, stream, stream_to,
                    cancel_requested_at is not null as "cancel_requested!",
                    (select coalesce(k.data_policy, n.data_policy)
                       from tenants n left join api_tokens k on k.id = jobs.token_id
                      where n.id = jobs.tenant_id) as "data_policy!",
                    (select batch_overflow from tenants where id = jobs.tenant_id)
                        as "batch_overflow!", traceparent"#,
        id as JobId,
        claim_id,
        redelivered,
        lease.as_secs_f64(),
        EARLY_ARRIVAL_SECS,
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let request =
        serde_json::from_value(row.request).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Some(ClaimedJob {
        id,
        tenant_id: row.tenant_id,
        request,
        claims: row.claims,
        retries: row.retries,
        revision: row.revision,
        bulk: row.bulk,
        abandoned_recorded: row.abandoned_recorded,
        stream: row.stream,
        stream_to: row.stream_to,
        cancel_requested: row.cancel_requested,
        data_policy: DataPolicy::parse("data_policy", &row.data_policy)
            .map_err(|e| sqlx::Error::Decode(e.message.into()))?,
        batch_overflow: row.batch_overflow,
        traceparent: row.traceparent.as_deref().and_then(TraceParent::parse),
    }))
}

/// Pushes a running claim's lease out to `lease` from now (a lost claim is left alone), and says
/// whether a cancel has been asked for meanwhile: the backstop for a cancel message that never
/// reached this worker.
pub async fn extend_lease(
    pool: &PgPool,
    id: JobId,
    claim_id: Uuid,
    lease: Duration,
) -> Result<bool, sqlx::Error> {
    let cancel_requested = sqlx::query_scalar!(
        r#"update jobs set lease_expires_at = now() + make_interval(secs => $3)
          where id = $1 and claim_id = $2 and status = 'running'
          returning cancel_requested_at is not null as "cancel_requested!""#,
        id as JobId,
        claim_id,
        lease.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await?;
    Ok(cancel_requested.unwrap_or(false))
}

/// How a run ended the job.
pub enum Outcome {
    Succeeded {
        provider: ProviderName,
        /// Why it went to `provider`.
        reason: RouteReason,
        /// The model the provider says answered (shown on the job).
        upstream_model: String,
        /// The model the route asked for: the usage record's, and what the price is for.
        routed_model: String,
        result: Value,
        tokens: TokenCounts,
        /// The price in force, if the model has one: without one the job is billed as unpriced,
        /// never as free.
        price: Option<Price>,
        /// Latency of the call that answered.
        latency: Duration,
    },
    Failed {
        provider: Option<ProviderName>,
        upstream_model: Option<String>,
        error: JobError,
    },
    /// Ended early: `failed` when the provider failed after text had reached a streaming client
    /// (no retry could take it back), or `cancelled` when asked mid-run. What was generated until
    /// then, if anything, is the job's result and is billed.
    Stopped {
        status: JobStatus,
        provider: Option<ProviderName>,
        /// Why it went to `provider`, when it went anywhere.
        reason: Option<RouteReason>,
        upstream_model: Option<String>,
        error: JobError,
        partial: Option<Partial>,
    },
}

/// The text a run generated before it stopped, and what it is billed.
pub struct Partial {
    pub routed_model: String,
    pub result: Value,
    pub tokens: TokenCounts,
    pub price: Option<Price>,
    pub latency: Duration,
}

impl Outcome {
    /// The job's status once this outcome is recorded.
    pub fn status(&self) -> JobStatus {
        match self {
            Self::Succeeded { .. } => JobStatus::Succeeded,
            Self::Failed { .. } => JobStatus::Failed,
            Self::Stopped { status, .. } => *status,
        }
    }

    /// Why the job went where it went, when it went anywhere.
    pub fn reason(&self) -> Option<RouteReason> {
        match self {
            Self::Succeeded { reason, .. } => Some(*reason),
            Self::Failed { .. } => None,
            Self::Stopped { reason, .. } => *reason,
        }
    }

    /// A cancel that found nothing generated.
    pub fn cancelled() -> Self {
        Self::Stopped {
            status: JobStatus::Cancelled,
            provider: None,
            reason: None,
            upstream_model: None,
            error: cancelled_error(),
            partial: None,
        }
    }

    /// A failure decided without a provider answer (no provider, too many claims).
    pub fn failed_without_call(code: &str, message: impl Into<String>) -> Self {
        Self::Failed {
            provider: None,
            upstream_model: None,
            error: JobError {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }
}

/// The error a cancelled job shows: the same whether it was cancelled queued or running.
pub fn cancelled_error() -> JobError {
    JobError {
        code: "cancelled".into(),
        message: "cancelled by the client".into(),
    }
}

/// A job's end (or a run's) as recorded: the job's new revision, and the webhook delivery its
/// terminal statement wrote, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub revision: i32,
    pub delivery: Option<Uuid>,
}

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

/// A statement ending a run: how many jobs it ended (1, or 0 when the claim was lost), the new
/// revision and the webhook delivery written.
struct EndOfRun {
    ended: i64,
    revision: Option<i32>,
    delivery: Option<Uuid>,
}

impl EndOfRun {
    /// The end as a [`Recorded`], or `None` when the claim was lost.
    fn recorded(self) -> Option<Recorded> {
        match (self.ended, self.revision) {
            (1, Some(revision)) => Some(Recorded {
                revision,
                delivery: self.delivery,
            }),
            _ => None,
        }
    }
}

/// Parks a claimed job as `retrying` after a run in which every provider failed transiently: the
/// last error is shown meanwhile, the run's attempts are recorded, and `retry_at` says when it is
/// due. The caller then publishes its message to the delay queue. `None` if the claim was lost.
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
        error.code,                                    // $3
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
