//! Jobs submitted together, written together: the intake of a job that needs nothing but its
//! insert (no `Idempotency-Key`, no quota to reserve).
//!
//! Concurrent submissions to this instance are gathered by a [`Coalescer`]: one multi-row insert
//! (one commit) for all of them, then one window of publisher confirms. Each request is answered
//! only once its row is committed and its message confirmed (or the publish failed after the
//! commit: the job is durable and the worker's sweeper publishes it), so a `202` still means the
//! job is durable. A request that arrives alone is written at once, by itself.
//!
//! If the statement's connection breaks, it is tried again until the database answers (for up
//! to [`IN_DOUBT_FOR`]): it may have committed before its answer was lost, and the retry
//! recognises the jobs it wrote (`jobs::insert_many_again`), so the requests are answered `202`, not
//! told of an error for jobs that exist and will run. If the
//! statement fails otherwise, each job is tried again by itself, so one job the database refuses
//! fails only its own request.

use sqlx::PgPool;
use tollgate_core::coalesce::{self, Coalescer, Limits, Stopped};
use tollgate_core::db::{
    self,
    jobs::{self, NewJob},
};
use tollgate_core::domain::Job;
use tollgate_core::process::Tasks;
use tollgate_core::queue::{Broker, Work};

use super::published::Recorder;

/// Most jobs in one insert: enough that a burst of a few hundred clients is a few statements.
const BATCH: usize = 256;
/// Inserts (and publishes) in flight at once: while they run, the next submissions gather.
const FLUSHES: usize = 4;
/// How long an insert whose connection broke is tried again before its requests are answered
/// `503`, not knowing whether their jobs were written: long enough for a database to restart.
pub const IN_DOUBT_FOR: std::time::Duration = std::time::Duration::from_secs(15);

/// Submits jobs to be written with whatever else arrives meanwhile.
#[derive(Clone)]
pub struct Inserter(Coalescer<NewJob, Result<Job, sqlx::Error>>);

impl Inserter {
    /// Starts the gathering task in `tasks`; it ends once every handle is dropped.
    pub fn start(pool: PgPool, broker: Broker, published: Recorder, tasks: &mut Tasks) -> Self {
        let limits = Limits {
            batch: BATCH,
            flushes: FLUSHES,
        };
        Self(Coalescer::start(tasks, "intake", limits, move |batch| {
            write(pool.clone(), broker.clone(), published.clone(), batch)
        }))
    }

    /// Writes and publishes `job`; its row is committed when this returns the job.
    pub async fn insert(&self, job: NewJob) -> Result<Result<Job, sqlx::Error>, Stopped> {
        self.0.submit(job).await
    }
}

/// One flush: the jobs inserted, then those written published as one window of confirms.
async fn write(
    pool: PgPool,
    broker: Broker,
    published: Recorder,
    batch: Vec<NewJob>,
) -> Vec<Result<Job, sqlx::Error>> {
    let written = insert(&pool, &batch).await;
    let work: Vec<Work> = batch
        .iter()
        .zip(&written)
        .filter(|(_, written)| written.is_ok())
        .map(|(job, _)| Work::new(job.id, job.traceparent))
        .collect();
    if !work.is_empty() {
        match broker.publish_jobs(&work).await {
            Ok(()) => work.iter().for_each(|w| published.confirmed(w.id)),
            Err(error) => tracing::warn!(
                %error,
                jobs = work.len(),
                "publish failed; the sweeper will resend"
            ),
        }
    }
    written
}

/// The batch in one statement, tried again when the connection broke under it — it may have
/// committed all the same, and the retry finds the jobs it wrote and answers with them — until
/// the database answers or [`IN_DOUBT_FOR`] has passed; if it fails otherwise, each job by itself
/// (only the refused fail).
async fn insert(pool: &PgPool, batch: &[NewJob]) -> Vec<Result<Job, sqlx::Error>> {
    let mut together = jobs::insert_many(pool, batch).await;
    if let Err(error) = &together
        && tollgate_core::db::is_unreachable(error)
    {
        tracing::warn!(%error, "the insert's connection broke; trying it again");
        together = db::when_reachable(IN_DOUBT_FOR, || jobs::insert_many_again(pool, batch)).await;
    }
    let together = together.map(|written| written.into_iter().map(Ok).collect());
    if let Some(written) = coalesce::answered(together, batch.len()) {
        return written;
    }
    let mut written = Vec::with_capacity(batch.len());
    for job in batch {
        // Tried again: the statement for a retry, which finds a job an earlier try wrote.
        let alone = jobs::insert_many_again(pool, std::slice::from_ref(job)).await;
        written.push(alone.and_then(|mut one| one.pop().ok_or(sqlx::Error::RowNotFound)));
    }
    written
}
