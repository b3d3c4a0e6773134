//! Claims and ends of runs coalesced across this worker's handlers: the messages delivered
//! together are claimed by one statement, and the runs that end together are recorded by one
//! closing statement (see [`tollgate_core::coalesce`]).
//!
//! The rules are the statements' own: a job is claimed once whatever shares its statement, and only
//! the claim that holds a job writes its end, so a run whose job another worker reclaimed (or
//! finished) writes nothing while the others in its statement are written as if alone. If a
//! coalesced statement fails, each run is tried again by itself, so a job the database refuses
//! fails only its own run. A group claim never waits for a row another statement holds; the job it
//! skipped is claimed by itself in its handler's task.
//!
//! A claim commits without waiting for the disk ([`db::quick_commits`]): nothing is trusted to it
//! but the run itself, and the run's end, committed durably, makes it durable too. A crash of the
//! database between the two may lose the claim (the job is back as it was, `queued` say, its
//! message still held by this run); the end then finds no claim of its own, and the run claims the
//! job again under the same claim and records its end, so neither the job nor its call is lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tollgate_core::coalesce::{self, Coalescer, Limits};
use tollgate_core::db;
use tollgate_core::db::runs::{self, ClaimRequest, ClaimedJob, Finish, Recorded};
use tollgate_core::domain::JobId;
use tollgate_core::process::Tasks;
use uuid::Uuid;

/// Most claims, and most ends, in one statement.
const BATCH: usize = 128;
/// Statements of each kind in flight at once: while they run, the next ones gather.
const FLUSHES: usize = 4;
/// Connections of the claims' pool: one per claim in flight, and the claims made alone.
const CLAIM_CONNECTIONS: u32 = 8;

type Claimed = Result<Option<ClaimedJob>, sqlx::Error>;
type Ended = Result<Option<Recorded>, sqlx::Error>;

/// Where handlers claim their jobs and record their ends.
pub(crate) struct Runs {
    claims: Coalescer<ClaimRequest, GroupClaim>,
    ends: Coalescer<Arc<Finish>, Ended>,
    pool: PgPool,
    /// Where claims are committed: without waiting for the disk.
    claiming: PgPool,
    lease: Duration,
}

/// A group claim's answer for one request.
enum GroupClaim {
    Answered(Box<Claimed>),
    /// None of the group claimed its job, which the group claim may have skipped because another
    /// statement held its row: asked again by itself.
    AskAlone,
}

impl Runs {
    /// Starts the gathering tasks in `tasks`; they end once the `Runs` is dropped.
    pub(crate) fn start(pool: &PgPool, lease: Duration, tasks: &mut Tasks) -> Self {
        let limits = Limits {
            batch: BATCH,
            flushes: FLUSHES,
        };
        let claiming = db::quick_commits(pool, CLAIM_CONNECTIONS);
        let gathered = claiming.clone();
        let ending = pool.clone();
        Self {
            claims: Coalescer::start(tasks, "claims", limits, move |requests| {
                claim(gathered.clone(), requests, lease)
            }),
            ends: Coalescer::start(tasks, "ends", limits, move |runs| end(ending.clone(), runs)),
            pool: pool.clone(),
            claiming,
            lease,
        }
    }

    /// Claims the job of one delivered message, with the others delivered meanwhile. The group
    /// claim never waits for a row another statement holds (so it cannot deadlock): a job none of
    /// the group claimed is asked for again here, by the statement for one, which waits for the
    /// row while holding no other — and while the group's other runs go ahead.
    pub(crate) async fn claim(&self, request: ClaimRequest) -> Claimed {
        match self.claims.submit(request).await {
            Ok(GroupClaim::Answered(claimed)) => *claimed,
            Ok(GroupClaim::AskAlone) => runs::claim(&self.claiming, request, self.lease).await,
            Err(error) => stopped(error),
        }
    }

    /// Records a run that ends its job, with the others ending meanwhile. A run whose claim is
    /// not the job's claims it again ([`Runs::reclaim`]) and is recorded under the claim taken
    /// then; if it cannot (the job ended, or another run holds it), it is `None` and its result
    /// dropped.
    pub(crate) async fn finish(&self, run: Arc<Finish>) -> Ended {
        let ended = self
            .ends
            .submit(run.clone())
            .await
            .unwrap_or_else(stopped)?;
        if ended.is_some() || !self.reclaim(run.id, run.claim_id).await? {
            return Ok(ended);
        }
        runs::finish(&self.pool, &run).await
    }

    /// Claims job `id` again under `claim_id`, a claim the run found gone: whether it could. It
    /// can when the claim was lost in a crash of the database (see the module's docs), the job
    /// back as it was and claimable; never from a run that holds it now (the request is not a
    /// redelivery), nor a job that ended.
    pub(crate) async fn reclaim(&self, id: JobId, claim_id: Uuid) -> Result<bool, sqlx::Error> {
        let again = ClaimRequest {
            id,
            claim_id,
            redelivered: false,
        };
        let claimed = runs::claim(&self.pool, again, self.lease).await?.is_some();
        if claimed {
            tracing::warn!(job_id = %id, "the run's claim was lost; claimed again");
        }
        Ok(claimed)
    }
}

/// The worker is stopping (or a statement panicked): like a closed pool, the message is left for
/// redelivery once shutdown has begun.
fn stopped<T>(error: tollgate_core::coalesce::Stopped) -> Result<T, sqlx::Error> {
    tracing::warn!(%error, "a coalesced statement did not answer");
    Err(sqlx::Error::PoolClosed)
}

async fn claim(pool: PgPool, requests: Vec<ClaimRequest>, lease: Duration) -> Vec<GroupClaim> {
    // A message alone is claimed by the statement for one (planned quicker than the arrays').
    if let [request] = requests[..] {
        return vec![answered(runs::claim(&pool, request, lease).await)];
    }
    let together = runs::claim_many(&pool, &requests, lease).await;
    if let Some(answers) = coalesce::answered(together, requests.len()) {
        return to_ask_alone(&requests, answers);
    }
    let mut answers = Vec::with_capacity(requests.len());
    for request in requests {
        answers.push(answered(runs::claim(&pool, request, lease).await));
    }
    answers
}

fn answered(claimed: Claimed) -> GroupClaim {
    GroupClaim::Answered(Box::new(claimed))
}

/// The group's answers, with each request whose job none of the group claimed to be asked again
/// by itself (a duplicate message gets the same answer there). A job another request of the group
/// claimed is not asked for again, so a redelivered duplicate cannot take it from the run that just
/// claimed it.
fn to_ask_alone(requests: &[ClaimRequest], answers: Vec<Claimed>) -> Vec<GroupClaim> {
    let claimed: HashSet<JobId> = answers
        .iter()
        .filter_map(|answer| answer.as_ref().ok()?.as_ref().map(|job| job.id))
        .collect();
    requests
        .iter()
        .zip(answers)
        .map(|(request, answer)| match answer {
            Ok(None) if !claimed.contains(&request.id) => GroupClaim::AskAlone,
            answer => answered(answer),
        })
        .collect()
}

async fn end(pool: PgPool, ended: Vec<Arc<Finish>>) -> Vec<Ended> {
    let together = runs::finish_many(&pool, &ended)
        .await
        .map(|recorded| recorded.into_iter().map(Ok).collect());
    if let Some(answers) = coalesce::answered(together, ended.len()) {
        return answers;
    }
    let mut answers = Vec::with_capacity(ended.len());
    for run in &ended {
        answers.push(runs::finish(&pool, run).await);
    }
    answers
}
