//! One delivery, start to finish: claim the job, run it down its provider chain, record how the
//! run ended (finished, or parked for a delayed retry), and only then ack.
//!
//! The ack comes last: a worker that dies anywhere before it leaves the message to be
//! redelivered, and the conditional claim and finish in `tollgate_core::db::runs` make the redelivery
//! run the job at most once more and record it exactly once.

mod cached;
mod halt;
mod images;
mod tell;
mod verdict;

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::SemaphorePermit;
use tokio_util::sync::CancellationToken;
use tollgate_core::db::job_attempts::AttemptRecord;
use tollgate_core::db::runs::{self, ClaimRequest, ClaimedJob, Finish, Outcome, Recorded};
use tollgate_core::domain::{JobErrorCode, JobId, JobRequest, JobStatus, RouteInput, TraceParent};
use tollgate_core::queue::{Delivery, JobEvent, JobMessage};
use tollgate_core::telemetry;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::chain::{self, Call, Lane};
use crate::relay::Relay;
use crate::{Context, Plan, abandoned};

pub(crate) use cached::settle_stranded;
use halt::{Halt, persistently};
pub(crate) use tell::announce;
use tell::{count, tell};
use verdict::{decide, price_run};

/// Handles one delivery from `lane`'s queue. A single job is marked running for its whole
/// handling, and a batch item's claim and outcome wait their turn while single jobs run (see
/// [`crate::priority`]).
pub async fn handle(context: &Context, delivery: &Delivery<JobMessage>, lane: Lane) {
    let _single = (lane == Lane::Interactive).then(|| context.priority.single());
    let Some(message) = delivery.message() else {
        tracing::error!("undecodable message; dead-lettering it");
        delivery.dead_letter().await;
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
        redelivered = delivery.redelivered(),
    );
    let carried = delivery.traceparent();
    let trace = carried.map(|parent| telemetry::continue_trace(&span, Some(&parent)));
    run(context, delivery, lane, message, carried, trace)
        .instrument(span)
        .await;
}

/// Claims the message's job and, if it is this delivery's to run, runs it; acks last.
async fn run(
    context: &Context,
    delivery: &Delivery<JobMessage>,
    lane: Lane,
    message: &JobMessage,
    carried: Option<TraceParent>,
    trace: Option<TraceParent>,
) {
    let claim_id = Uuid::now_v7();
    let turn = bulk_turn(context, lane).await;
    let request = ClaimRequest {
        id: message.job_id,
        claim_id,
        redelivered: delivery.redelivered(),
    };
    let claim = persistently(context, "claim", || context.runs.claim(request))
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
    // The outcome is committed: should the ack fail, a redelivery finds the job finished and is
    // acked unworked.
    delivery.ack().await;
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
    let mut leading = false;
    let route = RouteInput {
        policy: job.data_policy,
        bulk: job.bulk,
        batch_overflow: job.batch_overflow,
        share_draw: share_draw(job.id),
        needs: job.request.needs(),
    };
    let plan = context
        .providers
        .plan(job.request.model().as_str(), route)
        .await;
    let relay = job
        .stream
        .then(|| Relay::start(context.broker.clone(), job.id, job.stream_to.clone()));
    let mut attempts = Vec::new();
    let before = match ended_before_running(context, job) {
        Some(outcome) => Some(outcome),
        None => match cached::turn(context, job, claim_id).await? {
            cached::Turn::Run { leads } => {
                leading = leads;
                None
            }
            cached::Turn::Answered(hit) => Some(*hit),
            cached::Turn::Done => return Ok(()),
        },
    };
    let mut outcome = match before {
        Some(outcome) => outcome,
        None => match images::ready(context, job, claim_id).await? {
            images::Ready::Failed(outcome) => outcome,
            ready => {
                let request = match &ready {
                    images::Ready::Loaded(request) => request,
                    _ => &job.request,
                };
                let call = RunCall {
                    job,
                    request,
                    claim_id,
                    trace,
                    plan: &plan,
                    relay: relay.as_ref(),
                };
                call_chain(context, call, &mut attempts).await
            }
        },
    };
    let Some(recorded) = record(context, job, claim_id, &plan, &mut outcome, &mut attempts).await?
    else {
        tracing::warn!("the job was reclaimed by another worker; result dropped");
        return Ok(());
    };
    count(context, job, &outcome, &attempts);
    let parked = matches!(outcome, Outcome::Parked { .. });
    let succeeded = matches!(outcome, Outcome::Succeeded { .. });
    tell(context, job, recorded, outcome, relay.as_ref()).await;
    if leading && !parked {
        cached::settle(context, job, succeeded).await;
    }
    Ok(())
}

/// What one run down the chain needs besides the worker's context.
struct RunCall<'a> {
    job: &'a ClaimedJob,
    /// The job's request with its images' bytes loaded.
    request: &'a JobRequest,
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
) -> Outcome {
    let job = run.job;
    let answer_schema = match run.request.answer_schema() {
        Ok(schema) => schema,
        Err(why) => {
            let message = format!("the answer's format: {why}");
            return Outcome::failed_without_call(JobErrorCode::InvalidRequest, message);
        }
    };
    let registered = context.cancels.register(job.id);
    let call = Call {
        request: run.request,
        answer_schema: answer_schema.as_ref(),
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
    outcome: &mut Outcome,
    attempts: &mut Vec<AttemptRecord>,
) -> Result<Option<Recorded>, Halt> {
    let estimated = abandoned::estimates(job, plan, attempts, outcome);
    attempts.splice(0..0, estimated);
    price_run(&context.providers.runtime(), outcome, attempts);
    let _turn = bulk_turn(context, lane_of(job)).await;
    // Handed to the statement that ends the runs ending meanwhile, so it owns a copy: one, shared
    // by every try while the database is away.
    let run = Arc::new(Finish {
        id: job.id,
        claim_id,
        outcome: outcome.clone(),
        attempts: attempts.clone(),
        policy: job.data_policy,
    });
    persistently(context, "finish", || context.runs.finish(run.clone()))
        .instrument(tracing::info_span!("finish"))
        .await
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
        return Some(Outcome::failed_without_call(
            JobErrorCode::InternalError,
            message,
        ));
    }
    if job.stream && job.abandoned_runs() > 1 {
        return Some(Outcome::failed_without_call(
            JobErrorCode::StreamInterrupted,
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
