//! Who may call, and how often: bearer tokens and their cache, the admin role, allowed domains
//! and addresses ([`auth`]); rate limits and the failed-authentication throttle ([`limits`]).

pub mod auth;
pub mod limits;
