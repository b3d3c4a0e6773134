//! The connection and request plumbing every route stands on: the server loop and its
//! connection limits, hyper's own error answers, body deadlines, extractors, the client's
//! address, typed ids in paths, the one problem+json error type, `Prefer`, event-stream pieces,
//! each request's trace and metrics, and the gate that answers 503 while Postgres is down.

pub mod client;
pub mod database;
pub mod error;
pub mod error_code;
pub mod extract;
pub mod head_errors;
pub mod metrics;
pub mod path;
pub mod prefer;
pub mod request_body;
pub mod server;
pub mod sse;
pub mod trace;
