//! One run of a job down its provider chain: quick retries with backoff on a provider that fails
//! transiently, then the next provider; a client error ends the run at once.
//!
//! Every call becomes an [`AttemptRecord`]; the caller writes them with the run's end.

use std::time::{Duration, Instant};

use chrono::Utc;
use shared::db::job_attempts::{AttemptOutcome, AttemptRecord};
use shared::domain::{JobError, JobRequest, ProviderName};
use shared::provider::{Completion, FailureClass, ProviderError};

use crate::providers::{Plan, Providers, Step};
use crate::retry;

/// Longest a job waits for one of a provider's concurrency permits before moving on: a saturated
/// provider is treated like a busy one, so a run cannot outlive its lease waiting in line.
const PERMIT_WAIT: Duration = Duration::from_secs(30);

/// The code of a call that never went out because the provider's limit stayed full: not a sign of
/// ill health, so it neither feeds the circuit nor is retried on the same provider.
const BUSY: &str = "provider_busy";

/// How a run ended.
pub enum RunEnd {
    Succeeded {
        provider: ProviderName,
        /// The upstream model the route asked for: what the call is priced by (a provider may
        /// answer with a dated snapshot name).
        routed_model: String,
        completion: Completion,
        /// How long the answering call took.
        latency: Duration,
    },
    /// No provider will do better: a client error, or every provider failed for reasons of its
    /// own (bad key, broken answer).
    Failed {
        provider: Option<(ProviderName, String)>,
        error: JobError,
    },
    /// Every provider failed transiently (or was circuit-broken or busy): worth another run later.
    Transient {
        provider: Option<(ProviderName, String)>,
        error: JobError,
        retry_after: Option<Duration>,
    },
    /// Nothing in the chain: no provider is enabled, configured and routed for the model.
    NoProvider { message: String },
}

/// Runs `request` down `plan`, recording every call in `attempts`.
pub async fn run(
    providers: &Providers,
    plan: &Plan,
    request: &JobRequest,
    lane: Lane,
    attempts: &mut Vec<AttemptRecord>,
) -> RunEnd {
    let mut end = None;
    for step in &plan.steps {
        let failure = match on_provider(providers, plan, step, request, lane, attempts).await {
            Ok(completion) => {
                return RunEnd::Succeeded {
                    provider: step.name,
                    routed_model: step.upstream_model.clone(),
                    latency: attempts.last().map_or(Duration::ZERO, |a| a.latency),
                    completion,
                };
            }
            Err(failure) => failure,
        };
        let provider = Some((step.name, step.upstream_model.clone()));
        let error = job_error(&failure);
        match failure.class {
            FailureClass::Client => return RunEnd::Failed { provider, error },
            FailureClass::Transient => {
                end = Some(RunEnd::Transient {
                    provider,
                    error,
                    retry_after: failure.retry_after,
                });
            }
            // A transient failure elsewhere in the chain still deserves a later run.
            FailureClass::Provider if !matches!(end, Some(RunEnd::Transient { .. })) => {
                end = Some(RunEnd::Failed { provider, error });
            }
            FailureClass::Provider => {}
        }
    }
    end.unwrap_or_else(|| no_provider(plan, request))
}

fn no_provider(plan: &Plan, request: &JobRequest) -> RunEnd {
    let settings = &plan.runtime.settings;
    let fallback = settings
        .ai_fallback_provider
        .map_or("none", |p| p.setting_name());
    let message = format!(
        "no provider is available for model {:?} (active: {}, fallback: {fallback}): \
         check that it is enabled, configured and has a route for the model",
        request.model().as_str(),
        settings.ai_provider.setting_name(),
    );
    RunEnd::NoProvider { message }
}

fn job_error(error: &ProviderError) -> JobError {
    JobError {
        code: error.code.into(),
        message: error.message.clone(),
    }
}

/// Calls one provider, retrying transient failures with backoff (honouring `Retry-After`) while
/// its circuit allows; returns the last failure when it gives up on this provider.
async fn on_provider(
    providers: &Providers,
    plan: &Plan,
    step: &Step,
    request: &JobRequest,
    lane: Lane,
    attempts: &mut Vec<AttemptRecord>,
) -> Result<Completion, ProviderError> {
    let settings = &plan.runtime.settings;
    let mut backoff = retry::call_backoff(&settings.retry);
    loop {
        if !providers.allows(step.name, settings) {
            return Err(ProviderError::new(
                FailureClass::Transient,
                "provider_circuit_open",
                format!(
                    "{} is failing and rests until its cool-down ends",
                    step.name.as_str()
                ),
            ));
        }
        let failure = match call(step, request, lane, attempts).await {
            Ok(completion) => {
                providers.record(step.name, true, settings);
                return Ok(completion);
            }
            Err(failure) => failure,
        };
        if failure.code != BUSY {
            // A client error means the provider answered, so it is healthy.
            let healthy = failure.class == FailureClass::Client;
            providers.record(step.name, healthy, settings);
        }
        if !failure.is_transient() || failure.code == BUSY {
            return Err(failure);
        }
        let wait = backoff
            .next()
            .and_then(|delay| retry::before_next_call(delay, failure.retry_after));
        let Some(wait) = wait else {
            return Err(failure);
        };
        tracing::debug!(
            provider = step.name.as_str(),
            code = failure.code,
            ?wait,
            "retrying"
        );
        tokio::time::sleep(wait).await;
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

/// One call under the provider's concurrency limit, recorded as an attempt. A bulk call first
/// takes one of the slots bulk calls may use, so the rest stay free for single jobs.
async fn call(
    step: &Step,
    request: &JobRequest,
    lane: Lane,
    attempts: &mut Vec<AttemptRecord>,
) -> Result<Completion, ProviderError> {
    let permits = async {
        let bulk = match lane {
            Lane::Bulk => Some(step.slot.bulk_limit.clone().acquire_owned().await?),
            Lane::Interactive => None,
        };
        let any = step.slot.limit.clone().acquire_owned().await?;
        Ok::<_, tokio::sync::AcquireError>((bulk, any))
    };
    let permit = tokio::time::timeout(PERMIT_WAIT, permits).await;
    let Ok(Ok(_permits)) = permit else {
        return Err(ProviderError::new(
            FailureClass::Transient,
            BUSY,
            format!(
                "{} has no free call slot (its concurrency limit is reached)",
                step.name.as_str()
            ),
        ));
    };
    let started_at = Utc::now();
    let clock = Instant::now();
    let answer = step.slot.provider.run(request, &step.upstream_model).await;
    let latency = clock.elapsed();
    let record = match &answer {
        Ok(completion) => {
            let tokens = completion.token_counts(request);
            AttemptRecord {
                provider: step.name,
                upstream_model: step.upstream_model.clone(),
                started_at,
                latency,
                status_code: Some(completion.status_code),
                outcome: AttemptOutcome::Succeeded,
                error: None,
                prompt_tokens: Some(tokens.prompt),
                completion_tokens: Some(tokens.completion),
                cost: None,
            }
        }
        Err(failure) => {
            tracing::info!(
                provider = step.name.as_str(),
                code = failure.code,
                "provider call failed"
            );
            AttemptRecord {
                provider: step.name,
                upstream_model: step.upstream_model.clone(),
                started_at,
                latency,
                status_code: failure.status_code,
                outcome: match failure.class {
                    FailureClass::Transient => AttemptOutcome::TransientError,
                    FailureClass::Provider | FailureClass::Client => AttemptOutcome::PermanentError,
                },
                error: Some(job_error(failure)),
                prompt_tokens: None,
                completion_tokens: None,
                cost: None,
            }
        }
    };
    attempts.push(record);
    answer
}
