//! One run of a job down its provider chain: quick retries with backoff on a provider that fails
//! transiently, then the next provider; a client error ends the run at once. A call to the local
//! fleet first takes a slot on a healthy host that has the model (shared by every worker, waiting
//! at most as long as the route allows: under hybrid, the overflow wait); a step that was only
//! busy hands the job on as an overflow, or keeps it (a batch item its tenant keeps local). The run
//! records why the job went where it went.
//!
//! A streaming job's calls stream from the provider, their text relayed to the client as it comes
//! ([`Relay`]); once any text has gone, a failure ends the run (no retry, no fallback: the client
//! would see text twice). A cancel ends the run wherever it is, aborting the call in flight.
//!
//! A structured answer that does not match its format is asked for again on the same provider (at
//! once, up to `structured_output_attempts` calls), then the chain goes on as after any failure of
//! the provider's own: the next provider may do better; the job fails naming the first violation.
//!
//! Every call becomes an [`AttemptRecord`]; the caller writes them with the run's end.

mod call;
mod ready;
mod terms;

use std::time::Duration;

use tollgate_core::db::job_attempts::AttemptRecord;
use tollgate_core::domain::{
    FailureClass, JobError, JobErrorCode, JobStatus, ProviderName, RouteReason, WhenBusy,
};
use tollgate_core::provider::{Completion, ProviderError, TokenCounts};

use crate::providers::{Plan, Providers, Step};
use crate::retry;

use call::call_once;
use ready::{cancelled, ready};
pub use terms::{Call, Lane};
use terms::{job_error, withheld};

/// How a run ended.
pub enum RunEnd {
    Succeeded {
        provider: ProviderName,
        reason: RouteReason,
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
        reason: RouteReason,
        error: JobError,
        /// The text generated until then, its estimated tokens, and how long the call ran.
        partial: Option<(String, TokenCounts, Duration)>,
    },
}

/// Runs the call down `plan`, recording every provider call in `attempts`. A step that takes
/// the job only as an overflow is skipped when the job may not overflow (see [`WhenBusy`]).
pub async fn run(
    providers: &Providers,
    plan: &Plan,
    call: &Call<'_>,
    attempts: &mut Vec<AttemptRecord>,
) -> RunEnd {
    let mut end = None;
    let mut previous_busy = false;
    let mut previous: Option<ProviderName> = None;
    for (index, step) in plan.steps.iter().enumerate() {
        if previous_busy && step.when_busy == WhenBusy::Skip {
            continue;
        }
        if let Some(from) = previous {
            call.metrics
                .fell_back(from.as_str(), step.name.as_str(), previous_busy);
        }
        previous = Some(step.name);
        let reason = plan.route.reason(index, previous_busy);
        let failure = match on_provider(providers, plan, step, call, attempts).await {
            Ok(completion) => {
                return RunEnd::Succeeded {
                    provider: step.name,
                    reason,
                    routed_model: called_model(step, attempts),
                    latency: attempts.last().map_or(Duration::ZERO, |a| a.latency),
                    completion,
                };
            }
            Err(failure) => failure,
        };
        previous_busy = failure.code == JobErrorCode::ProviderBusy;
        let provider = Some((step.name, called_model(step, attempts)));
        let error = job_error(&failure);
        let status = if failure.code == JobErrorCode::Cancelled {
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
                reason,
                error,
                partial,
            };
        }
        // A refusal of what the model cannot do there is the provider's, not the request's: the
        // next step may serve it.
        let class = match failure.lacks {
            Some(_) => FailureClass::Provider,
            None => failure.class(),
        };
        match class {
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
    end.unwrap_or_else(|| no_provider(plan, call))
}

fn no_provider(plan: &Plan, call: &Call<'_>) -> RunEnd {
    let settings = &plan.runtime.settings;
    let fallback = settings
        .ai_fallback_provider
        .map_or("none", ProviderName::as_str);
    let mut message = format!(
        "no provider is available for model {:?} (active: {}, fallback: {fallback}): \
         check that it is enabled, configured and has a route for the model",
        call.request.model().as_str(),
        settings.ai_provider.setting_name(),
    );
    if plan.route.withheld {
        message.push_str(&withheld(call.policy));
    }
    if let Some(unserved) = plan.route.unserved {
        message.push_str(&format!(" (reason: {})", unserved.as_str()));
    }
    RunEnd::NoProvider { message }
}

/// Calls one provider, retrying transient failures with backoff (honouring `Retry-After`) while
/// its circuit (a host's, for the fleet) allows — on the fleet, on another host than those that
/// just failed when another can serve; returns the last failure when it gives up on this provider.
async fn on_provider(
    providers: &Providers,
    plan: &Plan,
    step: &Step,
    call: &Call<'_>,
    attempts: &mut Vec<AttemptRecord>,
) -> Result<Completion, ProviderError> {
    let settings = &plan.runtime.settings;
    let mut backoff = retry::call_backoff(&settings.retry);
    let mut unmatched = 0;
    let mut failed_hosts = Vec::new();
    loop {
        let ready = ready(providers, plan, step, call, &failed_hosts).await?;
        let failure = match call_once(&ready, step, call, attempts).await {
            Ok(completion) => {
                ready.record(providers, true, plan);
                return Ok(completion);
            }
            Err(failure) => failure,
        };
        if failure.code == JobErrorCode::InvalidStructuredOutput {
            // The provider answered: it is healthy, its answer was not what was asked for.
            ready.record(providers, true, plan);
            unmatched += 1;
            if unmatched >= settings.retry.structured_output_attempts || call.has_streamed() {
                return Err(failure);
            }
            tracing::debug!(
                provider = step.name.as_str(),
                "answer unmatched; asking again"
            );
            call.metrics.retried(step.name.as_str());
            continue;
        }
        // A client error means the provider answered, so it is healthy.
        ready.record(providers, failure.class() == FailureClass::Client, plan);
        if let Some(host) = &ready.host
            && failure.code == JobErrorCode::ModelNotFound
            && !call.has_streamed()
        {
            // The host lost the model since it was listed: another host may have it.
            providers.fleet().forget(host, &ready.model);
            continue;
        }
        if let Some(host) = &ready.host
            && let Some(lacking) = failure.lacks
            && !call.has_streamed()
        {
            // The host's server cannot do it (started without tool calling): another host may,
            // or else the next provider.
            providers.fleet().refused(host, &ready.model, lacking);
            continue;
        }
        if let Some(cloud) = &ready.cloud
            && let Some(lacking) = failure.lacks
        {
            // The account's server cannot do it: the next provider may.
            cloud.refused(&ready.model, lacking);
        }
        failed_hosts.extend(ready.host.as_ref().map(|host| host.host.id));
        drop(ready);
        if !failure.is_transient() || call.has_streamed() {
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
            code = failure.code.as_str(),
            ?wait,
            "retrying"
        );
        call.metrics.retried(step.name.as_str());
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = call.cancel.cancelled() => return Err(cancelled()),
        }
    }
}

/// The upstream model `step` last called (on the fleet, its host's kind's), or the one it is known
/// by when it made no call.
fn called_model(step: &Step, attempts: &[AttemptRecord]) -> String {
    attempts
        .last()
        .filter(|attempt| attempt.provider == step.name)
        .map_or_else(
            || step.upstream_model.clone(),
            |attempt| attempt.upstream_model.clone(),
        )
}
