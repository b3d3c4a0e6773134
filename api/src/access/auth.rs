//! Bearer-token authentication: the [`Caller`] and [`Admin`] extractors and a short-lived cache of
//! valid tokens.
//!
//! The cache keeps the hot path free of a database round trip per request; its one-second lifetime
//! bounds how long a revoked token keeps working on any api instance. Every request is then held
//! to its token's access rules (allowed domains and networks). Failed authentications are
//! throttled per address, but a valid token is always admitted: the throttle answers failures.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use tollgate_core::db::tokens::{self, Principal};
use tollgate_core::domain::{Denied, Role};

use crate::AppState;
use crate::access::limits::UsageSlot;
use crate::http::client::ClientInfo;
use crate::http::error::{ApiError, ErrorCode};

/// How long a validated token is trusted without asking Postgres again.
const CACHE_TTL: Duration = Duration::from_secs(1);
/// Beyond this many cached tokens the cache starts over, bounding its memory.
const CACHE_CAPACITY: usize = 100_000;

#[derive(Default)]
pub struct TokenCache {
    entries: RwLock<HashMap<[u8; 32], (Principal, Instant)>>,
    /// Tokens refused a moment ago: a client hammering with a revoked token, once its address is
    /// throttled, is refused from memory.
    refused: RwLock<HashMap<[u8; 32], Instant>>,
}

impl TokenCache {
    fn refused_recently(&self, hash: &[u8; 32]) -> bool {
        let refused = tollgate_core::sync::read(&self.refused);
        refused.get(hash).is_some_and(|at| at.elapsed() < CACHE_TTL)
    }

    fn refuse(&self, hash: [u8; 32]) {
        let mut refused = tollgate_core::sync::write(&self.refused);
        if refused.len() >= CACHE_CAPACITY {
            refused.retain(|_, at| at.elapsed() < CACHE_TTL);
        }
        refused.insert(hash, Instant::now());
    }

    fn get(&self, hash: &[u8; 32]) -> Option<Principal> {
        let entries = tollgate_core::sync::read(&self.entries);
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(principal, _)| principal.clone())
    }

    fn put(&self, hash: [u8; 32], principal: Principal) {
        let mut entries = tollgate_core::sync::write(&self.entries);
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        }
        entries.insert(hash, (principal, Instant::now()));
    }
}

/// The authenticated caller of a request.
pub struct Caller(pub Principal);

/// Anthropic's clients send their key as `x-api-key` (and Claude Code sends both, alike).
static API_KEY: header::HeaderName = header::HeaderName::from_static("x-api-key");

/// The token a request carries: `Authorization: Bearer <token>`, or else `x-api-key: <token>`.
fn secret(headers: &header::HeaderMap) -> Result<&str, ApiError> {
    let missing = || {
        ApiError::unauthorized(
            ErrorCode::MissingToken,
            "send `Authorization: Bearer <token>` (or `x-api-key: <token>`)",
        )
    };
    let Some(authorization) = headers.get(header::AUTHORIZATION) else {
        let key = headers.get(&API_KEY).ok_or_else(missing)?;
        return key
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(missing);
    };
    authorization
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized(
                ErrorCode::MissingToken,
                "the Authorization header must be `Bearer <token>`",
            )
        })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let secret = secret(&parts.headers)?;
        let client = ClientInfo::of(parts, &state.trusted_proxies);
        let hash = tollgate_core::token::hash(secret);
        let principal = match state.tokens.get(&hash) {
            Some(principal) => principal,
            None => {
                // The throttle is on what fails, never on what is valid: a good token is looked up
                // and admitted whatever its address's neighbours (behind the same NAT) got wrong.
                // Only a token refused a moment ago is refused from memory while throttled.
                if state.tokens.refused_recently(&hash) {
                    state.limiter.may_authenticate(client.ip)?;
                }
                let Some(principal) = tokens::authenticate(&state.pool, &hash).await? else {
                    state.tokens.refuse(hash);
                    if let Some(throttled) = state.limiter.failed_authentication(client.ip) {
                        return Err(throttled);
                    }
                    return Err(ApiError::unauthorized(
                        ErrorCode::InvalidToken,
                        "the token is unknown or revoked",
                    ));
                };
                state.tokens.put(hash, principal.clone());
                principal
            }
        };
        principal
            .access
            .check(client.origin.as_deref(), client.ip)
            .map_err(denied)?;
        if let Some(usage) = state.limiter.admit(&principal)?
            && let Some(slot) = parts.extensions.get::<UsageSlot>()
        {
            slot.set(usage);
        }
        Ok(Self(principal))
    }
}

/// A request its token's access rules refuse, as a 403 naming the rule.
fn denied(denied: Denied) -> ApiError {
    match denied {
        Denied::OriginRequired => ApiError::denied(
            ErrorCode::OriginRequired,
            "this token may only be used from its allowed domains: send Origin or Referer",
        ),
        Denied::OriginNotAllowed(host) => ApiError::denied(
            ErrorCode::OriginNotAllowed,
            format!("this token may not be used from {host}"),
        ),
        Denied::IpNotAllowed(ip) => ApiError::denied(
            ErrorCode::IpNotAllowed,
            format!("this token may not be used from the address {ip}"),
        ),
    }
}

/// An authenticated caller with the `admin` role; a `client` token gets 403.
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Caller(principal) = Caller::from_request_parts(parts, state).await?;
        if principal.role != Role::Admin {
            return Err(ApiError::forbidden("this route needs an admin token"));
        }
        Ok(Self(principal))
    }
}
