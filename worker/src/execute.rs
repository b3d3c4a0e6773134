//! One delivery, start to finish: claim the job, run it down its provider chain, record how the
//! run ended (finished, or parked for a delayed retry), and only then ack.
//!
//! The ack comes last: a worker that dies anywhere before it leaves the message to be
//! redelivered, and the conditional claim and finish in `tollgate_core::db::runs` make the redelivery
//! run the job at most once more and record it exactly once.

use std::future::Future;
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable as _};
use chrono::Utc;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use tokio::sync::SemaphorePermit;
use tokio_util::sync::CancellationToken;
use tollgate_core::billing;
use tollgate_core::db::job_attempts::{AttemptOutcome, AttemptRecord};
use tollgate_core::db::jobs;
use tollgate_core::db::runs::{self, ClaimedJob, Outcome, Partial, Recorded};
use tollgate_core::domain::{
    JobError, JobId, JobRequest, JobStatus, ProviderName, RouteInput, Runtime, TraceParent,
};
use tollgate_core::queue::{JobEvent, JobMessage, Versioned as _, Work, traceparent_of};
use tollgate_core::telemetry;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::chain::{self, Call, Lane, RunEnd};
use crate::relay::Relay;
use crate::{Context, Plan, abandoned, retry};

/// Handles one delivery from `lane`'s queue. A single job is marked running for its whole
/// handling, and a batch item's claim and outcome wait their turn while single jobs run (see
/// [`crate::priority`]).
pub async fn handle(context: &Context, delivery: &Delivery, lane: Lane) {
    let _single = (lane == Lane::Interactive).then(|| context.priority.single());
    let Some(message) = JobMessage::decode(&delivery.data) else {
        tracing::error!("undecodable message; dead-lettering it");
        // requeue: false sends it to the dead-letter exchange.
        let _ = delivery
            .acker
            .reject(BasicRejectOptions { requeue: false })
            .await;
        return;
    };
    // The job's span continues the trace its message carries, set before the span starts (a
    // started span keeps its trace). A message without one (a dead letter an operator requeued)
    // continues the trace its row holds for the logs and the provider; its exported spans start a
    // trace of their own.
    let span = tracing::info_span!(
        "job",
        job_id = %message.job_id,
        trace_id = tracing::field::Empty,
        redelivered = delivery.redelivered,
    );
    let carried = traceparent_of(&delivery.properties);
    let trace = carried.map(|parent| telemetry::continue_trace(&span, Some(&parent)));
    run(context, delivery, lane, &message, carried, trace)
        .instrument(span)
        .await;
}

/// Claims the message's job and, if it is this delivery's to run, runs it; acks last.
async fn run(
    context: &Context,
    delivery: &Delivery,
    lane: Lane,
    message: &JobMessage,
    carried: Option<TraceParent>,
    trace: Option<TraceParent>,
) {
    let claim_id = Uuid::now_v7();
    let turn = bulk_turn(context, lane).await;
    let claim = persistently(context, "claim", || {
        runs::claim(
            &context.pool,
            message.job_id,
            claim_id,
            delivery.redelivered,
            context.settings.lease,
        )
    })
    .instrument(tracing::info_span!("claim"))
    .await;
    drop(turn);
    let claim = match claim {
        Ok(claim) => claim,
        Err(halt) => return halt.give_up(delivery).await,
    };
    if let Some(job) = claim {
        let parent = carried.or(job.traceparent);
        let trace = trace.unwrap_or_else(|| {
            telemetry::continue_trace(&tracing::Span::current(), parent.as_ref())
        });
        if job.claims == 1 && job.retries == 0 {
            let kind = job.request.kind().as_str();
            let waited = job.id.age();
            context.metrics.claimed(kind, job.bulk, waited);
            if let Some(accepted) = parent {
                let now = SystemTime::now();
                telemetry::record_interval("queue wait", &accepted, now - waited, now);
            }
        }
        if !job.bulk {
            let running = JobEvent::new(job.id, job.revision, JobStatus::Running);
            context.broker.publish_event(running).await;
        }
        if let Err(halt) = work(context, &job, claim_id, trace).await {
            return halt.give_up(delivery).await;
        }
    } else {
        tracing::debug!("duplicate, early or finished job; acking without work");
    }
    if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
        // The outcome is committed; a redelivery will find the job finished and be acked unworked.
        tracing::warn!(%error, "ack failed");
    }
}

/// Runs the claimed job down its provider chain and records how the run ended: finished, or
/// parked for a delayed run when every provider failed transiently and attempts remain. A
/// streaming job's text is relayed as it comes, and the end of its stream sent once the end is
/// committed.
async fn work(
    context: &Context,
    job: &ClaimedJob,
    claim_id: Uuid,
    trace: TraceParent,
) -> Result<(), Halt> {
    let route = RouteInput {
        policy: job.data_policy,
        bulk: job.bulk,
        batch_overflow: job.batch_overflow,
        share_draw: share_draw(job.id),
    };
    let plan = context
        .providers
        .plan(job.request.model().as_str(), route)
        .await;
    let relay = job
        .stream
        .then(|| Relay::start(context.broker.clone(), job.id, job.stream_to.clone()));
    let mut attempts = Vec::new();
    let mut verdict = match ended_before_running(context, job) {
        Some(outcome) => Verdict::Finish(outcome),
        None => {
            let call = RunCall {
                job,
                claim_id,
                trace,
                plan: &plan,
                relay: relay.as_ref(),
            };
            call_chain(context, call, &mut attempts).await
        }
    };
    let Some(recorded) = record(context, job, claim_id, &plan, &mut verdict, &mut attempts).await?
    else {
        tracing::warn!("the job was reclaimed by another worker; result dropped");
        return Ok(());
    };
    count(context, job, &verdict, &attempts);
    tell(context, job, recorded, verdict, relay.as_ref()).await;
    Ok(())
}

/// What one run down the chain needs besides the worker's context.
struct RunCall<'a> {
    job: &'a ClaimedJob,
    claim_id: Uuid,
    trace: TraceParent,
    plan: &'a Plan,
    relay: Option<&'a Relay>,
}

/// Runs the job down its plan's chain (keeping its lease meanwhile, and stopped by a cancel) and
/// decides what the run's end means for the job.
async fn call_chain(
    context: &Context,
    run: RunCall<'_>,
    attempts: &mut Vec<AttemptRecord>,
) -> Verdict {
    let job = run.job;
    let registered = context.cancels.register(job.id);
    let call = Call {
        request: &job.request,
        policy: job.data_policy,
        lane: lane_of(job),
        relay: run.relay,
        cancel: &registered.token,
        metrics: &context.metrics,
        trace: run.trace,
    };
    let chain = chain::run(&context.providers, run.plan, &call, attempts);
    let end = tokio::select! {
        biased;
        end = chain => end,
        never = keep_lease(context, job.id, run.claim_id, &registered.token) => match never {},
    };
    decide(
        end,
        &job.request,
        job.retries,
        run.plan.runtime.settings.retry.max_job_attempts,
    )
}

/// Writes the run's end — the job finished or parked, with its attempts (estimates for abandoned
/// runs first) priced — once the database takes it; `None` when the claim was lost meanwhile.
async fn record(
    context: &Context,
    job: &ClaimedJob,
    claim_id: Uuid,
    plan: &Plan,
    verdict: &mut Verdict,
    attempts: &mut Vec<AttemptRecord>,
) -> Result<Option<Recorded>, Halt> {
    let outcome = match &*verdict {
        Verdict::Finish(outcome) => Some(outcome),
        Verdict::Park { .. } => None,
    };
    let estimated = abandoned::estimates(job, plan, attempts, outcome);
    attempts.splice(0..0, estimated);
    price_run(&context.providers.runtime(), verdict, attempts);
    let _turn = bulk_turn(context, lane_of(job)).await;
    let attempts = &*attempts;
    match &*verdict {
        Verdict::Park { error, delay } => {
            persistently(context, "park", || {
                runs::park(&context.pool, job.id, claim_id, error, *delay, attempts)
            })
            .await
        }
        Verdict::Finish(outcome) => {
            persistently(context, "finish", || {
                runs::finish(
                    &context.pool,
                    job.id,
                    claim_id,
                    outcome,
                    attempts,
                    job.data_policy,
                )
            })
            .instrument(tracing::info_span!("finish"))
            .await
        }
    }
}

/// Tells of a recorded end: the streaming client's text closed, the job's event (or a batch item's
/// webhook delivery) sent, and a parked job's message published to its delay queue.
async fn tell(
    context: &Context,
    job: &ClaimedJob,
    recorded: Recorded,
    verdict: Verdict,
    relay: Option<&Relay>,
) {
    let status = match &verdict {
        Verdict::Park { .. } => JobStatus::Retrying,
        Verdict::Finish(outcome) => outcome.status(),
    };
    if let Some(relay) = relay
        && status.is_terminal()
    {
        relay.end(status).await;
    }
    if job.bulk {
        // Nobody waits on a batch item's own events: the batch's progress and a job stream
        // following an item read the database. Broadcasting hundreds a second to every api
        // instance would cost the machine CPU for nothing.
        deliver(context, recorded.delivery).await;
    } else {
        announce(context, job.id, recorded, status).await;
    }
    if let Verdict::Park { error, delay } = verdict {
        tracing::info!(
            code = error.code,
            ?delay,
            "every provider failed transiently; retrying later"
        );
        // Parked and committed: if this publish fails, the sweeper sends the job once it is due.
        match context
            .broker
            .publish_delayed(Work::new(job.id, job.traceparent), delay, job.bulk)
            .await
        {
            Ok(()) => {
                if let Err(error) = jobs::mark_published(&context.pool, &[job.id]).await {
                    tracing::warn!(%error, "cannot mark the delayed message published");
                }
            }
            Err(error) => tracing::warn!(%error, "delayed publish failed; the sweeper will resend"),
        }
    }
}

/// Counts a recorded run in the metrics: what its calls consumed and, when it ended the job, how.
fn count(context: &Context, job: &ClaimedJob, verdict: &Verdict, attempts: &[AttemptRecord]) {
    let metrics = &context.metrics;
    metrics.billed(attempts);
    let Verdict::Finish(outcome) = verdict else {
        return;
    };
    let provider = match outcome {
        Outcome::Succeeded { provider, .. } => Some(*provider),
        Outcome::Failed { provider, .. } | Outcome::Stopped { provider, .. } => *provider,
    };
    // A job that waited for a delayed retry spent that wait by design: only a first run's end
    // says what the gateway added.
    let first_run = job.claims == 1 && job.retries == 0;
    let called: Duration = attempts
        .iter()
        .filter(|a| a.outcome != AttemptOutcome::Abandoned)
        .map(|a| a.latency)
        .sum();
    metrics.finished(&crate::metrics::Finished {
        kind: job.request.kind().as_str(),
        bulk: job.bulk,
        status: outcome.status().as_str(),
        provider: provider.map(ProviderName::as_str),
        model: job.request.model().as_str(),
        overhead: first_run.then(|| job.id.age().saturating_sub(called)),
    });
}

/// The end of a job that must not run: asked to stop before this claim, abandoned too often, or a
/// streaming job whose earlier run died after its text may have reached the client (running it
/// again could show the client text twice; the client gets an error instead).
fn ended_before_running(context: &Context, job: &ClaimedJob) -> Option<Outcome> {
    if job.cancel_requested {
        return Some(Outcome::cancelled());
    }
    if job.abandoned_runs() > context.settings.max_claims {
        let message = format!(
            "the job was abandoned by {} workers in a row",
            job.abandoned_runs() - 1
        );
        return Some(Outcome::failed_without_call("internal_error", message));
    }
    if job.stream && job.abandoned_runs() > 1 {
        return Some(Outcome::failed_without_call(
            "stream_interrupted",
            "the worker streaming this job stopped mid-run; part of its text may have reached the \
             client, so it is not run again",
        ));
    }
    None
}

/// The job's draw for `ai_local_share`, 0–99: from the random bits of its id, so every run of the
/// job draws the same.
fn share_draw(id: JobId) -> u8 {
    // The low 62 bits of a UUIDv7 are random (above them sit the variant bits).
    let random = id.0.as_u128() & ((1 << 62) - 1);
    u8::try_from(random % 100).unwrap_or(0)
}

fn lane_of(job: &ClaimedJob) -> Lane {
    if job.bulk {
        Lane::Bulk
    } else {
        Lane::Interactive
    }
}

/// A batch item's turn at its database work while single jobs run here; nothing to wait for on a
/// single job's lane.
async fn bulk_turn(context: &Context, lane: Lane) -> Option<SemaphorePermit<'_>> {
    match lane {
        Lane::Bulk => context.priority.bulk_turn().await,
        Lane::Interactive => None,
    }
}

/// Tells watchers the job changed and hands its webhook delivery, if the terminal statement wrote
/// one, to the deliverer. Both happen after the commit; a delivery whose publish fails is still a
/// pending row, which the sweeper sends.
pub(crate) async fn announce(context: &Context, id: JobId, recorded: Recorded, status: JobStatus) {
    let event = JobEvent::new(id, recorded.revision, status);
    context.broker.publish_event(event).await;
    deliver(context, recorded.delivery).await;
}

/// Hands the webhook delivery a terminal statement wrote, if any, to the deliverer.
async fn deliver(context: &Context, delivery: Option<Uuid>) {
    if let Some(delivery) = delivery
        && let Err(error) = context.broker.publish_webhooks(&[delivery]).await
    {
        tracing::warn!(%error, "webhook publish failed; the sweeper will resend");
    }
}

/// Renews the claim's lease every third of it while the run goes on (quick retries and fallbacks
/// can outlast one provider call), so the sweeper never hands a live run to another worker; a
/// cancel found on the job then (its message missed) cancels the run.
async fn keep_lease(
    context: &Context,
    id: JobId,
    claim_id: Uuid,
    cancel: &CancellationToken,
) -> std::convert::Infallible {
    let lease = context.settings.lease;
    loop {
        tokio::time::sleep(lease / 3).await;
        match runs::extend_lease(&context.pool, id, claim_id, lease).await {
            Ok(true) => cancel.cancel(),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "cannot renew the lease"),
        }
    }
}

/// Prices the run at the prices in force now, from the in-memory price list (no query): the
/// answer's bill, and every call that reported tokens (the gateway's spend, failed calls
/// included).
fn price_run(runtime: &Runtime, verdict: &mut Verdict, attempts: &mut [AttemptRecord]) {
    let now = Utc::now();
    for attempt in attempts.iter_mut() {
        if attempt.prompt_tokens.is_none() && attempt.completion_tokens.is_none() {
            continue;
        }
        if let Some(price) = runtime
            .prices
            .at(attempt.provider, &attempt.upstream_model, now)
        {
            let tokens = |t: Option<i32>| i64::from(t.unwrap_or(0));
            attempt.cost = Some(billing::cost(
                tokens(attempt.prompt_tokens),
                tokens(attempt.completion_tokens),
                &price,
            ));
        }
    }
    match verdict {
        Verdict::Finish(Outcome::Succeeded {
            provider,
            routed_model,
            price,
            ..
        }) => *price = runtime.prices.at(*provider, routed_model, now),
        Verdict::Finish(Outcome::Stopped {
            provider: Some(provider),
            partial: Some(partial),
            ..
        }) => partial.price = runtime.prices.at(*provider, &partial.routed_model, now),
        _ => {}
    }
}

/// What a run decided for the job.
enum Verdict {
    /// It ends now.
    Finish(Outcome),
    /// It waits `delay` in a delay queue for another run; `error` says why meanwhile.
    Park { error: JobError, delay: Duration },
}

/// What a run's end means for a job that had `retries` delayed runs before: its outcome, or
/// another run after a delay when every provider failed transiently and runs are left
/// (`max_runs` in all).
fn decide(end: RunEnd, request: &JobRequest, retries: i32, max_runs: u32) -> Verdict {
    let failed = |provider: Option<(ProviderName, String)>, error| {
        let (provider, upstream_model) = provider.unzip();
        Verdict::Finish(Outcome::Failed {
            provider,
            upstream_model,
            error,
        })
    };
    match end {
        // The job shows the model the provider says answered.
        RunEnd::Succeeded {
            provider,
            reason,
            routed_model,
            completion,
            latency,
        } => Verdict::Finish(Outcome::Succeeded {
            provider,
            reason,
            upstream_model: completion.upstream_model.clone(),
            routed_model,
            tokens: completion.token_counts(request),
            result: completion.result,
            price: None,
            latency,
        }),
        RunEnd::Failed { provider, error } => failed(provider, error),
        RunEnd::Stopped {
            status,
            provider,
            reason,
            error,
            partial,
        } => {
            let (provider, upstream_model) = provider.unzip();
            let partial = partial.map(|(text, tokens, latency)| Partial {
                routed_model: upstream_model.clone().unwrap_or_default(),
                result: tollgate_core::provider::text_result(request, text),
                tokens,
                price: None,
                latency,
            });
            Verdict::Finish(Outcome::Stopped {
                status,
                provider,
                reason: Some(reason),
                upstream_model,
                error,
                partial,
            })
        }
        RunEnd::NoProvider { message } => Verdict::Finish(Outcome::failed_without_call(
            "no_provider_available",
            message,
        )),
        RunEnd::Transient {
            provider,
            error,
            retry_after,
        } => {
            // Found only busy providers: nothing failed, the job waits its turn however long.
            if error.code == chain::BUSY {
                return Verdict::Park {
                    error,
                    delay: retry::before_next_run(0, retry_after),
                };
            }
            let runs_so_far = u32::try_from(retries.saturating_add(1)).unwrap_or(u32::MAX);
            if runs_so_far < max_runs {
                let delay = retry::before_next_run(retries, retry_after);
                Verdict::Park { error, delay }
            } else {
                failed(provider, error)
            }
        }
    }
}

/// Why a database step was abandoned.
enum Halt {
    /// Shutdown began while the database was away.
    ShuttingDown,
    /// The step fails the same way every time (e.g. a stored request this version cannot read).
    Failed(sqlx::Error),
}

impl Halt {
    async fn give_up(self, delivery: &Delivery) {
        match self {
            // Unacked, the message is redelivered once the connection closes.
            Self::ShuttingDown => {}
            Self::Failed(error) => {
                tracing::error!(%error, "job cannot be processed; dead-lettering its message");
                // The dead-letter consumer marks the job failed with `internal_error`.
                let _ = delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await;
            }
        }
    }
}

/// Retries a database step while its failures are transient: a job's message is held (unacked)
/// meanwhile, so a database outage delays jobs instead of losing or dead-lettering them. Once
/// shutdown has begun it stops retrying and leaves the message to be redelivered.
async fn persistently<T, F, Fut>(context: &Context, step: &str, operation: F) -> Result<T, Halt>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    let result = operation
        .retry(backoff)
        .when(|error| tollgate_core::db::is_transient(error) && !context.shutdown.is_cancelled())
        .notify(
            |error, delay| tracing::warn!(%error, step, retry_in = ?delay, "database step failed"),
        )
        .await;
    result.map_err(|error| {
        if tollgate_core::db::is_transient(&error) {
            Halt::ShuttingDown
        } else {
            Halt::Failed(error)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::domain::GenerateRequest;

    fn request() -> JobRequest {
        JobRequest::Generate(GenerateRequest::parse("llama3", "hi".into(), None).expect("valid"))
    }

    fn transient(retry_after: Option<Duration>) -> RunEnd {
        RunEnd::Transient {
            provider: Some((ProviderName::Ollama, "llama3".into())),
            error: JobError {
                code: "provider_unavailable".into(),
                message: "upstream answered 503".into(),
            },
            retry_after,
        }
    }

    #[test]
    fn a_transient_end_parks_the_job_while_runs_are_left_then_fails_it() {
        match decide(transient(None), &request(), 0, 3) {
            Verdict::Park { error, delay } => {
                assert_eq!(error.code, "provider_unavailable");
                assert_eq!(delay, Duration::from_secs(1));
            }
            Verdict::Finish(_) => panic!("the first of three runs parks"),
        }
        assert!(matches!(
            decide(transient(None), &request(), 1, 3),
            Verdict::Park { delay, .. } if delay == Duration::from_secs(5)
        ));
        match decide(transient(None), &request(), 2, 3) {
            Verdict::Finish(Outcome::Failed {
                provider, error, ..
            }) => {
                assert_eq!(provider, Some(ProviderName::Ollama));
                assert_eq!(error.code, "provider_unavailable");
            }
            _ => panic!("the third of three runs fails the job"),
        }
    }

    #[test]
    fn a_long_retry_after_picks_a_longer_delay_queue() {
        assert!(matches!(
            decide(transient(Some(Duration::from_secs(45))), &request(), 0, 5),
            Verdict::Park { delay, .. } if delay == Duration::from_secs(120)
        ));
    }

    #[test]
    fn a_run_that_found_only_busy_providers_waits_however_many_runs_it_had() {
        let busy = || RunEnd::Transient {
            provider: Some((ProviderName::Ollama, "llama3".into())),
            error: JobError {
                code: chain::BUSY.into(),
                message: "every slot stayed busy".into(),
            },
            retry_after: None,
        };
        assert!(matches!(
            decide(busy(), &request(), 2, 3),
            Verdict::Park { delay, .. } if delay == Duration::from_secs(1)
        ));
        assert!(matches!(
            decide(busy(), &request(), 40, 3),
            Verdict::Park { .. }
        ));
    }

    #[test]
    fn no_provider_and_client_errors_end_the_job_at_once() {
        let none = RunEnd::NoProvider {
            message: "nothing".into(),
        };
        assert!(matches!(
            decide(none, &request(), 0, 5),
            Verdict::Finish(Outcome::Failed { error, .. }) if error.code == "no_provider_available"
        ));
    }
}
