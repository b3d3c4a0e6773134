//! End-to-end tests: the real api and worker in-process, over real Postgres and RabbitMQ, with
//! provider-sim as the upstream. Every test gets its own database and queue prefix.
//!
//! Its modules: `harness` (the test stack, the proxies that cut connections, the one raw-broker
//! helper); intake and its rules — `intake`, `bad_input`, `hardening`, `access`, `limits`,
//! `idempotency`, `tenants`, `secrets`, `unserved` (requests no provider can serve); running jobs
//! — `providers`, `resolution`, `fleet`, `compatible_hosts` (OpenAI-compatible servers in the
//! fleet), `models`, `delivery`, `coalescing`, `outages`, `lost_commit` (statements whose commit answer
//! the connection lost); what comes back — `events`, `streaming`, `webhooks`, `billing`,
//! `retention`, the response cache — `cache`; bulk work — `batches`, `cli`, `openai_batches`; the drop-in surfaces through the
//! official Python packages — `calls`, Anthropic's dialect (and Claude Code) — `anthropic`, and tool calls and structured answers through every surface
//! and provider — `tools`; observing — `metrics`, `traces`, `dashboard`; the document —
//! `openapi`; and `sim` (provider-sim's own wire formats).
#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking, its message saying what was expected"
)]
#![expect(
    clippy::disallowed_methods,
    reason = "tests spawn servers and load that end with the test, not at a process's shutdown"
)]

mod access;
mod anthropic;
mod bad_input;
mod batches;
mod billing;
mod cache;
mod calls;
mod capabilities;
mod choices;
mod cli;
mod coalescing;
mod compatible_hosts;
mod dashboard;
mod delivery;
mod events;
mod fleet;
mod hardening;
mod harness;
mod idempotency;
mod images;
mod intake;
mod limits;
mod lost_commit;
mod metrics;
mod models;
mod openai_batches;
mod openapi;
mod outages;
mod providers;
mod reasoning;
mod registry;
mod resolution;
mod retention;
mod secrets;
mod sim;
mod streaming;
mod tenants;
mod tools;
mod traces;
mod unserved;
mod webhooks;
