//! One run of a job down its provider chain: quick retries with backoff on a provider that fails
//! transiently, then the next provider; a client error ends the run at once.
//!
//! A streaming job's calls stream from the provider, their text relayed to the client as it comes
//! ([`Relay`]); once any text has gone, a failure ends the run (no retry, no fallback: the client
//! would see text twice). A cancel ends the run wherever it is, aborting the call in flight.
//!
//! Every call becomes an [`AttemptRecord`]; the caller writes them with the run's end.

use std::time::{Duration, Instant};

use chrono::Utc;
use shared::db::job_attempts::{AttemptOutcome, AttemptRecord};
use shared::db::runs::cancelled_error;
use shared::domain::{JobError, JobRequest, JobStatus, ProviderName};
use shared::provider::{Completion, FailureClass, ProviderError, TokenCounts};
use tokio_util::sync::CancellationToken;

use crate::providers::{Plan, Providers, Step};
use crate::relay::Relay;
use crate::retry;

/// Longest a job waits for one of a provider's concurrency permits before moving on: a saturated
/// provider is treated like a busy one, so a run cannot outlive its lease waiting in line.
const PERMIT_WAIT: Duration = Duration::from_secs(30);

/// The code of a call that never went out because the provider's limit stayed full: not a sign of
/// ill health, so it neither feeds the circuit nor is retried on the same provider.
const BUSY: &str = "provider_busy";

/// The code of a call cut short by a cancel.
const CANCELLED: &str = "cancelled";

/// What one run asks of the chain.
pub struct Call<'a> {
    pub request: &'a JobRequest,
    pub lane: Lane,
    /// A streaming job's relay to its client.
    pub relay: Option<&'a Relay>,
    /// Cancelled when the job is.
    pub cancel: &'a CancellationToken,
}

impl Call<'_> {
    /// Whether text has reached the client, so that nothing may be retried.
    fn has_streamed(&self) -> bool {
        self.relay.is_some_and(Relay::started)
    }

    /// The text streamed so far with its estimated tokens, if any.
    fn streamed(&self) -> Option<(String, TokenCounts)> {
        let text = self.relay?.text();
        if text.is_empty() {
            return None;
        }
        let tokens = TokenCounts {
            prompt: shared::billing::estimate_tokens(&self.request.input_text()),
            completion: shared::billing::estimate_tokens(&text),
            estimated: true,
        };
        Some((text, tokens))
    }
}

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
    /// Stopped early, with nothing retried: `cancelled`, or `failed` after text had streamed.
    Stopped {
        status: JobStatus,
        provider: Option<(ProviderName, String)>,
        error: JobError,
        /// The text generated until then, its estimated tokens, and how long the call ran.
        partial: Option<(String, TokenCounts, Duration)>,
    },
}

/// Runs the call down `plan`, recording every provider call in `attempts`.
pub async fn run(
    providers: &Providers,
    plan: &Plan,
    call: &Call<'_>,
    attempts: &mut Vec<AttemptRecord>,
) -> RunEnd {
    let request = call.request;
    let mut end = None;
    for step in &plan.steps {
        let failure = match on_provider(providers, plan, step, call, attempts).await {
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
        let status = if failure.code == CANCELLED {
            Some(JobStatus::Cancelled)
        } else {
            call.has_streamed().then_some(JobStatus::Failed)
        };
        if let Some(status) = status {
            let latency = attempts.last().map_or(Duration::ZERO, |a| a.latency);
            let partial = call
                .streamed()
                .map(|(text, tokens)| (text, tokens, latency));
            return RunEnd::Stopped {
                status,
                provider,
                error,
                partial,
            };
        }
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
    call: &Call<'_>,
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
        let failure = match call_once(step, call, attempts).await {
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
        if !failure.is_transient() || failure.code == BUSY || call.has_streamed() {
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
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = call.cancel.cancelled() => return Err(cancelled()),
        }
    }
}

fn cancelled() -> ProviderError {
    let error = cancelled_error();
    ProviderError::new(FailureClass::Client, CANCELLED, error.message)
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
/// takes one of the slots bulk calls may use, so the rest stay free for single jobs. A cancel
/// aborts it, waiting or in flight.
async fn call_once(
    step: &Step,
    call: &Call<'_>,
    attempts: &mut Vec<AttemptRecord>,
) -> Result<Completion, ProviderError> {
    let request = call.request;
    let permits = async {
        let bulk = match call.lane {
            Lane::Bulk => Some(step.slot.bulk_limit.clone().acquire_owned().await?),
            Lane::Interactive => None,
        };
        let any = step.slot.limit.clone().acquire_owned().await?;
        Ok::<_, tokio::sync::AcquireError>((bulk, any))
    };
    let permit = tokio::select! {
        permit = tokio::time::timeout(PERMIT_WAIT, permits) => permit,
        () = call.cancel.cancelled() => return Err(cancelled()),
    };
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
    let provider = &step.slot.provider;
    let model = &step.upstream_model;
    let answer = tokio::select! {
        answer = async {
            match call.relay {
                Some(relay) => provider.stream(request, model, &mut |piece| relay.piece(piece)).await,
                None => provider.run(request, model).await,
            }
        } => answer,
        () = call.cancel.cancelled() => Err(cancelled()),
    };
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
            // A call cut short after streaming text is billed for that text (estimated).
            let tokens = call.streamed().map(|(_, tokens)| tokens);
            AttemptRecord {
                provider: step.name,
                upstream_model: step.upstream_model.clone(),
                started_at,
                latency,
                status_code: failure.status_code,
                outcome: match failure.class {
                    _ if failure.code == CANCELLED => AttemptOutcome::Cancelled,
                    FailureClass::Transient => AttemptOutcome::TransientError,
                    FailureClass::Provider | FailureClass::Client => AttemptOutcome::PermanentError,
                },
                error: Some(job_error(failure)),
                prompt_tokens: tokens.map(|t| t.prompt),
                completion_tokens: tokens.map(|t| t.completion),
                cost: None,
            }
        }
    };
    attempts.push(record);
    answer
}
