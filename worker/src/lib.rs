//! Tollgate's worker: consumes job messages, claims each job, calls a provider, records the
//! outcome and only then acks. It also sweeps up jobs whose publish never happened and fails
//! jobs whose messages the broker dead-lettered.
//!
//! [`run`] takes its dependencies (pool, broker, providers) and a shutdown token, so the binary
//! and the tests run the same code.

pub mod cli;
mod consumer;
mod dead_letters;
mod execute;
mod providers;
mod sweeper;

use std::sync::Arc;
use std::time::Duration;

use shared::queue::Broker;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use providers::ProviderSelector;

/// Tuning of one worker process.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Most jobs this process runs at once (also its prefetch).
    pub concurrency: usize,
    /// How long a claim is trusted before the sweeper presumes its worker dead. Longer than the
    /// slowest provider call.
    pub lease: Duration,
    /// A job claimed more often than this (its workers kept dying) fails with `internal_error`.
    pub max_claims: i32,
    /// How often the sweeper looks for unpublished and abandoned jobs.
    pub sweep_every: Duration,
    /// How old an unconfirmed `queued` job must be before the sweeper republishes it.
    pub sweep_after: Duration,
    /// How long shutdown waits for in-flight jobs before abandoning them to redelivery.
    pub shutdown_grace: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 64,
            lease: Duration::from_secs(180),
            max_claims: 5,
            sweep_every: Duration::from_secs(5),
            sweep_after: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// What every job handler shares.
struct Context {
    pool: PgPool,
    providers: ProviderSelector,
    settings: WorkerSettings,
    shutdown: CancellationToken,
}

/// Runs the consumers and the sweeper until `shutdown`, then gives in-flight jobs
/// `shutdown_grace` to finish. Jobs still running then are abandoned unacked: once the caller
/// closes the broker connection, RabbitMQ redelivers them to another worker.
pub async fn run(
    pool: PgPool,
    broker: Broker,
    providers: ProviderSelector,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) {
    let context = Arc::new(Context {
        pool,
        providers,
        settings,
        shutdown: shutdown.clone(),
    });
    let probe = tokio::spawn(context.providers.clone().keep_fresh(shutdown.clone()));
    let sweeper = tokio::spawn(sweeper::run(context.clone(), broker.clone()));
    let dead_letters = tokio::spawn(dead_letters::run(context.clone(), broker.clone()));
    consumer::run(context, broker).await;
    for (name, task) in [
        ("probe", probe),
        ("sweeper", sweeper),
        ("dead letters", dead_letters),
    ] {
        if let Err(error) = task.await {
            tracing::error!(%error, task = name, "worker task panicked");
        }
    }
}
