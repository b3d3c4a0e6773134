//! `tollgate-api`'s command line: `serve` (the default) and the operator commands `migrate`,
//! `tenant create` and `token create`.

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use sqlx::types::ipnetwork::IpNetwork;
use tokio_util::sync::CancellationToken;
use tollgate_core::config::{ImageConfig, InfraConfig, ProviderConfig, WebhookConfig};
use tollgate_core::db::{tenants, tokens};
use tollgate_core::domain::{Name, Role};
use tollgate_core::queue::{Broker, Topology};

use crate::ApiSettings;

#[derive(Debug, Parser)]
#[command(
    name = "tollgate-api",
    version,
    about = "Tollgate's intake API and operator commands"
)]
pub struct Cli {
    #[command(flatten)]
    pub infra: InfraConfig,

    #[command(flatten)]
    pub providers: ProviderConfig,

    /// Address the API listens on.
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub webhooks: WebhookConfig,

    #[command(flatten)]
    pub images: ImageConfig,

    /// Largest body of a call that carries images inline, in bytes (also the most bytes of
    /// images, inline or fetched, one request may show, and the largest body of the Anthropic
    /// surface's messages, text or images).
    #[arg(long, env = "TOLLGATE_IMAGE_BODY_LIMIT_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub image_body_limit: usize,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "TOLLGATE_BODY_LIMIT_BYTES", default_value_t = 1024 * 1024)]
    pub body_limit: usize,

    /// Largest `POST /v1/batches` body, and largest OpenAI batch input file, in bytes (up to
    /// 50,000 items).
    #[arg(long, env = "TOLLGATE_BATCH_BODY_LIMIT_BYTES", default_value_t = 200 * 1024 * 1024)]
    pub batch_body_limit: usize,

    /// Seconds between the comment lines that keep an idle SSE stream open through proxies.
    #[arg(long, env = "TOLLGATE_SSE_HEARTBEAT_SECS", default_value_t = 15)]
    pub sse_heartbeat_secs: u64,

    /// Comma-separated addresses or CIDR networks of the proxies in front of the api (load
    /// balancers): only their `Forwarded` / `X-Forwarded-For` headers are believed.
    #[arg(long, env = "TOLLGATE_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,

    /// Seconds a client may take to send a request's headers before the connection is closed.
    #[arg(long, env = "TOLLGATE_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// Seconds a client may take to send a request's body before it gets 408.
    #[arg(long, env = "TOLLGATE_BODY_READ_TIMEOUT_SECS", default_value_t = 30)]
    pub body_read_timeout_secs: u64,

    /// Seconds a call on the OpenAI or Ollama surface waits for (or streams) its job before it is
    /// answered with the job's id; the job goes on. The official SDKs' own timeout is 600.
    #[arg(long, env = "TOLLGATE_SYNC_TIMEOUT_SECS", default_value_t = 600)]
    pub sync_timeout_secs: u64,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and print its id.
    Create { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for a tenant and print it. It is shown this once and never again.
    Create {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// A label to tell tokens apart.
        #[arg(long, default_value = "default")]
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Admin,
    Client,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::Client => Role::Client,
        }
    }
}

/// The trusted proxies from their comma-separated list (empty when unset or blank).
fn trusted_proxies(list: Option<&str>) -> anyhow::Result<Vec<IpNetwork>> {
    list.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry.parse().with_context(|| {
                format!("TOLLGATE_TRUSTED_PROXIES: {entry:?} is not an address or CIDR")
            })
        })
        .collect()
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let pool =
        tollgate_core::process::connect_database(&cli.infra.database_url, cli.infra.db_pool_size)
            .await
            .context("cannot open the database")?;
    let secret_key = cli.providers.seed_settings(&pool).await?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let shutdown = tollgate_core::process::shutdown_on_signal();
            let topology = Topology::new(&cli.infra.queue_prefix);
            let broker = Broker::new(&cli.infra.amqp_url, topology, "tollgate-api");
            // The connection outlives the signal: open streams still get their text while they
            // finish (see `serve`).
            let connection = CancellationToken::new();
            let mut supervisor = tollgate_core::process::Tasks::default();
            supervisor.spawn(
                "broker supervisor",
                broker.clone().supervise(connection.clone()),
            );
            let listener = tokio::net::TcpListener::bind(cli.listen)
                .await
                .with_context(|| format!("cannot listen on {}", cli.listen))?;
            let settings = ApiSettings {
                body_limit: cli.body_limit,
                batch_body_limit: cli.batch_body_limit,
                image_body_limit: cli.image_body_limit,
                images: cli.images.limits(),
                secret_key,
                settings_refresh: std::time::Duration::from_millis(
                    cli.providers.settings_refresh_ms.max(10),
                ),
                webhook_allow_private: cli.webhooks.webhook_allow_private,
                sse_heartbeat: std::time::Duration::from_secs(cli.sse_heartbeat_secs.max(1)),
                trusted_proxies: trusted_proxies(cli.trusted_proxies.as_deref())?,
                header_read_timeout: std::time::Duration::from_secs(
                    cli.header_read_timeout_secs.max(1),
                ),
                body_read_timeout: std::time::Duration::from_secs(
                    cli.body_read_timeout_secs.max(1),
                ),
                sync_timeout: std::time::Duration::from_secs(cli.sync_timeout_secs.max(1)),
                metrics_token: cli.infra.metrics_token.clone(),
            };
            let served = crate::serve(listener, pool, broker, settings, shutdown.clone()).await;
            shutdown.cancel();
            connection.cancel();
            served?;
            supervisor.join().await?;
            Ok(())
        }
        Command::Migrate => {
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Tenant(TenantCommand::Create { name }) => create_tenant(&pool, &name).await,
        Command::Token(TokenCommand::Create { tenant, role, name }) => {
            create_token(&pool, &tenant, role.into(), &name).await
        }
    }
}

#[expect(
    clippy::print_stdout,
    reason = "the operator reads the tenant id from stdout"
)]
async fn create_tenant(pool: &sqlx::PgPool, name: &str) -> anyhow::Result<()> {
    let name = Name::parse("name", name)
        .map_err(|invalid| anyhow::anyhow!("a tenant name {}", invalid.message))?;
    match tenants::create(pool, name.as_str()).await {
        Ok(id) => {
            println!("{id}");
            Ok(())
        }
        Err(sqlx::Error::Database(e)) if e.constraint() == Some(tenants::NAME_TAKEN) => {
            bail!("a tenant named {:?} already exists", name.as_str())
        }
        Err(e) => Err(e.into()),
    }
}

#[expect(
    clippy::print_stdout,
    reason = "the token is shown to the operator this once, on stdout"
)]
async fn create_token(
    pool: &sqlx::PgPool,
    tenant: &str,
    role: Role,
    name: &str,
) -> anyhow::Result<()> {
    let tenant_id = tenants::find_by_name(pool, tenant)
        .await?
        .with_context(|| format!("no tenant named {tenant:?}"))?;
    let name = Name::parse("name", name)
        .map_err(|invalid| anyhow::anyhow!("a token name {}", invalid.message))?;
    let token = tollgate_core::token::generate();
    tokens::create(
        pool,
        tenant_id,
        name.as_str(),
        role,
        &token.hash,
        &token.display_prefix,
    )
    .await?;
    println!("{}", token.secret);
    Ok(())
}
