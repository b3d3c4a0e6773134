//! The environment both binaries read, parsed once into typed values.
//!
//! Each binary flattens these into its own `clap` parser, so `--help` documents every variable.

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::PgPool;

use crate::db::settings::Seed;
use crate::domain::{SealedKey, check_base_url};
use crate::secret::{SecretKey, last4};

/// Where Postgres and RabbitMQ are, and how this deployment names its queues.
#[derive(Debug, Clone, clap::Args)]
pub struct InfraConfig {
    /// Postgres connection string.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/tollgate"
    )]
    pub database_url: String,

    /// RabbitMQ connection string.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,

    /// Prefix of every exchange and queue name, so deployments (and tests) can share a broker.
    #[arg(long, env = "TOLLGATE_QUEUE_PREFIX", default_value = "tollgate")]
    pub queue_prefix: String,

    /// Most Postgres connections this process opens.
    #[arg(long, env = "TOLLGATE_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,

    /// A bearer token `/metrics` asks for; unset, anyone who can reach the port may scrape.
    #[arg(long, env = "TOLLGATE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<secrecy::SecretString>,

    #[command(flatten)]
    pub telemetry: crate::telemetry::TelemetryConfig,
}

/// Where the providers are, how long a call to one may take, and the key that seals the OpenAI key
/// at rest. The base URLs and key only seed the runtime settings on a deployment's first start;
/// after that the operator changes them through `PATCH /v1/admin/settings`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProviderConfig {
    /// Base URL of the local Ollama server.
    #[arg(
        long,
        env = "OLLAMA_BASE_URL",
        default_value = "http://127.0.0.1:11434"
    )]
    pub ollama_base_url: String,

    /// Base URL of the OpenAI API (or a compatible server).
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,

    /// OpenAI API key; without one, OpenAI is not used.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<SecretString>,

    /// 32 random bytes in base64 that seal the OpenAI key in Postgres (`openssl rand -base64 32`).
    /// Without it no OpenAI key can be stored, so OpenAI is not used.
    #[arg(long, env = "TOLLGATE_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<SecretString>,

    /// How often each process checks whether the runtime settings changed, in milliseconds.
    #[arg(long, env = "TOLLGATE_SETTINGS_REFRESH_MS", default_value_t = 1000)]
    pub settings_refresh_ms: u64,

    /// Longest a single provider call may take, in seconds.
    #[arg(long, env = "TOLLGATE_PROVIDER_TIMEOUT_SECS", default_value_t = 120)]
    pub provider_timeout_secs: u64,
}

/// What webhooks may reach; read by the api (at submission) and the worker (at delivery).
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookConfig {
    /// Let webhook URLs reach loopback, private, link-local and other internal addresses. Off in
    /// production: on, a tenant could make the gateway call its own network. For tests and
    /// on-premise receivers.
    #[arg(
        long,
        env = "TOLLGATE_WEBHOOK_ALLOW_PRIVATE",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub webhook_allow_private: bool,
}

/// What images given by URL may reach, how big and how slow they may be; read by the api (which
/// fetches a single job's images at intake) and the worker (a batch item's, before its first
/// call).
#[derive(Debug, Clone, clap::Args)]
pub struct ImageConfig {
    /// Largest image taken, in bytes, whether sent inline or fetched.
    #[arg(long, env = "TOLLGATE_IMAGE_MAX_BYTES", default_value_t = crate::domain::conversation::DEFAULT_MAX_IMAGE_BYTES)]
    pub image_max_bytes: usize,
    /// Longest an image URL may take to answer with its whole image, in seconds.
    #[arg(long, env = "TOLLGATE_IMAGE_FETCH_TIMEOUT_SECS", default_value_t = 10)]
    pub image_fetch_timeout_secs: u64,
    /// Let image URLs reach loopback, private, link-local and other internal addresses. Off in
    /// production, for the same reason as webhooks'.
    #[arg(
        long,
        env = "TOLLGATE_IMAGE_ALLOW_PRIVATE",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub image_allow_private: bool,
    /// Comma-separated internal networks (CIDR) image URLs may reach besides public addresses,
    /// e.g. the company's image store (`10.20.0.0/16`); ignored when all are allowed.
    #[arg(long, env = "TOLLGATE_IMAGE_ALLOWED_NETWORKS", value_delimiter = ',')]
    pub image_allowed_networks: Vec<sqlx::types::ipnetwork::IpNetwork>,
}

impl ImageConfig {
    pub fn limits(&self) -> crate::image_fetch::ImageLimits {
        let reach = match (self.image_allow_private, &self.image_allowed_networks) {
            (true, _) => crate::webhook::Reach::Everything,
            (false, networks) if networks.is_empty() => crate::webhook::Reach::Public,
            (false, networks) => crate::webhook::Reach::PublicAnd(networks.clone().into()),
        };
        crate::image_fetch::ImageLimits {
            max_bytes: self.image_max_bytes,
            timeout: std::time::Duration::from_secs(self.image_fetch_timeout_secs.max(1)),
            reach,
        }
    }
}

impl ProviderConfig {
    /// The sealing key, if one is configured; a malformed one is an error, never ignored.
    pub fn secret_key(&self) -> anyhow::Result<Option<SecretKey>> {
        self.secret_key
            .as_ref()
            .filter(|key| !key.expose_secret().is_empty())
            .map(SecretKey::parse)
            .transpose()
            .context("TOLLGATE_SECRET_KEY")
    }

    /// Seeds the runtime settings from these values if no process did before, and returns the
    /// sealing key. An `OPENAI_API_KEY` without a `TOLLGATE_SECRET_KEY` cannot be stored: it is
    /// refused rather than kept in clear.
    pub async fn seed_settings(&self, pool: &PgPool) -> anyhow::Result<Option<SecretKey>> {
        let secret_key = self.secret_key()?;
        // An empty OPENAI_API_KEY= (as in a copied .env.example) means "no key".
        let api_key = self
            .openai_api_key
            .as_ref()
            .map(|k| k.expose_secret().trim())
            .filter(|k| !k.is_empty());
        let sealed = match (api_key, &secret_key) {
            (None, _) => None,
            (Some(key), Some(secret_key)) => Some(SealedKey {
                sealed: secret_key.seal(key),
                last4: last4(key),
            }),
            (Some(_), None) => {
                anyhow::bail!(
                    "OPENAI_API_KEY is set but TOLLGATE_SECRET_KEY is not: the key cannot be stored sealed"
                )
            }
        };
        let seed = Seed {
            ollama_base_url: check_base_url("OLLAMA_BASE_URL", &self.ollama_base_url)?,
            openai_base_url: check_base_url("OPENAI_BASE_URL", &self.openai_base_url)?,
            openai_api_key: sealed,
        };
        if crate::db::settings::seed(pool, &seed).await? {
            tracing::info!("runtime settings seeded from the environment");
        }
        Ok(secret_key)
    }
}
