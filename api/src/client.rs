//! Where a request comes from: its `Origin` (or `Referer`) host and the client's address, recorded
//! with each job for billing (the seed's log fields).
//!
//! The address is the TCP peer; forwarded headers are not trusted here.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use crate::AppState;

/// Longest origin host kept.
const MAX_ORIGIN_CHARS: usize = 255;

pub struct ClientInfo {
    pub origin: Option<String>,
    pub ip: Option<IpAddr>,
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        let origin = [header::ORIGIN, header::REFERER]
            .iter()
            .filter_map(|name| parts.headers.get(name)?.to_str().ok())
            .find_map(|value| url::Url::parse(value).ok()?.host_str().map(str::to_owned))
            .filter(|host| host.len() <= MAX_ORIGIN_CHARS);
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Ok(Self { origin, ip })
    }
}
