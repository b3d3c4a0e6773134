//! What a run's calls share: the call as the executor describes it ([`Call`]), the lane its
//! calls wait in, and the errors a run gives.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tollgate_core::domain::conversation::AnswerSchema;
use tollgate_core::domain::{DataPolicy, JobError, JobRequest, TraceParent};
use tollgate_core::provider::{ProviderError, TokenCounts, TokenDetails};

use crate::metrics::WorkerMetrics;
use crate::relay::Relay;

/// Longest a job waits for one of a provider's concurrency permits (or a host's slots) before
/// moving on, unless its route says less: a saturated provider is treated like a busy one, so a
/// run cannot outlive its lease waiting in line.
pub(super) const PERMIT_WAIT: Duration = Duration::from_secs(30);

/// What one run asks of the chain.
pub struct Call<'a> {
    pub request: &'a JobRequest,
    /// The form each answer is checked against, when the request asks for one.
    pub answer_schema: Option<&'a AnswerSchema>,
    /// The data policy the job runs under (named in its error when it keeps the job local).
    pub policy: DataPolicy,
    pub lane: Lane,
    /// A streaming job's relay to its client.
    pub relay: Option<&'a Relay>,
    /// Cancelled when the job is.
    pub cancel: &'a CancellationToken,
    pub metrics: &'a WorkerMetrics,
    /// The job's place in its trace: each call is a span of it, and sends the provider its own.
    pub trace: TraceParent,
}

impl Call<'_> {
    /// Whether text has reached the client, so that nothing may be retried.
    pub(super) fn has_streamed(&self) -> bool {
        self.relay.is_some_and(Relay::started)
    }

    /// The text streamed so far with its estimated tokens (its reasoning's among them), if any.
    pub(super) fn streamed(&self) -> Option<(String, TokenCounts)> {
        let relay = self.relay?;
        let (text, thinking) = (relay.text(), relay.thinking());
        if text.is_empty() && thinking.is_empty() {
            return None;
        }
        let estimate = tollgate_core::billing::estimate_tokens;
        let tokens = TokenCounts {
            prompt: estimate(&self.request.input_text()),
            completion: estimate(&(thinking.clone() + &text)),
            details: TokenDetails {
                reasoning: estimate(&thinking),
                ..TokenDetails::default()
            },
            estimated: true,
        };
        Some((text, tokens))
    }
}

/// Which calls a job's call waits among for a provider's slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// A single job: any of the provider's slots.
    Interactive,
    /// A batch's item: only the slots single jobs can spare (see [`crate::providers::Slot`]).
    Bulk,
}

/// What a job's error adds when its data policy kept it off the cloud.
pub(super) fn withheld(policy: DataPolicy) -> String {
    format!(
        "; the cloud was not considered: the data policy is {}",
        policy.as_str()
    )
}

/// A provider's failure as the job's (or its attempt's) error, with the provider's own body.
pub(super) fn job_error(error: &ProviderError) -> JobError {
    JobError {
        upstream: error.body.clone(),
        ..JobError::new(error.code.clone(), error.message.clone())
    }
}
