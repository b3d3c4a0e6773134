//! Tollgate's worker: consumes job messages, claims each job, runs it down the provider chain
//! the runtime settings give (active → fallback, retries, circuit breakers), records the outcome
//! and only then acks; a job whose providers all failed transiently waits in a delay queue for
//! another run. A streaming job's text is relayed to the api as the provider writes it, and a
//! cancel stops a running job. Calls to the fleet's Ollama hosts hold one of the host's slots,
//! shared by every worker, so a host never serves more calls at once than it has slots. Batch items wait in Postgres until its dispatcher releases them, fairly, to a bulk
//! queue consumed in slots of its own. It also delivers webhooks (signed, retried on a schedule), sweeps up jobs and
//! deliveries whose publish never happened, and fails jobs whose messages the broker dead-lettered.
//! Each job's run continues the W3C trace its message carries, and the worker keeps Prometheus
//! metrics that its own listener serves ([`probe`], with `/healthz` and `/readyz`).
//!
//! [`run`] takes its dependencies (pool, broker, settings) and a shutdown token, so the binary
//! and the tests run the same code.
//!
//! Its modules:
//! - `consumer`: the job queues' subscriptions, one task per delivery;
//! - `execute`: one delivery start to finish — `mod` (claim, run, record, tell, ack), `verdict`
//!   (what a run's end means: finish or park, and its prices), `tell` (events, webhooks, the
//!   delayed message), `halt` (writing until the database takes it), `images` (a job's images
//!   fetched once and loaded for its calls), `cached` (the response cache at the claim: a stored
//!   answer, the key's flight, or waiting; a leader's waiters answered or one promoted);
//! - `sweeper` also settles the jobs waiting on a leader that is gone;
//! - `runs`: claims and run ends coalesced into one statement each;
//! - `providers`: each cloud account's client, limits and circuit, and the plan for a job from the
//!   runtime settings; `chain` (`mod` down the plan's steps, `terms`, `ready` waiting for a permit
//!   or a host's slot, `call` one provider call); `retry`, `circuit`, `refusals` (what a host's or
//!   an account's models refused lately); `fleet` (each host's client, circuit and models;
//!   `slots/` taking slots across workers);
//! - `relay`: a streaming job's text to the api; `cancels`: cancels for running jobs;
//! - `abandoned`: estimated attempts of runs whose worker died;
//! - `sweeper` (unpublished jobs and deliveries, expired leases, partition upkeep),
//!   `dead_letters` (jobs the broker gave up on), `dispatcher` (batch items released fairly),
//!   `priority` (single jobs before batch items);
//! - `webhooks`: the deliverer (`deliver`, `attempt`);
//! - `metrics` (`mod`, `labels`, `backlog`), `probe` (`/metrics`, `/healthz`, `/readyz`),
//!   `health` (this worker's report to the dashboard: providers, circuits, slots, jobs finished);
//! - `cli`: the configuration and start-up of `tollgate-worker` (and `expire`).

mod abandoned;
mod cancels;
mod chain;
mod circuit;
pub mod cli;
mod consumer;
mod dead_letters;
mod dispatcher;
mod execute;
mod fleet;
mod health;
mod metrics;
mod priority;
mod probe;
mod providers;
mod refusals;
mod relay;
mod retry;
mod runs;
mod sweeper;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tollgate_core::image_fetch::{ImageFetcher, ImageLimits};
use tollgate_core::metrics::ScrapeGuard;
use tollgate_core::process::Tasks;
use tollgate_core::queue::Broker;
use tollgate_core::runtime::RuntimeWatch;
use tollgate_core::secret::SecretKey;

pub use crate::fleet::Fleet;
pub use crate::providers::{Plan, Providers};
pub use crate::webhooks::WebhookSettings;

/// Tuning of one worker process.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Most single jobs this process runs at once (also the interactive queue's prefetch).
    pub concurrency: usize,
    /// Most batch items this process runs at once (also the bulk queue's prefetch), in slots of
    /// their own so that single jobs never wait behind a batch.
    pub bulk_concurrency: usize,
    /// How many released, unclaimed batch items the dispatcher keeps in the bulk queue.
    pub bulk_depth: usize,
    /// While single jobs are running here, how many batch items may do their database work at
    /// once (0: batch items never yield). See [`priority`].
    pub bulk_yield_turns: usize,
    /// How long a claim is trusted before the sweeper presumes its worker dead. Longer than the
    /// slowest provider call.
    pub lease: Duration,
    /// A job claimed more often than this (its workers kept dying) fails with `internal_error`.
    pub max_claims: i32,
    /// How often the sweeper looks for unpublished and abandoned jobs.
    pub sweep_every: Duration,
    /// How old an unconfirmed `queued` job must be before the sweeper republishes it.
    pub sweep_after: Duration,
    /// How often the sweeper prepares the days ahead and drops expired partitions (see
    /// `tollgate_core::db::partitions`); also once at start.
    pub expire_every: Duration,
    /// How long shutdown waits for in-flight jobs before abandoning them to redelivery.
    pub shutdown_grace: Duration,
    /// Longest one provider call may take.
    pub provider_timeout: Duration,
    /// How often each Ollama host's models are listed (its circuit learns from failed listings).
    pub probe_every: Duration,
    /// How long a held host slot is good for without renewal: a worker that dies gives its slots
    /// back after this (a live one renews every third of it).
    pub slot_lease: Duration,
    /// How often the runtime settings are checked for changes.
    pub settings_refresh: Duration,
    /// How long past its due time a `retrying` job's delayed message may be missing before the
    /// sweeper sends the job again.
    pub retry_overdue: Duration,
    /// Opens the stored OpenAI key and webhook secrets; without it OpenAI is unavailable and
    /// webhooks cannot be signed.
    pub secret_key: Option<SecretKey>,
    /// How webhooks are delivered.
    pub webhooks: WebhookSettings,
    /// How big, how slow and where from a batch item's image URLs may be.
    pub images: ImageLimits,
    /// The bearer token the probe's `/metrics` asks for, if any.
    pub metrics_token: Option<secrecy::SecretString>,
    /// How often the backlog (queue depths, oldest waiting work) is sampled for the metrics, and
    /// how often the worker reports its providers and finished jobs to the dashboard.
    pub backlog_every: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 64,
            bulk_concurrency: 48,
            bulk_depth: 256,
            bulk_yield_turns: 2,
            lease: Duration::from_secs(180),
            max_claims: 5,
            sweep_every: Duration::from_secs(5),
            sweep_after: Duration::from_secs(10),
            expire_every: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(30),
            provider_timeout: Duration::from_secs(120),
            probe_every: Duration::from_secs(10),
            slot_lease: Duration::from_secs(15),
            settings_refresh: Duration::from_secs(1),
            retry_overdue: Duration::from_secs(60),
            secret_key: None,
            webhooks: WebhookSettings::default(),
            images: ImageLimits {
                max_bytes: tollgate_core::domain::conversation::DEFAULT_MAX_IMAGE_BYTES,
                timeout: Duration::from_secs(10),
                reach: tollgate_core::webhook::Reach::Public,
            },
            metrics_token: None,
            backlog_every: Duration::from_secs(5),
        }
    }
}

/// What every job handler shares.
struct Context {
    pool: PgPool,
    /// Claims and ends of runs, each kind coalesced into one statement.
    runs: runs::Runs,
    broker: Broker,
    providers: Providers,
    webhook_client: reqwest::Client,
    /// Fetches a batch item's images before its first call.
    image_fetcher: ImageFetcher,
    priority: priority::Priority,
    /// The runs a cancel can reach.
    cancels: cancels::Cancels,
    settings: WorkerSettings,
    shutdown: CancellationToken,
    metrics: Arc<metrics::WorkerMetrics>,
}

/// Runs the consumers, the sweeper and the settings follower until `shutdown`, then gives
/// in-flight jobs `shutdown_grace` to finish. Jobs still running then are abandoned unacked: once
/// the caller closes the broker connection, RabbitMQ redelivers them to another worker. Fails only
/// if the runtime settings cannot be read at start. With a `probe` listener it serves `/metrics`,
/// `/healthz` and `/readyz` there (see [`probe`]).
pub async fn run(
    pool: PgPool,
    broker: Broker,
    settings: WorkerSettings,
    probe: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), sqlx::Error> {
    let runtime = RuntimeWatch::load(pool.clone()).await?;
    let mut tasks = Tasks::default();
    let providers = start_providers(&pool, runtime, &settings, &mut tasks, &shutdown);
    let metrics = Arc::new(metrics::WorkerMetrics::default());
    let postgres = Arc::new(AtomicBool::new(false));
    let probe = probe.and_then(|listener| {
        tasks.spawn(
            "backlog sampler",
            metrics::backlog::sample(
                metrics.clone(),
                pool.clone(),
                broker.clone(),
                settings.backlog_every,
                postgres.clone(),
                shutdown.clone(),
            ),
        );
        let probe = probe::Probe {
            metrics: metrics.clone(),
            providers: providers.clone(),
            broker: broker.clone(),
            guard: ScrapeGuard::new(settings.metrics_token.as_ref()),
            postgres,
        };
        probe::spawn(listener, probe, shutdown.clone())
            .inspect_err(|error| tracing::error!(%error, "cannot start the worker probe"))
            .ok()
    });
    // Reported once more after the last job in flight ended, so its end is counted too.
    let reported = CancellationToken::new();
    tasks.spawn(
        "health",
        health::report(
            providers.clone(),
            metrics.clone(),
            pool.clone(),
            settings.backlog_every,
            reported.clone(),
        ),
    );
    let context = Arc::new(Context {
        runs: runs::Runs::start(&pool, settings.lease, &mut tasks),
        pool,
        broker,
        providers,
        metrics,
        webhook_client: webhooks::client(&settings.webhooks),
        image_fetcher: ImageFetcher::new(settings.images.clone()),
        priority: priority::Priority::new(settings.bulk_yield_turns),
        cancels: cancels::Cancels::default(),
        settings,
        shutdown: shutdown.clone(),
    });
    let cancels = context.cancels.clone();
    tasks.spawn("cancels", cancels.follow(context.broker.clone(), shutdown));
    tasks.spawn("sweeper", sweeper::run(context.clone()));
    tasks.spawn("dead letters", dead_letters::run(context.clone()));
    tasks.spawn("webhooks", webhooks::run(context.clone()));
    tasks.spawn("dispatcher", dispatcher::run(context.clone()));
    consumer::run(context).await;
    reported.cancel();
    // Each task that panicked is logged by name; the worker still ends as asked.
    let _panicked = tasks.join().await;
    if let Some(probe) = probe {
        let joined = tokio::task::spawn_blocking(move || probe.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!(task = "probe", "worker task panicked");
        }
    }
    Ok(())
}

/// The providers the settings name, with the tasks that keep them current: the fleet's slots,
/// the settings themselves, each provider's health and models.
fn start_providers(
    pool: &PgPool,
    runtime: RuntimeWatch,
    settings: &WorkerSettings,
    tasks: &mut Tasks,
    shutdown: &CancellationToken,
) -> Providers {
    let (fleet, fleet_tasks) = Fleet::new(
        pool.clone(),
        &runtime.current(),
        settings.slot_lease,
        settings.provider_timeout,
        settings.secret_key.clone(),
    );
    tasks.spawn(
        "host slots",
        fleet_tasks.run(fleet.clone(), shutdown.clone()),
    );
    let providers = Providers::new(
        runtime.clone(),
        fleet,
        settings.secret_key.clone(),
        settings.provider_timeout,
    );
    tasks.spawn(
        "settings",
        runtime.keep_fresh(settings.settings_refresh, shutdown.clone()),
    );
    tasks.spawn(
        "providers",
        providers
            .clone()
            .keep_fresh(settings.probe_every, shutdown.clone()),
    );
    providers
}
