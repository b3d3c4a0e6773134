//! The `job_attempts` table: one row per provider call.
//!
//! A worker run collects its calls in memory and writes them in the same statement that records how
//! the run ended ([`super::runs`]), with the day's provider spend, so a job's attempts and its
//! status never disagree and the happy path costs no extra commit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgPool, Postgres};

use crate::domain::{JobError, JobId, ProviderName};

/// One provider call, about to be recorded.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub provider: ProviderName,
    /// The fleet's host that took the call (Ollama only).
    pub host: Option<String>,
    pub upstream_model: String,
    pub started_at: DateTime<Utc>,
    pub latency: Duration,
    pub status_code: Option<u16>,
    pub outcome: AttemptOutcome,
    pub error: Option<JobError>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    /// What the call cost at the price in force when the run ended; `None` when unpriced.
    pub cost: Option<Decimal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    TransientError,
    PermanentError,
    /// An estimate for a run that never recorded its end (its worker died mid-call, or lost its
    /// claim): the provider was most likely called and paid. A run's estimates come first among
    /// its attempts.
    Abandoned,
    /// Cut short because the job was cancelled while the provider answered (a streaming client
    /// that went away, or a cancel): what it generated so far is billed.
    Cancelled,
}

impl AttemptOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::TransientError => "transient_error",
            Self::PermanentError => "permanent_error",
            Self::Abandoned => "abandoned",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The run's attempts as a table, `run_attempts`, from the column arrays `$1`..`$12` bound by
/// [`AttemptColumns::bind`].
pub(super) const RUN_ATTEMPTS: &str = "
    run_attempts as (
        select * from unnest($1::text[], $2::text[], $3::timestamptz[], $4::int[], $5::int[],
                             $6::text[], $7::text[], $8::text[], $9::int[], $10::int[],
                             $11::numeric[], $12::text[])
                 with ordinality as a(provider, upstream_model, started_at, latency_ms,
                                      status_code, outcome, error_code, error_message,
                                      prompt_tokens, completion_tokens, cost, host, n))";

/// Inserts `run_attempts` for the job row named `done` (if the run's end was recorded), and adds
/// them to the day's provider spend: calls, tokens and cost, failed calls included, estimated
/// calls counted apart. The estimates for abandoned runs, first among the attempts, take the
/// claims just before this run's, oldest first.
pub(super) const INSERT_FROM_DONE: &str = "
    abandoned as (select count(*) as runs from run_attempts where outcome = 'abandoned'),
    attempt as (
        insert into job_attempts (job_id, claim, provider, upstream_model, started_at, finished_at,
                                  latency_ms, status_code, outcome, error_code, error_message,
                                  prompt_tokens, completion_tokens, cost, host)
        select done.id,
               done.claims - case when a.outcome = 'abandoned' then abandoned.runs - a.n + 1
                                  else 0 end,
               a.provider, a.upstream_model, a.started_at,
               a.started_at + make_interval(secs => a.latency_ms / 1000.0), a.latency_ms,
               a.status_code, a.outcome, a.error_code, a.error_message, a.prompt_tokens,
               a.completion_tokens, a.cost, a.host
          from done, abandoned, run_attempts a
         order by a.n),
    spend as (
        insert into provider_spend_daily as s (day, provider, upstream_model, shard, calls,
                                               prompt_tokens, completion_tokens, cost,
                                               unpriced_calls, estimated_calls)
        select (now() at time zone 'utc')::date, a.provider, a.upstream_model,
               floor(random() * 32)::smallint, count(*),
               coalesce(sum(a.prompt_tokens), 0), coalesce(sum(a.completion_tokens), 0),
               coalesce(sum(a.cost), 0),
               count(*) filter (where a.cost is null
                                  and coalesce(a.prompt_tokens, 0) + coalesce(a.completion_tokens, 0) > 0),
               count(*) filter (where a.outcome = 'abandoned')
          from done, run_attempts a
         group by a.provider, a.upstream_model
        on conflict (day, provider, upstream_model, shard) do update
           set calls = s.calls + excluded.calls,
               prompt_tokens = s.prompt_tokens + excluded.prompt_tokens,
               completion_tokens = s.completion_tokens + excluded.completion_tokens,
               cost = s.cost + excluded.cost,
               unpriced_calls = s.unpriced_calls + excluded.unpriced_calls,
               estimated_calls = s.estimated_calls + excluded.estimated_calls)";

/// A run's attempts as column arrays, for one multi-row insert.
#[derive(Default)]
pub(super) struct AttemptColumns {
    provider: Vec<&'static str>,
    upstream_model: Vec<String>,
    started_at: Vec<DateTime<Utc>>,
    latency_ms: Vec<i32>,
    status_code: Vec<Option<i32>>,
    outcome: Vec<&'static str>,
    error_code: Vec<Option<String>>,
    error_message: Vec<Option<String>>,
    prompt_tokens: Vec<Option<i32>>,
    completion_tokens: Vec<Option<i32>>,
    cost: Vec<Option<Decimal>>,
    host: Vec<Option<String>>,
}

impl AttemptColumns {
    pub(super) fn new(attempts: &[AttemptRecord]) -> Self {
        let mut c = Self::default();
        for a in attempts {
            c.provider.push(a.provider.as_str());
            c.upstream_model.push(a.upstream_model.clone());
            c.started_at.push(a.started_at);
            c.latency_ms
                .push(i32::try_from(a.latency.as_millis()).unwrap_or(i32::MAX));
            c.status_code.push(a.status_code.map(i32::from));
            c.outcome.push(a.outcome.as_str());
            c.error_code.push(a.error.as_ref().map(|e| e.code.clone()));
            c.error_message
                .push(a.error.as_ref().map(|e| e.message.clone()));
            c.prompt_tokens.push(a.prompt_tokens);
            c.completion_tokens.push(a.completion_tokens);
            c.cost.push(a.cost);
            c.host.push(a.host.clone());
        }
        c
    }

    pub(super) fn len(&self) -> i32 {
        i32::try_from(self.provider.len()).unwrap_or(i32::MAX)
    }

    /// Binds the twelve arrays as `$1`..`$12`.
    pub(super) fn bind<'q, O>(
        &'q self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        query
            .bind(&self.provider)
            .bind(&self.upstream_model)
            .bind(&self.started_at)
            .bind(&self.latency_ms)
            .bind(&self.status_code)
            .bind(&self.outcome)
            .bind(&self.error_code)
            .bind(&self.error_message)
            .bind(&self.prompt_tokens)
            .bind(&self.completion_tokens)
            .bind(&self.cost)
            .bind(&self.host)
    }
}

/// One row of `job_attempts`, as read back.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct AttemptRow {
    pub claim: i32,
    pub provider: String,
    /// The fleet's host that took an Ollama call.
    pub host: Option<String>,
    pub upstream_model: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub latency_ms: i32,
    pub status_code: Option<i32>,
    pub outcome: String,
    pub error_code: Option<String>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
}

/// A job's provider calls, oldest first.
pub async fn list(pool: &PgPool, id: JobId) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as(
        "select claim, provider, host, upstream_model, started_at, finished_at, latency_ms,
                status_code, outcome, error_code, prompt_tokens, completion_tokens
           from job_attempts where job_id = $1 order by id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}
