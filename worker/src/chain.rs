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
//! Every call becomes an [`AttemptRecord`]; the caller writes them with the run's end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tollgate_core::db::job_attempts::{AttemptOutcome, AttemptRecord};
use tollgate_core::db::runs::cancelled_error;
use tollgate_core::domain::{
    DataPolicy, JobError, JobRequest, JobStatus, LocalWait, ProviderName, RouteReason, TraceParent,
    WhenBusy,
};
use tollgate_core::provider::{Completion, FailureClass, Provider, ProviderError, TokenCounts};
use tollgate_core::telemetry;
use tracing::Instrument as _;

use crate::fleet::{HostState, NoSlot, SlotGuard, SlotLane};
use crate::metrics::WorkerMetrics;
use crate::providers::{Plan, Providers, Step, Target};
use crate::relay::Relay;
use crate::retry;

/// Longest a job waits for one of a provider's concurrency permits (or a host's slots) before
/// moving on, unless its route says less: a saturated provider is treated like a busy one, so a
/// run cannot outlive its lease waiting in line.
const PERMIT_WAIT: Duration = Duration::from_secs(30);

/// The code of a call that never went out because the provider's limit (or every host's slots)
/// stayed full: not a sign of ill health, so it neither feeds the circuit nor is retried on the
/// same provider, and a job that found only this waits for another run however many it had.
pub const BUSY: &str = "provider_busy";

/// The code of an upstream's 404 for a model it does not have.
const MODEL_NOT_FOUND: &str = "model_not_found";

/// The code of a call cut short by a cancel.
const CANCELLED: &str = "cancelled";

/// What one run asks of the chain.
pub struct Call<'a> {
    pub request: &'a JobRequest,
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
            prompt: tollgate_core::billing::estimate_tokens(&self.request.input_text()),
            completion: tollgate_core::billing::estimate_tokens(&text),
            estimated: true,
        };
        Some((text, tokens))
    }
}

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
                    routed_model: step.upstream_model.clone(),
                    latency: attempts.last().map_or(Duration::ZERO, |a| a.latency),
                    completion,
                };
            }
            Err(failure) => failure,
        };
        previous_busy = failure.code == BUSY;
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
                reason,
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
    end.unwrap_or_else(|| no_provider(plan, call))
}

fn no_provider(plan: &Plan, call: &Call<'_>) -> RunEnd {
    let settings = &plan.runtime.settings;
    let fallback = settings
        .ai_fallback_provider
        .map_or("none", |p| p.setting_name());
    let mut message = format!(
        "no provider is available for model {:?} (active: {}, fallback: {fallback}): \
         check that it is enabled, configured and has a route for the model",
        call.request.model().as_str(),
        settings.ai_provider.setting_name(),
    );
    if plan.route.withheld {
        message.push_str(&withheld(call.policy));
    }
    RunEnd::NoProvider { message }
}

/// What a job's error adds when its data policy kept it off the cloud.
fn withheld(policy: DataPolicy) -> String {
    format!(
        "; the cloud was not considered: the data policy is {}",
        policy.as_str()
    )
}

fn job_error(error: &ProviderError) -> JobError {
    JobError {
        code: error.code.into(),
        message: error.message.clone(),
    }
}

/// Calls one provider, retrying transient failures with backoff (honouring `Retry-After`) while
/// its circuit (a host's, for the fleet) allows; returns the last failure when it gives up on this
/// provider.
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
        let ready = ready(providers, plan, step, call).await?;
        let failure = match call_once(&ready, step, call, attempts).await {
            Ok(completion) => {
                ready.record(providers, true, plan);
                return Ok(completion);
            }
            Err(failure) => failure,
        };
        // A client error means the provider answered, so it is healthy.
        ready.record(providers, failure.class == FailureClass::Client, plan);
        if let Some(host) = &ready.host
            && failure.code == MODEL_NOT_FOUND
            && !call.has_streamed()
        {
            // The host lost the model since it was listed: another host may have it.
            providers.fleet().forget(host, &step.upstream_model);
            continue;
        }
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
            code = failure.code,
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

/// A call about to go out: the client to call, the host it is on (for the fleet), and the slot
/// or permits it holds until it is dropped.
struct Ready {
    provider: Provider,
    host: Option<Arc<HostState>>,
    _held: Held,
}

/// Held for the call's length, released when dropped.
enum Held {
    Permits {
        _bulk: Option<OwnedSemaphorePermit>,
        _any: OwnedSemaphorePermit,
    },
    Slot {
        _slot: SlotGuard,
    },
}

impl Ready {
    /// Feeds the call's verdict into the circuit of its provider or host.
    fn record(&self, providers: &Providers, healthy: bool, plan: &Plan) {
        let settings = &plan.runtime.settings;
        match &self.host {
            Some(host) => providers.fleet().record(host, healthy, &settings.circuit),
            None => providers.record_cloud(healthy, settings),
        }
    }
}

/// Waits for the step's call to be allowed out: OpenAI's circuit and one of this worker's permits
/// (a bulk call first takes one of the permits bulk calls may use, so the rest stay free for
/// single jobs), or a slot on a healthy host that has the model. A cancel ends the wait.
async fn ready(
    providers: &Providers,
    plan: &Plan,
    step: &Step,
    call: &Call<'_>,
) -> Result<Ready, ProviderError> {
    let settings = &plan.runtime.settings;
    let wait = match step.local_wait {
        LocalWait::Overflow(wait) => wait,
        LocalWait::Patient => PERMIT_WAIT,
    };
    match &step.target {
        Target::Cloud(cloud) => {
            if !providers.cloud_allows(settings) {
                return Err(circuit_open(step.name.as_str()));
            }
            let permits = async {
                let bulk = match call.lane {
                    Lane::Bulk => Some(cloud.bulk_limit.clone().acquire_owned().await?),
                    Lane::Interactive => None,
                };
                let any = cloud.limit.clone().acquire_owned().await?;
                Ok::<_, tokio::sync::AcquireError>((bulk, any))
            };
            let permits = tokio::select! {
                permits = tokio::time::timeout(wait, permits) => permits,
                () = call.cancel.cancelled() => return Err(cancelled()),
            };
            let Ok(Ok((bulk, any))) = permits else {
                return Err(busy(format!(
                    "{} has no free call slot (its concurrency limit is reached)",
                    step.name.as_str()
                )));
            };
            Ok(Ready {
                provider: cloud.provider.clone(),
                host: None,
                _held: Held::Permits {
                    _bulk: bulk,
                    _any: any,
                },
            })
        }
        Target::Fleet => {
            let fleet = providers.fleet();
            let model = &step.upstream_model;
            let serving = fleet.serving(model, &settings.circuit).await;
            if serving.ready.is_empty() {
                return Err(if serving.resting > 0 {
                    circuit_open("every Ollama host with this model")
                } else {
                    not_on_fleet(model, call.policy)
                });
            }
            let lane = match call.lane {
                Lane::Interactive => SlotLane::Any,
                Lane::Bulk => SlotLane::Bulk,
            };
            let slot = match fleet
                .take(model, &serving.ready, lane, wait, call.cancel)
                .await
            {
                Ok(slot) => slot,
                Err(NoSlot::Cancelled) => return Err(cancelled()),
                Err(NoSlot::Busy) => {
                    return Err(busy(format!(
                        "every slot of the Ollama hosts with {model:?} stayed busy for {} ms",
                        wait.as_millis()
                    )));
                }
                Err(NoSlot::Unavailable(error)) => {
                    return Err(ProviderError::new(
                        FailureClass::Transient,
                        "fleet_unavailable",
                        format!("the host slots cannot be read: {error}"),
                    ));
                }
            };
            let Some(host) = fleet.host(slot.host_id()) else {
                return Err(ProviderError::new(
                    FailureClass::Transient,
                    "host_removed",
                    "the host was removed from the fleet as its call was about to go out",
                ));
            };
            Ok(Ready {
                provider: host.client.clone(),
                host: Some(host),
                _held: Held::Slot { _slot: slot },
            })
        }
    }
}

fn busy(message: String) -> ProviderError {
    ProviderError::new(FailureClass::Transient, BUSY, message)
}

fn circuit_open(what: &str) -> ProviderError {
    ProviderError::new(
        FailureClass::Transient,
        "provider_circuit_open",
        format!("{what} is failing and rests until its cool-down ends"),
    )
}

/// No enabled host has the model installed: nothing local can serve it (a pull would fix it).
fn not_on_fleet(model: &str, policy: DataPolicy) -> ProviderError {
    let mut message = format!("no enabled Ollama host has the model {model:?} installed");
    if policy == DataPolicy::LocalOnly {
        message.push_str(&withheld(policy));
    }
    ProviderError::new(FailureClass::Provider, "no_provider_available", message)
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

/// One call on its way out (see [`ready`]), recorded as an attempt. A cancel aborts it.
async fn call_once(
    ready: &Ready,
    step: &Step,
    call: &Call<'_>,
    attempts: &mut Vec<AttemptRecord>,
) -> Result<Completion, ProviderError> {
    let request = call.request;
    let started_at = Utc::now();
    let clock = Instant::now();
    let provider = &ready.provider;
    let model = &step.upstream_model;
    let host = ready.host.as_ref().map(|h| h.host.name.clone());
    let in_flight = call.metrics.in_flight(step.name.as_str(), host.as_deref());
    let span = tracing::info_span!(
        "provider call",
        provider = step.name.as_str(),
        model = model.as_str(),
        host = host.as_deref().unwrap_or_default(),
    );
    let passed_on = telemetry::passed_on(&span, &call.trace);
    let mut first_piece = None;
    let answer = tokio::select! {
        answer = tollgate_core::provider::traced(passed_on, async {
            match call.relay {
                Some(relay) => {
                    let mut piece = |text: &str| {
                        first_piece.get_or_insert_with(|| clock.elapsed());
                        relay.piece(text)
                    };
                    provider.stream(request, model, &mut piece).await
                }
                None => provider.run(request, model).await,
            }
        }).instrument(span) => answer,
        () = call.cancel.cancelled() => Err(cancelled()),
    };
    let latency = clock.elapsed();
    drop(in_flight);
    if let Some(after) = first_piece {
        call.metrics.first_token(step.name.as_str(), model, after);
    }
    let record = match &answer {
        Ok(completion) => {
            let tokens = completion.token_counts(request);
            AttemptRecord {
                provider: step.name,
                host: host.clone(),
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
                host: host.clone(),
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
    call.metrics.call(&record);
    attempts.push(record);
    answer
}
