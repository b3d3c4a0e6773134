//! One delivery, start to finish: claim the job, run it down its provider chain, record how the
//! run ended (finished, or parked for a delayed retry), and only then ack.
//!
//! The ack comes last: a worker that dies anywhere before it leaves the message to be
//! redelivered, and the conditional claim and finish in `shared::db::jobs` make the redelivery
//! run the job at most once more and record it exactly once.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use shared::db::jobs;
use shared::db::runs::{self, ClaimedJob, Outcome};
use shared::domain::{JobError, JobId, ProviderName};
use shared::queue::JobMessage;
use uuid::Uuid;

use crate::chain::{self, RunEnd};
use crate::{Context, retry};

#[tracing::instrument(skip_all, fields(job_id, redelivered = delivery.redelivered))]
pub async fn handle(context: &Context, delivery: &Delivery) {
    let Some(message) = JobMessage::decode(&delivery.data) else {
        tracing::error!("undecodable message; dead-lettering it");
        // requeue: false sends it to the dead-letter exchange.
        let _ = delivery
            .acker
            .reject(BasicRejectOptions { requeue: false })
            .await;
        return;
    };
    tracing::Span::current().record("job_id", tracing::field::display(message.job_id));
    let claim_id = Uuid::now_v7();
    let claim = persistently(context, "claim", || {
        runs::claim(
            &context.pool,
            message.job_id,
            claim_id,
            delivery.redelivered,
            context.settings.lease,
        )
    })
    .await;
    let claim = match claim {
        Ok(claim) => claim,
        Err(halt) => return halt.give_up(delivery).await,
    };
    if let Some(job) = claim {
        if let Err(halt) = work(context, &job, claim_id).await {
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
/// parked for a delayed run when every provider failed transiently and attempts remain.
async fn work(context: &Context, job: &ClaimedJob, claim_id: Uuid) -> Result<(), Halt> {
    let mut attempts = Vec::new();
    let (outcome, retry) = if job.abandoned_runs() > context.settings.max_claims {
        let message = format!(
            "the job was abandoned by {} workers in a row",
            job.abandoned_runs() - 1
        );
        let outcome = Outcome::failed_without_call("internal_error", message);
        (outcome, None)
    } else {
        let plan = context.providers.plan(job.request.model().as_str()).await;
        let run = chain::run(&context.providers, &plan, &job.request, &mut attempts);
        let end = tokio::select! {
            biased;
            end = run => end,
            never = keep_lease(context, job.id, claim_id) => match never {},
        };
        let max_runs = plan.runtime.settings.retry.max_job_attempts;
        decide(end, job, max_runs)
    };
    let written = match &retry {
        Some((error, delay)) => {
            persistently(context, "park", || {
                runs::park(&context.pool, job.id, claim_id, error, *delay, &attempts)
            })
            .await?
        }
        None => {
            persistently(context, "finish", || {
                runs::finish(&context.pool, job.id, claim_id, &outcome, &attempts)
            })
            .await?
        }
    };
    if !written {
        tracing::warn!("the job was reclaimed by another worker; result dropped");
        return Ok(());
    }
    if let Some((error, delay)) = retry {
        tracing::info!(
            code = error.code,
            ?delay,
            "every provider failed transiently; retrying later"
        );
        // Parked and committed: if this publish fails, the sweeper sends the job once it is due.
        match context.broker.publish_delayed(job.id, delay).await {
            Ok(()) => {
                if let Err(error) = jobs::mark_published(&context.pool, &[job.id]).await {
                    tracing::warn!(%error, "cannot mark the delayed message published");
                }
            }
            Err(error) => tracing::warn!(%error, "delayed publish failed; the sweeper will resend"),
        }
    }
    Ok(())
}

/// Renews the claim's lease every third of it while the run goes on (quick retries and fallbacks
/// can outlast one provider call), so the sweeper never hands a live run to another worker.
async fn keep_lease(context: &Context, id: JobId, claim_id: Uuid) -> std::convert::Infallible {
    let lease = context.settings.lease;
    loop {
        tokio::time::sleep(lease / 3).await;
        if let Err(error) = runs::extend_lease(&context.pool, id, claim_id, lease).await {
            tracing::warn!(%error, "cannot renew the lease");
        }
    }
}

/// What a run's end means for the job: its outcome, or a retry after a delay when every provider
/// failed transiently and the job has runs left (`max_runs` in all).
fn decide(end: RunEnd, job: &ClaimedJob, max_runs: u32) -> (Outcome, Option<(JobError, Duration)>) {
    let failed = |provider: Option<(ProviderName, String)>, error| {
        let (provider, upstream_model) = provider.unzip();
        Outcome::Failed {
            provider,
            upstream_model,
            error,
        }
    };
    match end {
        // The job shows the model the provider says answered.
        RunEnd::Succeeded {
            provider,
            completion,
        } => (
            Outcome::Succeeded {
                provider,
                upstream_model: completion.upstream_model,
                result: completion.result,
                prompt_tokens: completion.prompt_tokens,
                completion_tokens: completion.completion_tokens,
            },
            None,
        ),
        RunEnd::Failed { provider, error } => (failed(provider, error), None),
        RunEnd::NoProvider { message } => (
            Outcome::failed_without_call("no_provider_available", message),
            None,
        ),
        RunEnd::Transient {
            provider,
            error,
            retry_after,
        } => {
            let runs_so_far = u32::try_from(job.retries + 1).unwrap_or(u32::MAX);
            if runs_so_far < max_runs {
                let delay = retry::before_next_run(job.retries, retry_after);
                let outcome = failed(provider, error.clone());
                (outcome, Some((error, delay)))
            } else {
                (failed(provider, error), None)
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
        .when(|error| shared::db::is_transient(error) && !context.shutdown.is_cancelled())
        .notify(
            |error, delay| tracing::warn!(%error, step, retry_in = ?delay, "database step failed"),
        )
        .await;
    result.map_err(|error| {
        if shared::db::is_transient(&error) {
            Halt::ShuttingDown
        } else {
            Halt::Failed(error)
        }
    })
}
