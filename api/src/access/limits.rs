//! Rate limits held by this api instance: each token's and each tenant's limit (this instance's
//! equal share of it, so that the instances alive together never admit more than the limit), and
//! the throttle on failed authentication per client address.
//!
//! All in memory: a request costs a map lookup, never a database round trip. How many instances
//! share the limits comes from their heartbeats in Postgres, once a second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tollgate_core::db::tokens::Principal;
use tollgate_core::domain::{Decision, RateLimit, TenantId, TokenId};
use tollgate_core::sync::lock;
use uuid::Uuid;

use crate::http::error::{ApiError, ErrorCode};

/// Failed authentications one address may make: 10 at once, then one every 6 s.
const AUTH_FAILURES: RateLimit = RateLimit {
    per_minute: 10,
    burst: 10,
};
/// Beyond this many tracked keys, idle ones are forgotten.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Token(TokenId),
    Tenant(TenantId),
    Failures(IpAddr),
}

#[derive(Default)]
pub struct Limiter {
    arrivals: Mutex<HashMap<Key, Option<Instant>>>,
    /// Api instances alive, this one included.
    instances: AtomicU32,
}

/// What a request's limit looked like, for its `RateLimit-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    limit: RateLimit,
    decision: Decision,
}

impl Limiter {
    /// Checks the tenant's and the token's limits (the tighter answer wins); `Ok` carries the
    /// usage of the limit closest to refusing, if any applies.
    pub fn admit(&self, principal: &Principal) -> Result<Option<Usage>, ApiError> {
        let limits = [
            principal
                .tenant_rate
                .map(|l| (Key::Tenant(principal.tenant_id), l)),
            principal
                .token_rate
                .map(|l| (Key::Token(principal.token_id), l)),
        ];
        let mut closest: Option<Usage> = None;
        for (key, limit) in limits.into_iter().flatten() {
            let usage = self.check(key, limit);
            if !usage.decision.allowed {
                return Err(ApiError::rate_limited(
                    "the request rate limit is exceeded",
                    usage.headers(),
                    usage.decision.retry_after,
                ));
            }
            if closest.is_none_or(|c| usage.decision.remaining < c.decision.remaining) {
                closest = Some(usage);
            }
        }
        Ok(closest)
    }

    /// Whether `ip` is under its limit of failed authentications (a dry run: asking counts nothing).
    pub fn may_authenticate(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(ip) = ip else { return Ok(()) };
        let arrivals = lock(&self.arrivals);
        let mut tat = arrivals.get(&Key::Failures(ip)).copied().flatten();
        // A dry run on a copy: refusing here does not count as another failure.
        let decision = AUTH_FAILURES.check(&mut tat, Instant::now());
        if decision.allowed {
            Ok(())
        } else {
            Err(too_many_failures(decision.retry_after))
        }
    }

    /// Counts a failed authentication from `ip`; the error to answer with if that was one too many.
    pub fn failed_authentication(&self, ip: Option<IpAddr>) -> Option<ApiError> {
        let usage = self.check(Key::Failures(ip?), AUTH_FAILURES);
        (!usage.decision.allowed).then(|| too_many_failures(usage.decision.retry_after))
    }

    fn check(&self, key: Key, limit: RateLimit) -> Usage {
        let share = limit.share(self.instances.load(Ordering::Relaxed));
        let now = Instant::now();
        let mut arrivals = lock(&self.arrivals);
        if arrivals.len() >= MAX_KEYS {
            arrivals.retain(|_, tat| tat.is_some_and(|t| t > now));
        }
        let decision = share.check(arrivals.entry(key).or_default(), now);
        Usage { limit, decision }
    }

    /// Keeps this instance's heartbeat and the count of live instances until `shutdown`, then
    /// leaves, so the others take over its share.
    pub async fn follow_instances(self: Arc<Self>, pool: PgPool, shutdown: CancellationToken) {
        let id = Uuid::now_v7();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            match tollgate_core::db::instances::heartbeat(&pool, id).await {
                Ok(alive) => self
                    .instances
                    .store(u32::try_from(alive).unwrap_or(u32::MAX), Ordering::Relaxed),
                Err(error) => tracing::warn!(%error, "cannot record this instance's heartbeat"),
            }
        }
        if let Err(error) = tollgate_core::db::instances::leave(&pool, id).await {
            tracing::warn!(%error, "cannot remove this instance's heartbeat");
        }
    }

    /// Api instances alive as last counted.
    pub fn instances(&self) -> u32 {
        self.instances.load(Ordering::Relaxed).max(1)
    }
}

impl Usage {
    /// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (IETF draft), for the limit
    /// as configured; remaining and reset are this instance's.
    fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let number = |n: u64| HeaderValue::from(n);
        vec![
            (
                HeaderName::from_static("ratelimit-limit"),
                number(u64::from(self.limit.per_minute)),
            ),
            (
                HeaderName::from_static("ratelimit-remaining"),
                number(u64::from(self.decision.remaining)),
            ),
            (
                HeaderName::from_static("ratelimit-reset"),
                number(self.decision.reset.as_secs_f64().ceil() as u64),
            ),
        ]
    }
}

fn too_many_failures(retry_after: Duration) -> ApiError {
    ApiError::rate_limited(
        "too many failed authentications from this address",
        Vec::new(),
        retry_after,
    )
    .with_code(ErrorCode::TooManyAuthFailures)
}

/// Where an authenticated request's limit usage is left for [`rate_headers`] to put on the answer.
#[derive(Clone, Default)]
pub struct UsageSlot(Arc<Mutex<Option<Usage>>>);

impl UsageSlot {
    pub fn set(&self, usage: Usage) {
        *lock(&self.0) = Some(usage);
    }
}

/// Middleware: gives the request a [`UsageSlot`] and copies what the authentication left there
/// onto the response as `RateLimit-*` headers.
pub async fn rate_headers(mut request: Request, next: Next) -> Response {
    let slot = UsageSlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    let usage = *lock(&slot.0);
    if let Some(usage) = usage {
        for (name, value) in usage.headers() {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
