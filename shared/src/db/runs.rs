//! A worker's run of a job: claiming it, then recording how the run ended — finished, or parked in
//! a delay queue for another run — together with the run's attempt rows, in one statement.
//!
//! The `where` clauses carry the rules: a job is claimed only from a claimable state, and only the
//! claim that holds it may record its end, so a worker that lost its claim writes nothing.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::job_attempts::{AttemptColumns, AttemptRecord, INSERT_FROM_DONE, RUN_ATTEMPTS};
use super::quotas::RELEASE_FROM_DONE;
use super::webhooks::DELIVERY_FROM_DONE;
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
/// arrives earlier than this is a stale duplicate and is left alone.
const EARLY_ARRIVAL: &str = "1 second";

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
    #[derive(sqlx::FromRow)]
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
    let row: Option<Row> = sqlx::query_as(&format!(
        "update jobs
            set status = 'running', claim_id = $2, claims = claims + 1, revision = revision + 1,
                started_at = coalesce(started_at, now()),
                lease_expires_at = now() + make_interval(secs => $4)
          where id = $1
            and (status = 'queued'
                 or (status = 'retrying' and retry_at <= now() + interval '{EARLY_ARRIVAL}')
                 or (status = 'running' and ($3 or lease_expires_at < now())))
          returning tenant_id, request, claims, retries, revision, batch_id is not null as bulk,
                    abandoned_recorded, stream, stream_to,
                    cancel_requested_at is not null as cancel_requested,
                    (select coalesce(k.data_policy, n.data_policy)
                       from tenants n left join api_tokens k on k.id = jobs.token_id
                      where n.id = jobs.tenant_id) as data_policy,
                    (select batch_overflow from tenants where id = jobs.tenant_id)
                        as batch_overflow, traceparent"
    ))
    .bind(id)
    .bind(claim_id)
    .bind(redelivered)
    .bind(lease.as_secs_f64())
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
    let cancel_requested: Option<bool> = sqlx::query_scalar(
        "update jobs set lease_expires_at = now() + make_interval(secs => $3)
          where id = $1 and claim_id = $2 and status = 'running'
          returning cancel_requested_at is not null",
    )
    .bind(id)
    .bind(claim_id)
    .bind(lease.as_secs_f64())
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
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
    let columns = AttemptColumns::new(attempts);
    let sql = end_of_run(
        "status = $15, provider = $16, upstream_model = $17, result = $18,
         error_code = $19, error_message = $20,
         prompt_tokens = $21, completion_tokens = $22, total_tokens = $21 + $22,
         attempts = attempts + $23, cost = $24, usage_estimated = $25,
         unpriced = ($21::int is not null and $26::bigint is null),
         finished_at = now(), lease_expires_at = null, retry_at = null,
         route_reason = $29, data_policy = $30",
        &format!(
            ", bill as (
                insert into usage_records (job_id, tenant_id, token_id, model, provider,
                                           upstream_model, prompt_tokens, completion_tokens,
                                           estimated, price_id, cost, latency_ms, origin,
                                           client_ip, finished_at, route_reason)
                select id, tenant_id, token_id, model, $16, $28, $21, $22, $25, $26, $24, $27,
                       origin, client_ip, finished_at, $29
                  from done where $21::int is not null
             returning tenant_id, model, prompt_tokens, completion_tokens, cost, finished_at,
                       route_reason
             ), {DAILY_FROM_BILL}, {RELEASE_FROM_DONE}, {DELIVERY_FROM_DONE}"
        ),
        "(select id from hook)",
    );
    let finished: (i64, Option<i32>, Option<Uuid>) = columns
        .bind(sqlx::query_as(&sql))
        .bind(id)
        .bind(claim_id)
        .bind(status.as_str())
        .bind(provider.map(ProviderName::as_str))
        .bind(upstream_model)
        .bind(result)
        .bind(error.map(|e| e.code.as_str()))
        .bind(error.map(|e| e.message.as_str()))
        .bind(bill.map(|b| b.tokens.prompt))
        .bind(bill.map(|b| b.tokens.completion))
        .bind(columns.len())
        .bind(bill.and_then(|b| b.cost))
        .bind(bill.map(|b| b.tokens.estimated))
        .bind(bill.and_then(|b| b.price_id))
        .bind(bill.map(|b| b.latency_ms))
        .bind(bill.map(|b| b.routed_model))
        .bind(reason.map(RouteReason::as_str))
        .bind(policy.as_str())
        .fetch_one(pool)
        .await?;
    Ok(recorded(finished))
}

/// The end-of-run row as a [`Recorded`], or `None` when the claim was lost.
fn recorded((count, revision, delivery): (i64, Option<i32>, Option<Uuid>)) -> Option<Recorded> {
    match (count, revision) {
        (1, Some(revision)) => Some(Recorded { revision, delivery }),
        _ => None,
    }
}

/// The one statement that ends a run: `set` applied to the job if claim `$14` still holds job `$13`
/// (and its revision bumped, and its abandoned runs so far marked recorded: the run's attempts
/// carry their estimates), the run's attempts (`$1`..`$12`) inserted for it and added to the
/// provider spend, then `more` (further CTEs reading `done`); `set`'s own parameters start at
/// `$15`. Its row is the count of jobs ended (1, or 0 if the claim was lost), the new revision,
/// and `delivery` (a uuid expression).
fn end_of_run(set: &str, more: &str, delivery: &str) -> String {
    format!(
        "with {RUN_ATTEMPTS},
         done as (
            update jobs set {set}, revision = revision + 1,
                            abandoned_recorded = claims - retries - 1
             where id = $13 and claim_id = $14 and status = 'running'
         returning id, claims, tenant_id, token_id, model, origin, client_ip, finished_at,
                   reserved_tokens, reserved_cost, reserved_month, status, webhook_url, revision,
                   batch_id
         ), {INSERT_FROM_DONE} {more}
         select count(*), max(revision), {delivery} from done"
    )
}

/// Adds the usage record just written (`bill`) to the tenant's day, on one of its shard rows.
const DAILY_FROM_BILL: &str = "
    daily as (
        insert into usage_daily as d (tenant_id, day, model, route_reason, shard, requests,
                                      prompt_tokens, completion_tokens, cost, unpriced_requests)
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
               unpriced_requests = d.unpriced_requests + excluded.unpriced_requests)";

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
    let columns = AttemptColumns::new(attempts);
    let sql = end_of_run(
        "status = 'retrying', retries = retries + 1, attempts = attempts + $18,
         error_code = $15, error_message = $16, retry_at = now() + make_interval(secs => $17),
         claim_id = null, lease_expires_at = null, published_at = null",
        "",
        "null::uuid",
    );
    let parked: (i64, Option<i32>, Option<Uuid>) = columns
        .bind(sqlx::query_as(&sql))
        .bind(id)
        .bind(claim_id)
        .bind(&error.code)
        .bind(&error.message)
        .bind(delay.as_secs_f64())
        .bind(columns.len())
        .fetch_one(pool)
        .await?;
    Ok(recorded(parked))
}
