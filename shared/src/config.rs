//! The environment both binaries read, parsed once into typed values.
//!
//! Each binary flattens these into its own `clap` parser, so `--help` documents every variable.

use secrecy::SecretString;

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
}

/// Where the providers are and how long a call to one may take; the worker calls them.
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

    /// Longest a single provider call may take, in seconds.
    #[arg(long, env = "TOLLGATE_PROVIDER_TIMEOUT_SECS", default_value_t = 120)]
    pub provider_timeout_secs: u64,
}
