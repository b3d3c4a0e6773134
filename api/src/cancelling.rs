//! Cancelling, for every surface: a job — at once when no worker holds it, else by telling the
//! workers — and a batch — its waiting items at once, the batch ending once its running ones have —
//! each with its job event and webhook delivery sent.

use tollgate_core::db::batches::{self, Batch, BatchCancel};
use tollgate_core::db::jobs::{self, CancelOutcome};
use tollgate_core::domain::{BatchId, JobId, JobStatus, TenantId};
use tollgate_core::queue::JobEvent;

use crate::AppState;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::path::not_found;

/// Cancels a job for its tenant: at once if no worker holds it, else by telling the workers (the
/// one running it aborts the provider call and ends it).
pub async fn job(
    state: &AppState,
    tenant_id: TenantId,
    id: JobId,
) -> Result<CancelOutcome, sqlx::Error> {
    let outcome = jobs::cancel(&state.pool, tenant_id, id).await?;
    match &outcome {
        CancelOutcome::Cancelled {
            job,
            revision,
            delivery,
        } => {
            let event = JobEvent::new(job.id, *revision, JobStatus::Cancelled);
            state.broker.publish_event(event).await;
            if let Some(delivery) = delivery
                && let Err(error) = state.broker.publish_webhooks(&[*delivery]).await
            {
                tracing::warn!(%error, "webhook publish failed; the sweeper will resend");
            }
        }
        CancelOutcome::Requested(job) => state.broker.publish_cancel(job.id).await,
        CancelOutcome::TooLate(_) | CancelOutcome::NotFound => {}
    }
    Ok(outcome)
}

/// Cancels a tenant's batch (a second cancel changes nothing); 409 once it has completed.
pub async fn batch(state: &AppState, tenant_id: TenantId, id: BatchId) -> Result<Batch, ApiError> {
    match batches::cancel(&state.pool, tenant_id, id).await? {
        BatchCancel::Cancelling { batch, delivery } => {
            if let Some(delivery) = delivery
                && let Err(error) = state.broker.publish_webhooks(&[delivery]).await
            {
                tracing::warn!(%error, "webhook publish failed; the sweeper will resend");
            }
            Ok(batch)
        }
        BatchCancel::TooLate(batch) if batch.status != "completed" => Ok(batch),
        BatchCancel::TooLate(_) => Err(ApiError::conflict(
            ErrorCode::BatchNotCancellable,
            "the batch has completed",
        )),
        BatchCancel::NotFound => Err(not_found::<BatchId>()),
    }
}
