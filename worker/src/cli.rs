//! `tollgate-worker`'s configuration and start-up.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tollgate_core::config::{ImageConfig, InfraConfig, ProviderConfig, WebhookConfig};
use tollgate_core::process::Tasks;
use tollgate_core::queue::{Broker, Topology};

use crate::{WebhookSettings, WorkerSettings};

#[derive(Debug, Parser)]
#[command(name = "tollgate-worker", version, about = "Tollgate's job worker")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub infra: InfraConfig,

    #[command(flatten)]
    pub providers: ProviderConfig,

    /// Most jobs this worker runs at once.
    #[arg(long, env = "TOLLGATE_WORKER_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,

    /// Most batch items this worker runs at once, besides its single jobs: batch items never take
    /// the slots single jobs need.
    #[arg(long, env = "TOLLGATE_BULK_CONCURRENCY", default_value_t = 48)]
    pub bulk_concurrency: usize,

    /// How many released batch items the dispatcher keeps waiting in the bulk queue: enough to
    /// keep every worker busy, few enough that a new batch gets its turn soon.
    #[arg(long, env = "TOLLGATE_BULK_DEPTH", default_value_t = 256)]
    pub bulk_depth: usize,

    /// While single jobs are running, how many batch items may claim or record an outcome at once
    /// (their provider calls are not held back); 0 lets batch items never yield.
    #[arg(long, env = "TOLLGATE_BULK_YIELD_TURNS", default_value_t = 2)]
    pub bulk_yield_turns: usize,

    /// How often the worker lists each Ollama host's models (`/api/tags`, also its health
    /// probe), in seconds.
    #[arg(long, env = "TOLLGATE_PROBE_EVERY_SECS", default_value_t = 10)]
    pub probe_every_secs: u64,

    /// How long a held host slot stays held without renewal, in seconds: a worker that dies gives
    /// its slots back after this (a live one renews every third of it).
    #[arg(long, env = "TOLLGATE_SLOT_LEASE_SECS", default_value_t = 15)]
    pub slot_lease_secs: u64,

    /// How often the sweeper runs, in seconds.
    #[arg(long, env = "TOLLGATE_SWEEP_EVERY_SECS", default_value_t = 5)]
    pub sweep_every_secs: u64,

    /// How long shutdown waits for running jobs, in seconds.
    #[arg(long, env = "TOLLGATE_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    #[command(flatten)]
    pub webhooks: WebhookConfig,

    #[command(flatten)]
    pub images: ImageConfig,

    /// Longest a webhook receiver may take to answer, in seconds.
    #[arg(long, env = "TOLLGATE_WEBHOOK_TIMEOUT_SECS", default_value_t = 15)]
    pub webhook_timeout_secs: u64,

    /// Where the worker serves `/metrics`, `/healthz` and `/readyz` (e.g. `0.0.0.0:9091`);
    /// unset, it listens on no port.
    #[arg(long, env = "TOLLGATE_WORKER_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,

    /// Most webhook deliveries this worker attempts at once.
    #[arg(long, env = "TOLLGATE_WEBHOOK_CONCURRENCY", default_value_t = 32)]
    pub webhook_concurrency: usize,
}

/// What else the binary can do than run the worker.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Prepares the time partitions a week ahead and drops those expired under the runtime
    /// settings' `job_retention_days` and `usage_retention_days`, once, then exits (the sweeper
    /// of every running worker does the same every hour).
    Expire,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let pool =
        tollgate_core::process::connect_database(&cli.infra.database_url, cli.infra.db_pool_size)
            .await
            .context("cannot open the database")?;
    if let Some(Command::Expire) = cli.command {
        return expire(&pool).await;
    }
    let secret_key = cli.providers.seed_settings(&pool).await?;
    let timeout = Duration::from_secs(cli.providers.provider_timeout_secs);
    let settings = WorkerSettings {
        concurrency: cli.concurrency.max(1),
        bulk_concurrency: cli.bulk_concurrency.max(1),
        bulk_depth: cli.bulk_depth.max(1),
        bulk_yield_turns: cli.bulk_yield_turns,
        // A claim outlives the slowest provider call by a minute; longer runs renew it.
        lease: timeout + Duration::from_secs(60),
        sweep_every: Duration::from_secs(cli.sweep_every_secs.max(1)),
        shutdown_grace: Duration::from_secs(cli.shutdown_grace_secs),
        provider_timeout: timeout,
        probe_every: Duration::from_secs(cli.probe_every_secs.max(1)),
        slot_lease: Duration::from_secs(cli.slot_lease_secs.max(1)),
        settings_refresh: Duration::from_millis(cli.providers.settings_refresh_ms.max(10)),
        secret_key,
        webhooks: WebhookSettings {
            timeout: Duration::from_secs(cli.webhook_timeout_secs.max(1)),
            concurrency: cli.webhook_concurrency.max(1),
            allow_private: cli.webhooks.webhook_allow_private,
            ..WebhookSettings::default()
        },
        images: cli.images.limits(),
        metrics_token: cli.infra.metrics_token.clone(),
        ..WorkerSettings::default()
    };

    let shutdown = tollgate_core::process::shutdown_on_signal();
    // The connection outlives the worker's own shutdown, so jobs finishing in the grace period
    // can still ack; it closes once they are done.
    let connection = CancellationToken::new();
    let broker = Broker::new(
        &cli.infra.amqp_url,
        Topology::new(&cli.infra.queue_prefix),
        "tollgate-worker",
    );
    let probe = match cli.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?,
        ),
        None => None,
    };
    let mut supervisor = Tasks::default();
    supervisor.spawn(
        "broker supervisor",
        broker.clone().supervise(connection.clone()),
    );
    let outcome = crate::run(pool, broker, settings, probe, shutdown).await;
    connection.cancel();
    supervisor.join().await?;
    outcome.context("cannot read the runtime settings")
}

/// `tollgate-worker expire`: one maintenance of the partitions, reported on standard output.
#[expect(clippy::print_stdout, reason = "a command's report is its output")]
async fn expire(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let retention = tollgate_core::db::settings::get(pool).await?.retention;
    let done = tollgate_core::db::partitions::maintain(
        pool,
        chrono::Utc::now(),
        retention,
        Some(tollgate_core::db::partitions::DAYS_AHEAD),
    )
    .await?
    .context("another process is keeping the partitions now; try again in a moment")?;
    let list = |names: &[String]| match names {
        [] => "none".to_owned(),
        names => names.join(", "),
    };
    println!(
        "jobs kept {} days, usage {} days\ncreated: {}\ndropped: {}\nexpired but held by jobs in flight: {}",
        retention.job_days,
        retention.usage_days,
        list(&done.created),
        list(&done.dropped),
        list(&done.held),
    );
    if let Some(error) = done.unprepared {
        anyhow::bail!("the days ahead are not all prepared ({error}); run it again");
    }
    Ok(())
}
