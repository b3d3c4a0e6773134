//! Tollgate's core: the domain, and the database, queue and provider access that the api and the
//! worker act through.
//!
//! - [`domain`]: the vocabulary, parsed once at the edge — `ids` (typed ids), `job` (`Job`,
//!   `JobStatus`, `JobKind`, `Role`), `job_error` (`JobErrorCode`, every code a job can fail
//!   with, and its `FailureClass`), `request` (validated requests), `conversation` (one model of
//!   a chat whatever its dialect: messages of parts — text, images, tool calls and results —,
//!   tools, tool choice, the answer's format and its check, the reply with its tool calls and
//!   reasoning), `reasoning` (how much a model reasons, mapped between dialects), `anthropic`
//!   (what an Anthropic request carries beyond the conversation, and the gateway's reasoning
//!   signatures), `cache` (the response cache's policy, a request's ask and its key),
//!   `capability`
//!   (what a model can do), `batch` (a batch's items,
//!   templates), `openai_batch` (the Batch API endpoints a batch stores), `settings` (`Settings`,
//!   `Strategy`, `ModelRoutes`, `Runtime`), `prices` (the prices in force), `fleet` (hosts and
//!   their slots), `routing` (`Runtime::route`, `DataPolicy`, `RouteReason`), `access` (allowed
//!   domains and addresses), `rate` (the rate limiter's arithmetic), `name` (the name rule of
//!   tenants and tokens), `json` (NUL characters, JSONL syntax errors), `trace` (`TraceParent`);
//! - [`billing`]: what a call costs at a price, and token estimates;
//! - [`config`]: the environment both binaries read;
//! - [`db`]: every SQL statement, one module per table — `jobs/` (intake and reads; `cancel`,
//!   `sweep`, `dead_letters`), `runs/` (`claim`; `outcome`, how a run ended; `finish`, the one
//!   statement that ends runs, a job's end or its park), `job_attempts`, `batches/` (`cancel`,
//!   `results`), `dispatch` (what the dispatcher releases), `files`, `settings`, `model_routes`,
//!   `prices`, `quotas`, `usage`, `tenants`, `tokens`, `access`, `audit`, `idempotency`, `cache`
//!   (stored answers, a key's flight and the jobs waiting on it),
//!   `images`, `instances`, `hosts`, `host_models`, `host_slots`, `webhooks/` (`endpoints`,
//!   `deliveries`, `attempts`),
//!   `backlog`, `activity`, `workers`, `partitions` (the time partitions, prepared and dropped);
//! - [`queue`]: RabbitMQ, the only module that names lapin — `topology` (every exchange and
//!   queue), `broker` (the supervised connection, publishing with confirms), `outgoing` (work
//!   messages and their trace), `message` (the versioned messages), `subscription` (durable
//!   queues read with acks: `Subscription`, `Delivery`), `hints` (per-connection hint queues);
//! - [`provider`]: the upstream clients — `http` (the shared client, classifying failures),
//!   `ollama`, `openai`, `anthropic`, `ollama_messages` and `openai_messages` (a conversation in
//!   each one's form), `openai_answers` (OpenAI's answers read), `anthropic_messages` (Anthropic's
//!   bodies written and answers read), `anthropic_wire` (Anthropic's wire types, which the
//!   `/anthropic` surface speaks too), `ollama_models` (list, pull, delete), `error`
//!   (`ProviderError`, its code a `JobErrorCode`);
//! - [`runtime`]: the operator's settings and model routes, held in memory and kept fresh;
//! - [`secret`]: sealing provider keys for storage;
//! - [`token`]: API token generation and hashing;
//! - [`webhook`]: `signature` (Standard Webhooks), `target` (the SSRF guard), `schedule` (retries);
//! - [`image_fetch`]: fetching an image a client gave by URL, through the same guard;
//! - [`metrics`]: what the api's and the worker's `/metrics` share (exposition, token, buckets);
//! - [`telemetry`]: logs, and spans over OTLP when configured, with the job's W3C trace;
//! - [`process`]: shutdown, start-up and the background tasks of the binaries (`Tasks`);
//! - [`sync`]: locks that outlive a panicked holder;
//! - [`coalesce`]: group commit, work that arrives together done in one round trip.

pub mod billing;
pub mod coalesce;
pub mod config;
pub mod db;
pub mod domain;
pub mod image_fetch;
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
