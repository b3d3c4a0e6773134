//! After a run's end is recorded: its metrics, the streaming client's text closed, the job's
//! event (or a batch item's webhook delivery) sent, a parked job's delayed message published.

use std::time::Duration;

use tollgate_core::db::job_attempts::{AttemptOutcome, AttemptRecord};
use tollgate_core::db::jobs;
use tollgate_core::db::runs::{ClaimedJob, Outcome, Recorded};
use tollgate_core::domain::{JobId, JobStatus, ProviderName};
use tollgate_core::queue::{JobEvent, Work};
use uuid::Uuid;

use crate::Context;
use crate::relay::Relay;

/// Tells of a recorded end: the streaming client's text closed, the job's event (or a batch item's
/// webhook delivery) sent, and a parked job's message published to its delay queue.
pub(super) async fn tell(
    context: &Context,
    job: &ClaimedJob,
    recorded: Recorded,
    outcome: Outcome,
    relay: Option<&Relay>,
) {
    let status = outcome.status();
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
    if let Outcome::Parked { error, delay } = outcome {
        tracing::info!(
            code = error.code.as_str(),
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
pub(super) fn count(
    context: &Context,
    job: &ClaimedJob,
    outcome: &Outcome,
    attempts: &[AttemptRecord],
) {
    let metrics = &context.metrics;
    metrics.billed(attempts);
    let provider = match outcome {
        Outcome::Parked { .. } => return,
        Outcome::Succeeded { provider, .. } => Some(*provider),
        Outcome::Hit(hit) => {
            metrics.cache_hit();
            Some(hit.answer.provider)
        }
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

/// Tells watchers the job changed and hands its webhook delivery, if the terminal statement wrote
/// one, to the deliverer. Both happen after the commit; a delivery whose publish fails is still a
/// pending row, which the sweeper sends.
pub(crate) async fn announce(context: &Context, id: JobId, recorded: Recorded, status: JobStatus) {
    let event = JobEvent::new(id, recorded.revision, status);
    context.broker.publish_event(event).await;
    deliver(context, recorded.delivery).await;
}

/// Hands the webhook delivery a terminal statement wrote, if any, to the deliverer.
pub(super) async fn deliver(context: &Context, delivery: Option<Uuid>) {
    if let Some(delivery) = delivery
        && let Err(error) = context.broker.publish_webhooks(&[delivery]).await
    {
        tracing::warn!(%error, "webhook publish failed; the sweeper will resend");
    }
}
