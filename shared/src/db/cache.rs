//! The response cache's statements. A stored answer is the job that answered, while its
//! `cache_expires_at` lasts (the statement ending a run sets it, [`super::runs::finish_many`]);
//! `cache_flights` holds, per tenant and key, the job calling the provider for identical jobs.
//!
//! [`lookup`] finds a stored answer at intake; [`lead`] decides, for a claimed job, whether it
//! is answered, leads or waits; once a leader ends, [`claim_waiters`] takes the jobs that waited
//! for its answer and [`promote`] gives the key to one of them when it has no answer;
//! [`stranded`] finds keys whose waiters were left (their leader ended some other way); [`purge`]
//! is an operator's invalidation.

use std::time::Duration;

use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::partitions;
use crate::domain::cache::CacheKey;
use crate::domain::{DataPolicy, JobId, ProviderName, TenantId};
use crate::provider::{TokenCounts, TokenDetails};

/// A stored answer: the job that answered, what it answered and what it cost.
#[derive(Debug, Clone)]
pub struct CachedAnswer {
    pub source: JobId,
    pub provider: ProviderName,
    /// The model the provider says answered.
    pub upstream_model: Option<String>,
    /// The model the route asked for (what prices are for).
    pub routed_model: String,
    pub result: Value,
    pub tokens: TokenCounts,
    /// What its call cost the tenant: what a hit saves.
    pub cost: Option<Decimal>,
}

/// The columns an answer is read from.
struct AnswerRow {
    id: JobId,
    provider: Option<String>,
    upstream_model: Option<String>,
    routed_model: Option<String>,
    result: Option<Value>,
    prompt_tokens: Option<i32>,
    completion_tokens: Option<i32>,
    reasoning_tokens: Option<i32>,
    cached_tokens: Option<i32>,
    cache_write_tokens: Option<i32>,
    cost: Option<Decimal>,
}

impl AnswerRow {
    fn into_answer(self) -> Option<CachedAnswer> {
        let provider = ProviderName::stored(self.provider.as_deref()?);
        Some(CachedAnswer {
            source: self.id,
            provider,
            routed_model: self
                .routed_model
                .or_else(|| self.upstream_model.clone())
                .unwrap_or_default(),
            upstream_model: self.upstream_model,
            result: self.result?,
            tokens: TokenCounts {
                prompt: self.prompt_tokens?,
                completion: self.completion_tokens?,
                estimated: false,
                details: TokenDetails {
                    reasoning: self.reasoning_tokens.unwrap_or(0),
                    cached: self.cached_tokens.unwrap_or(0),
                    cache_written: self.cache_write_tokens.unwrap_or(0),
                },
            },
            cost: self.cost,
        })
    }
}

/// The oldest job whose answer may serve a request that takes answers `max_age` old.
fn oldest(max_age: Duration) -> JobId {
    let age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    let since = Utc::now().checked_sub_signed(age).unwrap_or_default();
    JobId(partitions::floor(since))
}

/// The newest answer stored for `key` of `tenant` at most `max_age` old and not expired. The
/// age bound prunes the days (partitions) older than it.
pub async fn lookup(
    pool: &PgPool,
    tenant: TenantId,
    key: CacheKey,
    max_age: Duration,
) -> Result<Option<CachedAnswer>, sqlx::Error> {
    let row = sqlx::query_as!(
        AnswerRow,
        r#"select j.id as "id: JobId", j.provider, j.upstream_model,
                  (select u.upstream_model from usage_records u
                    where u.job_id = j.id and u.job_id >= $3) as routed_model,
                  j.result, j.prompt_tokens, j.completion_tokens, j.reasoning_tokens,
                  j.cached_tokens, j.cache_write_tokens, j.cost
             from jobs j
            where j.tenant_id = $1 and j.cache_key = $2 and j.cache_expires_at > now()
              and j.id >= $3
            order by j.id desc
            limit 1"#,
        tenant as TenantId,
        &key.0[..],
        oldest(max_age) as JobId,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(AnswerRow::into_answer))
}

/// The stored answer of job `source` (named by [`lead`]).
pub async fn answer(pool: &PgPool, source: JobId) -> Result<Option<CachedAnswer>, sqlx::Error> {
    let row = sqlx::query_as!(
        AnswerRow,
        r#"select j.id as "id: JobId", j.provider, j.upstream_model,
                  (select u.upstream_model from usage_records u where u.job_id = $1)
                      as routed_model,
                  j.result, j.prompt_tokens, j.completion_tokens, j.reasoning_tokens,
                  j.cached_tokens, j.cache_write_tokens, j.cost
             from jobs j
            where j.id = $1 and j.status = 'succeeded'"#,
        source as JobId,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(AnswerRow::into_answer))
}

/// What a claimed job with a key does ([`lead`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lead {
    /// Answered by job `source`'s stored answer, without a call.
    Hit(JobId),
    /// It calls the provider for the key.
    Leads,
    /// An identical job is running: this one is back `queued`, waiting for its answer.
    Waits,
    /// Its claim no longer holds.
    Lost,
}

/// Decides what a job claimed under `claim_id` does for `key` (the SQL function
/// `tollgate_cache_lead`, migration 0026): answered by a stored answer at most `max_age` old,
/// leading, or waiting.
pub async fn lead(
    pool: &PgPool,
    tenant: TenantId,
    key: CacheKey,
    job: JobId,
    claim_id: Uuid,
    max_age: Duration,
) -> Result<Lead, sqlx::Error> {
    let row = sqlx::query!(
        r#"select verdict as "verdict!", source as "source: JobId"
             from tollgate_cache_lead($1, $2, $3, $4, $5)"#,
        tenant.0,
        &key.0[..],
        job.0,
        claim_id,
        oldest(max_age).0,
    )
    .fetch_one(pool)
    .await?;
    Ok(match (row.verdict.as_str(), row.source) {
        ("hit", Some(source)) => Lead::Hit(source),
        ("lead", _) => Lead::Leads,
        ("wait", _) => Lead::Waits,
        _ => Lead::Lost,
    })
}

/// A job that waited for an identical job's answer, claimed to be answered from it.
#[derive(Debug, Clone, Copy)]
pub struct Waiter {
    pub id: JobId,
    pub claim_id: Uuid,
    pub revision: i32,
    pub bulk: bool,
    pub data_policy: DataPolicy,
}

/// Claims every job waiting on `key` of `tenant` (each under a claim of its own, with a lease, so
/// that a worker dying before it answers them leaves them to the sweeper), to be answered from
/// the key's stored answer.
pub async fn claim_waiters(
    pool: &PgPool,
    tenant: TenantId,
    key: CacheKey,
    lease: Duration,
) -> Result<Vec<Waiter>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"update jobs
              set status = 'running', claim_id = gen_random_uuid(), claims = claims + 1,
                  revision = revision + 1, cache_waiting = false,
                  started_at = coalesce(started_at, now()),
                  lease_expires_at = now() + make_interval(secs => $3)
            where tenant_id = $1 and cache_key = $2 and cache_waiting and status = 'queued'
        returning id as "id: JobId", claim_id as "claim_id!", revision,
                  batch_id is not null as "bulk!",
                  (select coalesce(k.data_policy, n.data_policy)
                     from tenants n left join api_tokens k on k.id = jobs.token_id
                    where n.id = jobs.tenant_id) as "data_policy!""#,
        tenant as TenantId,
        &key.0[..],
        lease.as_secs_f64(),
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(Waiter {
                id: row.id,
                claim_id: row.claim_id,
                revision: row.revision,
                bulk: row.bulk,
                data_policy: DataPolicy::parse("data_policy", &row.data_policy)
                    .map_err(|e| sqlx::Error::Decode(e.message.into()))?,
            })
        })
        .collect()
}

/// Gives `key` of `tenant`, whose leader ended without an answer, to its oldest waiting job: it
/// stops waiting and is to be published (it leads when claimed). Its id, and whether it is a
/// batch's item; `None` when nothing waits.
pub async fn promote(
    pool: &PgPool,
    tenant: TenantId,
    key: CacheKey,
) -> Result<Option<(JobId, bool)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"update jobs set cache_waiting = false, published_at = null
            where id = (select id from jobs
                         where tenant_id = $1 and cache_key = $2 and cache_waiting
                           and status = 'queued'
                         order by id limit 1
                           for update skip locked)
              and cache_waiting and status = 'queued'
        returning id as "id: JobId", batch_id is not null as "bulk!""#,
        tenant as TenantId,
        &key.0[..],
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| (row.id, row.bulk)))
}

/// Keys with jobs waiting whose leader is gone (ended without giving up the key: dead-lettered,
/// failed by the sweeper, or its statement's follow-up lost with its worker), waiting longer
/// than `grace`.
pub async fn stranded(
    pool: &PgPool,
    grace: Duration,
) -> Result<Vec<(TenantId, CacheKey)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select distinct w.tenant_id as "tenant_id: TenantId", w.cache_key as "key!"
             from jobs w
            where w.cache_waiting and w.status = 'queued'
              and w.id < $1
              and not exists (
                  select 1 from cache_flights f join jobs l on l.id = f.job_id
                   where f.tenant_id = w.tenant_id and f.key = w.cache_key
                     and l.status in ('queued', 'running', 'retrying'))
            limit 100"#,
        JobId(partitions::floor(
            Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default()
        )) as JobId,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((row.tenant_id, CacheKey(row.key.try_into().ok()?))))
        .collect())
}

/// What an operator purges: a tenant's answers, of one model, or of one key.
#[derive(Debug, Clone, Default)]
pub struct Purge {
    pub tenant: Option<TenantId>,
    pub model: Option<String>,
    pub key: Option<CacheKey>,
}

/// Ends the stored answers `purge` names (at least one of its fields is set): none of them
/// serves a request again. How many it ended.
pub async fn purge(conn: impl PgExecutor<'_>, purge: &Purge) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "update jobs set cache_expires_at = null
          where cache_expires_at is not null
            and ($1::uuid is null or tenant_id = $1)
            and ($2::text is null or model = $2)
            and ($3::bytea is null or cache_key = $3)",
        purge.tenant.map(|t| t.0),
        purge.model.as_deref(),
        purge.key.as_ref().map(|k| &k.0[..]),
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
