//! Tollgate's core: the domain, and the database, queue and provider access that the api and the
//! worker act through.
//!
//! - [`domain`]: jobs, tenants, roles, settings and validated request types;
//! - [`billing`]: cost arithmetic and token estimates;
//! - [`config`]: the environment both binaries read;
//! - [`db`]: every SQL statement, one module per table;
//! - [`queue`]: the RabbitMQ topology, connection supervision and publishing;
//! - [`provider`]: the Ollama and OpenAI clients and how their failures are classified;
//! - [`runtime`]: the operator's settings and model routes, held in memory and kept fresh;
//! - [`secret`]: sealing the OpenAI key for storage;
//! - [`token`]: API token generation and hashing;
//! - [`webhook`]: signatures, the SSRF guard and the retry schedule of webhook deliveries;
//! - [`metrics`]: what the api's and the worker's `/metrics` share (exposition, token, buckets);
//! - [`telemetry`]: logs, and spans over OTLP when configured, with the job's W3C trace;
//! - [`process`]: shutdown, start-up and the background tasks of the binaries;
//! - [`sync`]: locks that outlive a panicked holder;
//! - [`coalesce`]: group commit, work that arrives together done in one round trip.

pub mod billing;
pub mod coalesce;
pub mod config;
pub mod db;
pub mod domain;
pub mod metrics;
pub mod process;
pub mod provider;
pub mod queue;
pub mod runtime;
pub mod secret;
pub mod sync;
pub mod telemetry;
pub mod token;
pub mod webhook;
