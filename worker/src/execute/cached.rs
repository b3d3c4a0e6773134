//! The response cache at the worker: one provider call for identical jobs in flight.
//!
//! A claimed job that reads the cache ([`turn`]) is answered by an answer stored since intake
//! (a batch item's, most often), or takes its key's flight and runs, or finds an identical job
//! running and goes back to `queued` to wait for it — acked, holding no delivery or prefetch
//! slot. When the leader ends, [`settle`] answers the jobs that waited from its answer (each
//! ended as a hit by the statement that ends runs), or, if it failed, promotes one of them to
//! run; the others wait on. The sweeper settles keys whose leader ended some other way
//! ([`settle_stranded`]).

use std::time::Duration;

use tollgate_core::db::cache::{self, CachedAnswer, Lead};
use tollgate_core::db::runs::{ClaimedJob, Finish, Hit, Outcome};
use tollgate_core::domain::TenantId;
use tollgate_core::domain::cache::{CacheKey, MAX_CACHE_TTL_SECS};
use tollgate_core::queue::Work;
use uuid::Uuid;

use super::halt::{Halt, persistently};
use super::tell;
use crate::Context;

/// What a claimed job does about the cache.
pub(super) enum Turn {
    /// Runs down its chain; `leads` when it holds its key's flight (it settles it when it ends).
    Run { leads: bool },
    /// Answered without a call.
    Answered(Box<Outcome>),
    /// Waits for an identical job (or its claim was lost): nothing more to do now.
    Done,
}

/// Decides the cache's turn for a claimed job. A streaming job never waits (its client reads
/// its text as it comes): it runs, and its answer is stored.
pub(super) async fn turn(
    context: &Context,
    job: &ClaimedJob,
    claim_id: Uuid,
) -> Result<Turn, Halt> {
    let (Some(key), Some(ttl)) = (job.cache.key, job.cache.ttl_secs) else {
        return Ok(Turn::Run { leads: false });
    };
    if !job.cache.reads() || job.stream {
        return Ok(Turn::Run { leads: false });
    }
    let max_age = Duration::from_secs(u64::from(ttl));
    let lead = || {
        persistently(context, "cache lead", || {
            cache::lead(&context.pool, job.tenant_id, key, job.id, claim_id, max_age)
        })
    };
    let mut lead_now = lead().await?;
    // A claim lost in a crash of the database (claims commit without waiting for the disk) is
    // taken again, once, rather than the job left queued with its message acked.
    if lead_now == Lead::Lost
        && persistently(context, "reclaim", || {
            context.runs.reclaim(job.id, claim_id)
        })
        .await?
    {
        lead_now = lead().await?;
    }
    Ok(match lead_now {
        Lead::Leads => Turn::Run { leads: true },
        Lead::Waits => {
            tracing::debug!("an identical job is running; waiting for its answer");
            Turn::Done
        }
        Lead::Lost => Turn::Done,
        Lead::Hit(source) => {
            let answer = persistently(context, "cache answer", || {
                cache::answer(&context.pool, source)
            })
            .await?;
            match answer {
                Some(answer) => Turn::Answered(Box::new(hit(context, answer))),
                // Purged since: run it.
                None => Turn::Run { leads: false },
            }
        }
    })
}

/// A job's end answered by `answer`, billed at its price's cache rate now.
fn hit(context: &Context, answer: CachedAnswer) -> Outcome {
    let price = context.providers.runtime().prices.at(
        answer.provider,
        &answer.routed_model,
        chrono::Utc::now(),
    );
    Outcome::Hit(Box::new(Hit { answer, price }))
}

/// After a leader's end is recorded: the jobs that waited for it answered from its answer (when
/// it succeeded), or one of them promoted to run. Most leaders have nobody waiting: the claim of
/// the waiters, finding none, is then all it costs. A failure here leaves them to the sweeper.
pub(super) async fn settle(context: &Context, job: &ClaimedJob, succeeded: bool) {
    let Some(key) = job.cache.key else {
        return;
    };
    let settled = match succeeded {
        true => {
            answer_waiters(context, job.tenant_id, key, || {
                cache::answer(&context.pool, job.id)
            })
            .await
        }
        false => promote(context, job.tenant_id, key).await,
    };
    if let Err(error) = settled {
        tracing::warn!(%error, "cannot settle the jobs waiting on this one; the sweeper will");
    }
}

/// Settles keys whose jobs wait on a leader that is gone (it ended without settling them: its
/// worker died after its end was recorded, or it was dead-lettered or failed by the sweeper).
pub(crate) async fn settle_stranded(context: &Context, grace: Duration) -> anyhow::Result<()> {
    let stranded = cache::stranded(&context.pool, grace).await?;
    let max_age = Duration::from_secs(u64::from(MAX_CACHE_TTL_SECS));
    for (tenant, key) in stranded {
        match cache::lookup(&context.pool, tenant, key, max_age).await? {
            Some(answer) => {
                answer_waiters(context, tenant, key, || async { Ok(Some(answer)) }).await?
            }
            None => promote(context, tenant, key).await?,
        }
    }
    Ok(())
}

/// Answers the jobs waiting on `key` with the answer `answer` reads, read only when some wait.
async fn answer_waiters<F, Fut>(
    context: &Context,
    tenant: TenantId,
    key: CacheKey,
    answer: F,
) -> Result<(), sqlx::Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Option<CachedAnswer>, sqlx::Error>>,
{
    let lease = context.settings.lease;
    let waiters = cache::claim_waiters(&context.pool, tenant, key, lease).await?;
    if waiters.is_empty() {
        return Ok(());
    }
    // The answer of a job that succeeded is there (a purge ends its serving, not the job); if
    // it were not, the claimed waiters would go back to the queue when their lease runs out.
    let Some(answer) = answer().await? else {
        return Ok(());
    };
    // One answer, priced once, for all of them.
    let outcome = hit(context, answer);
    let runs: Vec<Finish> = waiters
        .iter()
        .map(|waiter| Finish {
            id: waiter.id,
            claim_id: waiter.claim_id,
            outcome: outcome.clone(),
            attempts: Vec::new(),
            policy: waiter.data_policy,
        })
        .collect();
    let recorded = tollgate_core::db::runs::finish_many(&context.pool, &runs).await?;
    tracing::debug!(answered = waiters.len(), "jobs that waited answered");
    for (waiter, recorded) in waiters.iter().zip(recorded) {
        let Some(recorded) = recorded else { continue };
        context.metrics.cache_hit();
        if waiter.bulk {
            tell::deliver(context, recorded.delivery).await;
        } else {
            let status = tollgate_core::domain::JobStatus::Succeeded;
            tell::announce(context, waiter.id, recorded, status).await;
        }
    }
    Ok(())
}

/// Gives the key to its oldest waiting job, published to run (the sweeper publishes it if this
/// publish fails).
async fn promote(context: &Context, tenant: TenantId, key: CacheKey) -> Result<(), sqlx::Error> {
    let Some((id, bulk)) = cache::promote(&context.pool, tenant, key).await? else {
        return Ok(());
    };
    tracing::info!(job_id = %id, "the job leading identical ones ended without an answer; promoted one");
    let work = [Work::new(id, None)];
    let published = match bulk {
        true => context.broker.publish_bulk(&work).await,
        false => context.broker.publish_jobs(&work).await,
    };
    match published {
        Ok(()) => tollgate_core::db::jobs::mark_published(&context.pool, &[id]).await,
        Err(error) => {
            tracing::warn!(%error, "promoted job's publish failed; the sweeper will resend");
            Ok(())
        }
    }
}
