//! A worker's run of a job: claiming it ([`claim`]), then recording how the run ended — the job
//! finished, or parked for another run ([`Outcome::Parked`]) — together with the run's attempt
//! rows, in one statement ([`finish`], [`finish_many`] for the runs that ended together).
//!
//! The `where` clauses carry the rules: a job is claimed only from a claimable state, and only the
//! claim that holds it may record its end, so a worker that lost its claim writes nothing.

mod finish;
mod outcome;

use std::time::Duration;

use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::cache::{CacheKey, CacheState, JobCache};
use crate::domain::{DataPolicy, JobId, JobRequest, TenantId, TraceParent};

pub use finish::{Finish, finish, finish_many};
pub use outcome::{Hit, Outcome, Partial, Recorded, cancelled_error};

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
    /// What the response cache does for it.
    pub cache: JobCache,
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

/// The columns a claim returns.
struct ClaimRow {
    id: JobId,
    claim_id: Uuid,
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
    cache: Option<String>,
    cache_key: Option<Vec<u8>>,
    cache_ttl_secs: Option<i32>,
}

impl ClaimRow {
    /// The job claimed, or the error of a stored request this version cannot read.
    fn into_claimed(self) -> Result<ClaimedJob, sqlx::Error> {
        Ok(ClaimedJob {
            id: self.id,
            tenant_id: self.tenant_id,
            request: serde_json::from_value(self.request)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            claims: self.claims,
            retries: self.retries,
            revision: self.revision,
            bulk: self.bulk,
            abandoned_recorded: self.abandoned_recorded,
            stream: self.stream,
            stream_to: self.stream_to,
            cancel_requested: self.cancel_requested,
            data_policy: DataPolicy::parse("data_policy", &self.data_policy)
                .map_err(|e| sqlx::Error::Decode(e.message.into()))?,
            batch_overflow: self.batch_overflow,
            traceparent: self.traceparent.as_deref().and_then(TraceParent::parse),
            cache: JobCache {
                state: self.cache.as_deref().and_then(CacheState::parse),
                key: self
                    .cache_key
                    .and_then(|k| <[u8; 32]>::try_from(k).ok())
                    .map(CacheKey),
                ttl_secs: self.cache_ttl_secs.and_then(|t| u32::try_from(t).ok()),
            },
        })
    }
}

/// A `retrying` job's message may arrive a little before `retry_at` (clocks differ); one that
/// arrives earlier than this many seconds is a stale duplicate and is left alone.
const EARLY_ARRIVAL_SECS: f64 = 1.0;

/// A message's job to claim: the claim to take it under, and whether the broker redelivered it.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest {
    pub id: JobId,
    pub claim_id: Uuid,
    pub redelivered: bool,
}

/// Claims a job for one worker run.
///
/// Claimable: `queued`; `retrying` once it is due; or `running` when the message is a broker
/// redelivery (the worker that held it died before acking) or the previous claim's lease ran out.
/// Anything else — a finished or cancelled job, or a duplicate message for a job another worker is
/// running — is `None`, and the caller acks the message without working it.
///
/// A claim tried again after its commit's answer was lost (the connection broke as it committed)
/// finds its own effect: the job `running` under this very claim is returned as it is — its lease
/// renewed, but neither `claims` nor `revision` counted again, so no run is taken for abandoned.
pub async fn claim(
    pool: impl PgExecutor<'_>,
    request: ClaimRequest,
    lease: Duration,
) -> Result<Option<ClaimedJob>, sqlx::Error> {
    // The statement of `claim_many` for one job, without its arrays: a claim alone is planned in
    // a fraction of the time (measured: 0.6 ms of planning per call for the array form), and a
    // worker with one message at a time claims alone.
    let row = sqlx::query_as!(
        ClaimRow,
        r#"update jobs
            set status = 'running', claim_id = $2,
                claims = claims + (claim_id is distinct from $2)::int,
                revision = revision + (claim_id is distinct from $2)::int,
                started_at = coalesce(started_at, now()),
                lease_expires_at = now() + make_interval(secs => $4)
          where id = $1
            and (status = 'queued'
                 or (status = 'retrying' and retry_at <= now() + make_interval(secs => $5))
                 or (status = 'running' and ($3 or lease_expires_at < now() or claim_id = $2)))
          returning id as "id: JobId", claim_id as "claim_id!",
                    tenant_id as "tenant_id: TenantId", request, claims, retries, revision,
                    batch_id is not null as "bulk!", abandoned_recorded, stream, stream_to,
                    cancel_requested_at is not null as "cancel_requested!",
                    (select coalesce(k.data_policy, n.data_policy)
                       from tenants n left join api_tokens k on k.id = jobs.token_id
                      where n.id = jobs.tenant_id) as "data_policy!",
                    (select batch_overflow from tenants where id = jobs.tenant_id)
                        as "batch_overflow!", traceparent, cache, cache_key, cache_ttl_secs"#,
        request.id as JobId,
        request.claim_id,
        request.redelivered,
        lease.as_secs_f64(),
        EARLY_ARRIVAL_SECS,
    )
    .fetch_optional(pool)
    .await?;
    row.map(ClaimRow::into_claimed).transpose()
}

/// Claims the jobs of messages delivered together in one statement, each as [`claim`] would; the
/// answers follow the requests' order. Two requests for one job (a duplicate message delivered
/// beside the original) are both claimable at once: the job is claimed once, by the first. A job
/// claimed whose stored request this version cannot read is an error of its own. A job whose row
/// another statement holds is not waited for: it is answered as not claimed, and its caller asks
/// [`claim`] again for a job none of the requests claimed.
pub async fn claim_many(
    pool: &PgPool,
    requests: &[ClaimRequest],
    lease: Duration,
) -> Result<Vec<Result<Option<ClaimedJob>, sqlx::Error>>, sqlx::Error> {
    let ids: Vec<JobId> = requests.iter().map(|r| r.id).collect();
    let claim_ids: Vec<Uuid> = requests.iter().map(|r| r.claim_id).collect();
    let redelivered: Vec<bool> = requests.iter().map(|r| r.redelivered).collect();
    let (low, high) = crate::db::id_bounds(&ids);
    // The data policy is read at each claim, not kept from intake: a tenant made `local_only`
    // keeps its queued jobs off the cloud too. `distinct on` keeps one request per job (an update
    // joined to two rows for one job would apply only one of them, arbitrarily); `id = any($1)`
    // and `id between` their bounds let the plan prune the days none of them is in. The rows are
    // locked first (`locked`), skipping any another statement holds: a group claim never waits,
    // so it cannot be one of two statements waiting on each other's rows in a circle (a
    // deadlock). Its caller claims a job it skipped by itself ([`claim`], which holds nothing
    // else while it waits).
    let rows = sqlx::query_as!(
        ClaimRow,
        r#"with locked as (
            select id from jobs where id = any($1::uuid[]) and id between $6 and $7
               for update skip locked
         )
         update jobs
            set status = 'running', claim_id = c.claim_id,
                claims = claims + (jobs.claim_id is distinct from c.claim_id)::int,
                revision = revision + (jobs.claim_id is distinct from c.claim_id)::int,
                started_at = coalesce(started_at, now()),
                lease_expires_at = now() + make_interval(secs => $4)
           from (select distinct on (id) id, claim_id, redelivered
                   from unnest($1::uuid[], $2::uuid[], $3::bool[])
                        with ordinality as r(id, claim_id, redelivered, n)
                  order by id, n) c
          join locked on locked.id = c.id
          where jobs.id = c.id and jobs.id = any($1::uuid[]) and jobs.id between $6 and $7
            and (status = 'queued'
                 or (status = 'retrying' and retry_at <= now() + make_interval(secs => $5))
                 or (status = 'running'
                     and (c.redelivered or lease_expires_at < now()
                          or jobs.claim_id = c.claim_id)))
          returning jobs.id as "id: JobId", c.claim_id as "claim_id!",
                    tenant_id as "tenant_id: TenantId", request, claims, retries, revision,
                    batch_id is not null as "bulk!", abandoned_recorded, stream, stream_to,
                    cancel_requested_at is not null as "cancel_requested!",
                    (select coalesce(k.data_policy, n.data_policy)
                       from tenants n left join api_tokens k on k.id = jobs.token_id
                      where n.id = jobs.tenant_id) as "data_policy!",
                    (select batch_overflow from tenants where id = jobs.tenant_id)
                        as "batch_overflow!", traceparent, cache, cache_key, cache_ttl_secs"#,
        &ids as &[JobId],
        &claim_ids,
        &redelivered,
        lease.as_secs_f64(),
        EARLY_ARRIVAL_SECS,
        low as JobId,
        high as JobId,
    )
    .fetch_all(pool)
    .await?;
    let mut by_claim: std::collections::HashMap<Uuid, ClaimRow> =
        rows.into_iter().map(|row| (row.claim_id, row)).collect();
    let claimed = requests
        .iter()
        .map(|request| {
            by_claim
                .remove(&request.claim_id)
                .map(ClaimRow::into_claimed)
                .transpose()
        })
        .collect();
    Ok(claimed)
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
