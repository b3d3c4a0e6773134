//! The `job_attempts` table: one row per provider call.
//!
//! A worker run collects its calls in memory and writes them in the same statement that records how
//! the run ended ([`super::runs`]), with the day's provider spend, so a job's attempts and its
//! status never disagree and the happy path costs no extra commit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;

use crate::domain::{JobError, JobErrorCode, JobId, ProviderName};
use crate::provider::TokenDetails;

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
    /// The parts of those counts spent reasoning and read from the provider's cache.
    pub details: TokenDetails,
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

/// A run's attempts as column arrays, for one multi-row insert.
#[derive(Default)]
pub(super) struct AttemptColumns {
    pub(super) provider: Vec<&'static str>,
    pub(super) upstream_model: Vec<String>,
    pub(super) started_at: Vec<DateTime<Utc>>,
    pub(super) latency_ms: Vec<i32>,
    pub(super) status_code: Vec<Option<i32>>,
    pub(super) outcome: Vec<&'static str>,
    pub(super) error_code: Vec<Option<String>>,
    pub(super) error_message: Vec<Option<String>>,
    pub(super) prompt_tokens: Vec<Option<i32>>,
    pub(super) completion_tokens: Vec<Option<i32>>,
    pub(super) reasoning_tokens: Vec<Option<i32>>,
    pub(super) cached_tokens: Vec<Option<i32>>,
    pub(super) cache_write_tokens: Vec<Option<i32>>,
    pub(super) error_body: Vec<Option<serde_json::Value>>,
    pub(super) cost: Vec<Option<Decimal>>,
    pub(super) host: Vec<Option<String>>,
}

impl AttemptColumns {
    /// Several runs' attempts, each run's after the last, for one statement that ends them all:
    /// beside the columns, the number (from 1) of the run each attempt belongs to.
    pub(super) fn of_runs<'a>(runs: impl Iterator<Item = &'a [AttemptRecord]>) -> (Self, Vec<i32>) {
        let mut c = Self::default();
        let mut run_of = Vec::new();
        for (n, attempts) in (1..).zip(runs) {
            c.push(attempts);
            run_of.extend(std::iter::repeat_n(n, attempts.len()));
        }
        (c, run_of)
    }

    fn push(&mut self, attempts: &[AttemptRecord]) {
        let c = self;
        for a in attempts {
            c.provider.push(a.provider.as_str());
            c.upstream_model.push(a.upstream_model.clone());
            c.started_at.push(a.started_at);
            c.latency_ms
                .push(i32::try_from(a.latency.as_millis()).unwrap_or(i32::MAX));
            c.status_code.push(a.status_code.map(i32::from));
            c.outcome.push(a.outcome.as_str());
            c.error_code
                .push(a.error.as_ref().map(|e| e.code.as_str().to_owned()));
            c.error_message
                .push(a.error.as_ref().map(|e| e.message.clone()));
            c.prompt_tokens.push(a.prompt_tokens);
            c.completion_tokens.push(a.completion_tokens);
            // Parts of a count the call reported; none for a call that reported no counts.
            let counted = a.prompt_tokens.is_some() || a.completion_tokens.is_some();
            c.reasoning_tokens
                .push(counted.then_some(a.details.reasoning));
            c.cached_tokens.push(counted.then_some(a.details.cached));
            c.cache_write_tokens
                .push(counted.then_some(a.details.cache_written));
            c.error_body.push(
                a.error
                    .as_ref()
                    .and_then(|e| e.upstream.as_deref().cloned()),
            );
            c.cost.push(a.cost);
            c.host.push(a.host.clone());
        }
    }
}

/// One row of `job_attempts`, as read back.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
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
    pub error_code: Option<JobErrorCode>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
}

/// A job's provider calls, oldest first.
pub async fn list(pool: &PgPool, id: JobId) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as!(
        AttemptRow,
        r#"select claim, provider, host, upstream_model, started_at, finished_at, latency_ms,
                status_code, outcome, error_code as "error_code: JobErrorCode", prompt_tokens,
                completion_tokens
           from job_attempts where job_id = $1 order by id"#,
        id as JobId,
    )
    .fetch_all(pool)
    .await
}
