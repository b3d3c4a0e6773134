//! How a run ended — its job finished, or parked for another run — and what its statement answers.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::billing::Price;
use crate::db::cache::CachedAnswer;
use crate::domain::{JobError, JobErrorCode, JobStatus, ProviderName, RouteReason};
use crate::provider::TokenCounts;

/// How a run ended: the job's end, or its park.
#[derive(Clone)]
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
    /// Answered from a stored answer (or an identical job's, run meanwhile) without a call:
    /// billed at its price's cache rate, with what the answer cost when it was called.
    Hit(Box<Hit>),
    /// Not the job's end: every provider failed transiently and runs are left, so the job waits
    /// `delay` as `retrying`, showing `error` meanwhile; its message then goes to a delay queue.
    Parked { error: JobError, delay: Duration },
}

/// A job answered from the cache: the answer, and the price whose cache rate it is billed at.
#[derive(Clone)]
pub struct Hit {
    pub answer: CachedAnswer,
    pub price: Option<Price>,
}

/// The text a run generated before it stopped, and what it is billed.
#[derive(Clone)]
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
            Self::Succeeded { .. } | Self::Hit(_) => JobStatus::Succeeded,
            Self::Failed { .. } => JobStatus::Failed,
            Self::Stopped { status, .. } => *status,
            Self::Parked { .. } => JobStatus::Retrying,
        }
    }

    /// Why the job went where it went, when it went anywhere.
    pub fn reason(&self) -> Option<RouteReason> {
        match self {
            Self::Succeeded { reason, .. } => Some(*reason),
            Self::Failed { .. } | Self::Parked { .. } | Self::Hit(_) => None,
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
    pub fn failed_without_call(code: JobErrorCode, message: impl Into<String>) -> Self {
        Self::Failed {
            provider: None,
            upstream_model: None,
            error: JobError::new(code, message),
        }
    }
}

/// The error a cancelled job shows: the same whether it was cancelled queued or running.
pub fn cancelled_error() -> JobError {
    JobError::new(JobErrorCode::Cancelled, "cancelled by the client")
}

/// A job's end (or a run's) as recorded: the job's new revision, and the webhook delivery its
/// terminal statement wrote, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub revision: i32,
    pub delivery: Option<Uuid>,
}
