//! One delivery, start to finish: claim the job, call the provider, record the outcome, ack.
//!
//! The ack comes last: a worker that dies anywhere before it leaves the message to be
//! redelivered, and the conditional claim and finish in `shared::db::jobs` make the redelivery
//! run the job at most once more and record it exactly once.

use std::future::Future;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable as _};
use chrono::Utc;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use shared::db::jobs::{self, AttemptOutcome, AttemptRecord, ClaimedJob, Outcome};
use shared::domain::JobError;
use shared::provider::FailureClass;
use shared::queue::JobMessage;
use uuid::Uuid;

use crate::Context;

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
        jobs::claim(
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
        let (outcome, attempt) = work(context, &job).await;
        let finished = persistently(context, "finish", || {
            jobs::finish(&context.pool, job.id, claim_id, &outcome, attempt.as_ref())
        })
        .await;
        match finished {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("the job was reclaimed by another worker; result dropped")
            }
            Err(halt) => return halt.give_up(delivery).await,
        }
    } else {
        tracing::debug!("duplicate or finished job; acking without work");
    }
    if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
        // The outcome is committed; a redelivery will find the job finished and be acked unworked.
        tracing::warn!(%error, "ack failed");
    }
}

/// Runs the claimed job on the current provider.
async fn work(context: &Context, job: &ClaimedJob) -> (Outcome, Option<AttemptRecord>) {
    if job.claims > context.settings.max_claims {
        let message = format!(
            "the job was abandoned by {} workers in a row",
            job.claims - 1
        );
        return (
            Outcome::failed_without_call("internal_error", message),
            None,
        );
    }
    let Some(provider) = context.providers.current() else {
        let message = "no provider is available: Ollama does not answer and no OpenAI key is set";
        return (
            Outcome::failed_without_call("no_provider_available", message),
            None,
        );
    };
    let started_at = Utc::now();
    let clock = Instant::now();
    let answer = provider.run(&job.request).await;
    let latency = clock.elapsed();
    let requested_model = job.request.model().as_str().to_owned();
    match answer {
        Ok(completion) => {
            let attempt = AttemptRecord {
                provider: provider.name().into(),
                upstream_model: completion.upstream_model.clone(),
                started_at,
                latency,
                status_code: Some(completion.status_code),
                outcome: AttemptOutcome::Succeeded,
                error: None,
                prompt_tokens: Some(completion.prompt_tokens),
                completion_tokens: Some(completion.completion_tokens),
            };
            let outcome = Outcome::Succeeded {
                provider: provider.name().into(),
                upstream_model: completion.upstream_model,
                result: completion.result,
                prompt_tokens: completion.prompt_tokens,
                completion_tokens: completion.completion_tokens,
            };
            (outcome, Some(attempt))
        }
        Err(failure) => {
            tracing::info!(
                provider = provider.name(),
                code = failure.code,
                "provider call failed"
            );
            let error = JobError {
                code: failure.code.into(),
                message: failure.message.clone(),
            };
            let attempt = AttemptRecord {
                provider: provider.name().into(),
                upstream_model: requested_model.clone(),
                started_at,
                latency,
                status_code: failure.status_code,
                outcome: match failure.class {
                    FailureClass::Transient => AttemptOutcome::TransientError,
                    FailureClass::Provider | FailureClass::Client => AttemptOutcome::PermanentError,
                },
                error: Some(error.clone()),
                prompt_tokens: None,
                completion_tokens: None,
            };
            let outcome = Outcome::Failed {
                provider: Some(provider.name().into()),
                upstream_model: Some(requested_model),
                error,
            };
            (outcome, Some(attempt))
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
