//! The sweeper: makes "a 202 always ends in a terminal state" independent of luck.
//!
//! Every `sweep_every` it (1) puts `running` jobs whose lease ran out back to `queued`, and
//! (2) republishes `queued` jobs whose publish was never confirmed — the api crashed between
//! commit and publish, the broker was down, or step (1) just released them — and `retrying` jobs
//! that are due but whose delayed message was never confirmed or is long overdue; (3) sends webhook
//! deliveries that are overdue (their message was never published, or lost); (4) forgets
//! idempotency keys older than a day; (5) settles jobs waiting on an identical job that is gone
//! (answered from its stored answer, or one promoted to run). Every `expire_every` (and at its first round) it also
//! keeps the time partitions a week ahead and drops those that expired
//! ([`tollgate_core::db::partitions`]). Several workers may sweep at once; a job or delivery
//! published twice is harmless, the second claim finds it taken. Batch items go back to the bulk
//! queue.

use std::sync::Arc;
use std::time::Instant;

use tollgate_core::db::jobs::Unpublished;
use tollgate_core::db::{idempotency, jobs, partitions, webhooks};
use tollgate_core::domain::{JobId, JobStatus};
use tollgate_core::queue::{JobEvent, Work};

use crate::Context;

/// Most jobs handled per sweep; a larger backlog is worked off over the next sweeps.
const BATCH: i64 = 1_000;

pub async fn run(context: Arc<Context>) {
    let mut expired_at: Option<Instant> = None;
    loop {
        tokio::select! {
            () = context.shutdown.cancelled() => return,
            () = tokio::time::sleep(context.settings.sweep_every) => {}
        }
        if expired_at.is_none_or(|at| at.elapsed() >= context.settings.expire_every)
            && expire(&context).await
        {
            expired_at = Some(Instant::now());
        }
        if let Err(error) = sweep(&context).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "sweep failed; trying again next round"
            );
        }
    }
}

/// Prepares the partitions ahead and drops the expired ones, at the retention the runtime
/// settings hold now; whether that went through (if not, the next round tries again).
async fn expire(context: &Context) -> bool {
    let retention = context.providers.runtime().settings.retention;
    let now = chrono::Utc::now();
    match partitions::maintain(&context.pool, now, retention, Some(partitions::DAYS_AHEAD)).await {
        Ok(None) => {
            tracing::debug!("another process is keeping the partitions");
            true
        }
        // Its failure to prepare a day is logged where it happened.
        Ok(Some(done)) if done.unprepared.is_some() => false,
        Ok(Some(done)) if done.dropped.is_empty() && done.held.is_empty() => {
            tracing::debug!(created = done.created.len(), "partitions prepared");
            true
        }
        Ok(Some(done)) => {
            tracing::info!(
                dropped = ?done.dropped,
                held_for_jobs_in_flight = ?done.held,
                created = done.created.len(),
                "expired partitions dropped"
            );
            true
        }
        Err(error) => {
            tracing::warn!(%error, "partition maintenance failed; trying again next round");
            false
        }
    }
}

async fn sweep(context: &Context) -> anyhow::Result<()> {
    let released = jobs::release_abandoned(&context.pool, BATCH).await?;
    if !released.is_empty() {
        tracing::warn!(
            released = released.len(),
            "released running jobs whose lease ran out"
        );
    }
    for (id, revision) in released {
        let event = JobEvent::new(id, revision, JobStatus::Queued);
        context.broker.publish_event(event).await;
    }
    if !context.broker.is_connected() {
        return Ok(());
    }
    let settings = &context.settings;
    let unpublished = jobs::unpublished(
        &context.pool,
        settings.sweep_after,
        settings.retry_overdue,
        BATCH,
    )
    .await?;
    if !unpublished.is_empty() {
        let (bulk, single): (Vec<_>, Vec<_>) = unpublished.iter().partition(|job| job.bulk);
        let work = |jobs: Vec<&Unpublished>| {
            jobs.into_iter()
                .map(|job| Work::new(job.id, job.trace))
                .collect::<Vec<_>>()
        };
        let (bulk, single) = (work(bulk), work(single));
        if !single.is_empty() {
            context.broker.publish_jobs(&single).await?;
        }
        if !bulk.is_empty() {
            context.broker.publish_bulk(&bulk).await?;
        }
        let ids: Vec<JobId> = single.iter().chain(&bulk).map(|work| work.id).collect();
        jobs::mark_published(&context.pool, &ids).await?;
        tracing::info!(
            republished = ids.len(),
            "republished jobs whose message was never confirmed or is overdue"
        );
    }
    crate::execute::settle_stranded(context, settings.sweep_after).await?;
    let deliveries = webhooks::overdue(&context.pool, settings.sweep_after, BATCH).await?;
    if !deliveries.is_empty() {
        context.broker.publish_webhooks(&deliveries).await?;
        tracing::info!(
            republished = deliveries.len(),
            "republished overdue webhook deliveries"
        );
    }
    let forgotten = idempotency::forget_expired(&context.pool, BATCH).await?;
    if forgotten > 0 {
        tracing::debug!(forgotten, "forgot idempotency keys older than a day");
    }
    Ok(())
}
