//! How a run ended the job, and what its statement answers.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::billing::Price;
use crate::domain::{JobError, JobErrorCode, JobStatus, ProviderName, RouteReason};
use crate::provider::TokenCounts;

/// How a run ended the job.
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

/// A statement ending a run: how many jobs it ended (1, or 0 when the claim was lost), the new
/// revision and the webhook delivery written.
pub(super) struct EndOfRun {
    pub(super) ended: i64,
    pub(super) revision: Option<i32>,
    pub(super) delivery: Option<Uuid>,
}

impl EndOfRun {
    /// The end as a [`Recorded`], or `None` when the claim was lost.
    pub(super) fn recorded(self) -> Option<Recorded> {
        match (self.ended, self.revision) {
            (1, Some(revision)) => Some(Recorded {
                revision,
                delivery: self.delivery,
            }),
            _ => None,
        }
    }
}
