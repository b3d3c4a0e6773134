//! The response cache at intake: what it does for a job ([`decide`]), and a job answered from a
//! stored answer without queueing ([`admit`]).
//!
//! A hit is a job like any other — the same quota, idempotency key, usage record and webhook —
//! written in one transaction: inserted, claimed, and ended by the statement that ends every run
//! ([`tollgate_core::db::runs::finish`]) with the stored answer, billed at its price's cache rate
//! and recording what the answer cost when it was called.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tollgate_core::db::cache::{self, CachedAnswer};
use tollgate_core::db::jobs::{self, NewJob};
use tollgate_core::db::quotas::Limits;
use tollgate_core::db::runs::{self, ClaimRequest, Finish, Hit, Outcome};
use tollgate_core::db::tokens::Principal;
use tollgate_core::domain::cache::{CacheAsk, JobCache, KeyScope};
use tollgate_core::domain::{DataPolicy, Job, JobRequest, TenantId};
use uuid::Uuid;

use super::idempotency::Key;
use super::{Accepted, Admissible, Intake, admission};
use crate::AppState;
use crate::http::error::ApiError;

/// The lease a hit's claim takes: it ends in the same transaction.
const HIT_LEASE: Duration = Duration::from_secs(60);

/// What the response cache does for `request` from `caller`, asked `ask`.
pub fn decide(
    state: &AppState,
    caller: &Principal,
    request: &JobRequest,
    ask: CacheAsk,
) -> JobCache {
    decide_all(state, caller, std::slice::from_ref(request), ask)
        .pop()
        .unwrap_or_default()
}

/// [`decide`] for requests of one model (a batch's items), its route's definition made once;
/// empty when `caller` has no cache.
pub fn decide_all<'a>(
    state: &AppState,
    caller: &Principal,
    requests: impl IntoIterator<Item = &'a JobRequest>,
    ask: CacheAsk,
) -> Vec<JobCache> {
    if caller.cache.is_none_or(|c| !c.enabled) {
        return Vec::new();
    }
    let mut requests = requests.into_iter().peekable();
    let Some(first) = requests.peek() else {
        return Vec::new();
    };
    let route = state
        .runtime
        .current()
        .route_definition(first.model().as_str());
    let scope = KeyScope {
        tenant: caller.tenant_id,
        policy: caller.data_policy,
        route: &route,
    };
    requests
        .map(|request| JobCache::decide(caller.cache, ask, request, scope))
        .collect()
}

/// The stored answer for a job that reads the cache, if there is one.
pub async fn lookup(
    state: &AppState,
    tenant: TenantId,
    cache: &JobCache,
) -> Result<Option<CachedAnswer>, ApiError> {
    let (Some(key), Some(ttl)) = (cache.key, cache.ttl_secs) else {
        return Ok(None);
    };
    let max_age = Duration::from_secs(u64::from(ttl));
    Ok(cache::lookup(&state.pool, tenant, key, max_age).await?)
}

/// Admits `job` answered with `answer`: the job ended as a hit when it is answered, its webhook
/// delivery (if its statement wrote one) handed to the deliverer after the commit.
pub async fn admit(
    state: &AppState,
    caller: &Principal,
    key: Option<&Key>,
    job: NewJob,
    answer: CachedAnswer,
    accepted: impl FnOnce(&Job) -> Result<Accepted, ApiError>,
) -> Result<Intake<Job>, ApiError> {
    let price = state.runtime.current().prices.at(
        answer.provider,
        &answer.routed_model,
        chrono::Utc::now(),
    );
    let hit = HitJob {
        job,
        hit: Hit { answer, price },
        policy: caller.data_policy,
    };
    let intake = super::admit(state, caller, key, hit, |a: &Answered| accepted(&a.job)).await?;
    Ok(match intake {
        Intake::Replayed(first) => Intake::Replayed(first),
        Intake::Admitted { work, answer } => {
            state.metrics.accepted(work.job.kind.as_str(), false, 1);
            if let Some(delivery) = work.delivery
                && let Err(error) = state.broker.publish_webhooks(&[delivery]).await
            {
                tracing::warn!(%error, "webhook publish failed; the sweeper will resend");
            }
            Intake::Admitted {
                work: work.job,
                answer,
            }
        }
    })
}

/// A job to be answered from the cache.
struct HitJob {
    job: NewJob,
    hit: Hit,
    /// The data policy it is recorded under.
    policy: DataPolicy,
}

/// A hit written: the ended job, and its webhook delivery.
struct Answered {
    job: Job,
    delivery: Option<Uuid>,
}

impl Admissible for HitJob {
    type Admitted = Answered;

    fn needs_transaction(&self, _: &Limits) -> bool {
        true
    }

    fn insert<'a>(
        self,
        tx: &'a mut PgConnection,
        limits: &'a Limits,
    ) -> impl Future<Output = Result<Answered, ApiError>> + Send + 'a {
        answered(tx, limits, self)
    }

    async fn stored(
        answered: &Answered,
        tenant_id: TenantId,
        pool: &PgPool,
    ) -> Result<bool, sqlx::Error> {
        jobs::exists(pool, tenant_id, answered.job.id).await
    }
}

/// Inserts the job (its quota reserved, as any job's), claims it and ends it with the stored
/// answer, on the transaction's connection.
async fn answered(
    tx: &mut PgConnection,
    limits: &Limits,
    hit: HitJob,
) -> Result<Answered, ApiError> {
    let HitJob { job, hit, policy } = hit;
    let tenant_id = job.tenant_id;
    let id = admission::admit_in(tx, limits, job).await?.id;
    let claim_id = Uuid::now_v7();
    let claim = ClaimRequest {
        id,
        claim_id,
        redelivered: false,
    };
    let lost = || ApiError::internal(anyhow::anyhow!("a cache hit's job was taken meanwhile"));
    runs::claim(&mut *tx, claim, HIT_LEASE)
        .await?
        .ok_or_else(lost)?;
    let run = Finish {
        id,
        claim_id,
        outcome: Outcome::Hit(Box::new(hit)),
        attempts: Vec::new(),
        policy,
    };
    let recorded = runs::finish(&mut *tx, &run).await?.ok_or_else(lost)?;
    let (job, _) = jobs::get_with_revision(&mut *tx, tenant_id, id)
        .await?
        .ok_or_else(lost)?;
    Ok(Answered {
        job,
        delivery: recorded.delivery,
    })
}
