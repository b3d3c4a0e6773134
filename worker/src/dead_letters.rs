//! The dead-letter consumer: a job whose message the broker gave up on (delivery limit reached, or
//! undecodable) must still end, so its job is marked `failed` with `internal_error`.

use std::sync::Arc;

use tollgate_core::db::jobs;
use tollgate_core::domain::{JobError, JobErrorCode, JobStatus};
use tollgate_core::queue::{JobMessage, Subscription};

use crate::Context;
use crate::execute::announce;

/// Pause before retrying a dead letter while the database is unavailable.
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn run(context: Arc<Context>) {
    let queue = context.broker.topology().dead_letter_queue();
    while let Some(mut subscription) =
        Subscription::<JobMessage>::open(&context.broker, &queue, 16, &context.shutdown).await
    {
        loop {
            let delivery = tokio::select! {
                () = context.shutdown.cancelled() => return,
                delivery = subscription.next() => delivery,
            };
            let Some(delivery) = delivery else { break };
            if let Some(message) = delivery.message() {
                let error = JobError::new(
                    JobErrorCode::InternalError,
                    "the job's message was dead-lettered after repeated failed deliveries",
                );
                match jobs::fail_dead_lettered(&context.pool, message.job_id, &error).await {
                    Ok(Some(recorded)) => {
                        tracing::error!(job_id = %message.job_id, "dead-lettered job marked failed");
                        announce(&context, message.job_id, recorded, JobStatus::Failed).await;
                    }
                    Ok(None) => {}
                    Err(error) => {
                        // Put back: the dead letter stays until the database is back.
                        tracing::warn!(%error, "cannot fail a dead-lettered job; will retry");
                        delivery.requeue().await;
                        tokio::select! {
                            () = context.shutdown.cancelled() => return,
                            () = tokio::time::sleep(RETRY_DELAY) => continue,
                        }
                    }
                }
            }
            // Undecodable messages are acked away: there is no job to fail.
            delivery.ack().await;
        }
    }
}
