//! Where a request comes from: its `Origin` (or `Referer`) host and the client's address, checked
//! against a token's access rules and recorded with each job for billing (the seed's log fields),
//! and the trace it belongs to.
//!
//! The address is the TCP peer, or, when the peer is a configured trusted proxy
//! (`TOLLGATE_TRUSTED_PROXIES`), the client address it forwarded (`Forwarded`, else
//! `X-Forwarded-For`). Forwarded headers from any other peer are ignored.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use sqlx::types::ipnetwork::IpNetwork;
use tollgate_core::domain::cache::CacheAsk;
use tollgate_core::domain::{TraceParent, client_ip};

use crate::AppState;

/// Longest origin host kept.
const MAX_ORIGIN_CHARS: usize = 255;

pub struct ClientInfo {
    pub origin: Option<String>,
    pub ip: Option<IpAddr>,
    /// The request's place in its trace (see [`crate::http::trace`]), stored with what it submits.
    pub trace: Option<TraceParent>,
    /// What its `Cache-Control` asks of the response cache (`no-cache`, `no-store`, `max-age`).
    pub cache: CacheAsk,
}

impl ClientInfo {
    pub fn of(parts: &Parts, trusted_proxies: &[IpNetwork]) -> Self {
        let origin = [header::ORIGIN, header::REFERER]
            .iter()
            .filter_map(|name| parts.headers.get(name)?.to_str().ok())
            .find_map(|value| url::Url::parse(value).ok()?.host_str().map(str::to_owned))
            .filter(|host| host.len() <= MAX_ORIGIN_CHARS);
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| {
                client_ip(
                    addr.ip(),
                    header("forwarded"),
                    header("x-forwarded-for"),
                    trusted_proxies,
                )
            });
        let trace = parts.extensions.get::<TraceParent>().copied();
        let cache = header("cache-control").map_or_else(CacheAsk::default, CacheAsk::of_header);
        Self {
            origin,
            ip,
            trace,
            cache,
        }
    }
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts, &state.trusted_proxies))
    }
}
