//! Estimated attempts for the runs of a job that never recorded their end: their worker died
//! mid-call (or lost its claim to a redelivery), so the provider answered, and was paid, with no
//! attempt row to say so. The run that next records the job's end writes one for each, in the
//! statement it writes anyway (nothing is added to a job's happy path), so the operator's spend
//! counts them, marked as estimated.
//!
//! What such a run called is not known; the estimate says it called what this run called first
//! (else the first provider of the job's chain), sent the job's input (tokens counted by the
//! tokenizer) and, when this run was answered, got as long an answer.

use chrono::Utc;
use tollgate_core::billing::estimate_tokens;
use tollgate_core::db::job_attempts::{AttemptOutcome, AttemptRecord};
use tollgate_core::db::runs::{ClaimedJob, Outcome};
use tollgate_core::domain::{JobError, JobErrorCode, ProviderName};
use tollgate_core::provider::TokenDetails;

use crate::providers::Plan;

/// One estimated attempt per unrecorded abandoned run of `job`, to go before this run's
/// `attempts`; none when there is no provider to attribute them to.
pub fn estimates(
    job: &ClaimedJob,
    plan: &Plan,
    attempts: &[AttemptRecord],
    outcome: &Outcome,
) -> Vec<AttemptRecord> {
    let runs = usize::try_from(job.unrecorded_abandoned_runs()).unwrap_or(0);
    if runs == 0 {
        return Vec::new();
    }
    let called: Option<(ProviderName, String)> = attempts
        .first()
        .map(|a| (a.provider, a.upstream_model.clone()))
        .or_else(|| {
            plan.steps
                .first()
                .map(|step| (step.name, step.upstream_model.clone()))
        });
    let Some((provider, upstream_model)) = called else {
        return Vec::new();
    };
    let completion = match outcome {
        Outcome::Succeeded { tokens, .. } => tokens.completion,
        _ => 0,
    };
    let estimate = AttemptRecord {
        provider,
        // Which host an abandoned call was on is not known.
        host: None,
        upstream_model,
        started_at: Utc::now(),
        latency: std::time::Duration::ZERO,
        status_code: None,
        outcome: AttemptOutcome::Abandoned,
        error: Some(JobError::new(
            JobErrorCode::AbandonedRun,
            "the worker stopped before recording this call; its tokens are estimated",
        )),
        prompt_tokens: Some(estimate_tokens(&job.request.input_text())),
        completion_tokens: Some(completion),
        details: TokenDetails::default(),
        cost: None,
    };
    vec![estimate; runs]
}
