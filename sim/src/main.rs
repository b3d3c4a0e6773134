//! `provider-sim`: serve the stand-in Ollama, OpenAI and Anthropic Messages APIs until Ctrl-C.

use std::net::SocketAddr;

use clap::Parser;
use provider_sim::{Knobs, Sim};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "provider-sim",
    version,
    about = "A stand-in Ollama, OpenAI and Anthropic server"
)]
struct Cli {
    /// Address to listen on (Ollama's own port by default, so Tollgate's defaults find it).
    #[arg(long, env = "SIM_LISTEN", default_value = "127.0.0.1:11434")]
    listen: SocketAddr,
    /// Delay before each answer, in milliseconds.
    #[arg(long, env = "SIM_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Share of requests answered with an error (a 500 unless SIM_ERROR_STATUS says otherwise).
    #[arg(long, env = "SIM_ERROR_RATE", default_value_t = 0.0)]
    error_rate: f64,
    /// The status of those errors.
    #[arg(long, env = "SIM_ERROR_STATUS")]
    error_status: Option<u16>,
    /// Share of requests answered with a 429.
    #[arg(long, env = "SIM_RATE_LIMIT_RATE", default_value_t = 0.0)]
    rate_limit_rate: f64,
    /// `Retry-After` of those 429s, in seconds.
    #[arg(long, env = "SIM_RETRY_AFTER_SECS", default_value_t = 1)]
    retry_after_secs: u64,
    /// Share of requests never answered.
    #[arg(long, env = "SIM_HANG_RATE", default_value_t = 0.0)]
    hang_rate: f64,
    /// Delay between the pieces of a streamed answer, in milliseconds.
    #[arg(long, env = "SIM_TOKEN_DELAY_MS", default_value_t = 0)]
    token_delay_ms: u64,
    /// Every answer is this many words long (else 8 to 39, by the input).
    #[arg(long, env = "SIM_REPLY_WORDS")]
    reply_words: Option<u32>,
    /// Bearer key the OpenAI routes require; any key is accepted when unset.
    #[arg(long, env = "SIM_OPENAI_API_KEY", hide_env_values = true)]
    openai_key: Option<String>,
    /// Serve as an OpenAI-compatible server (vLLM): its OpenAI API only, under its model names.
    #[arg(long, env = "SIM_COMPATIBLE")]
    compatible: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let knobs = Knobs {
        latency_ms: cli.latency_ms,
        error_rate: cli.error_rate,
        error_status: cli.error_status,
        rate_limit_rate: cli.rate_limit_rate,
        retry_after_secs: cli.retry_after_secs,
        hang_rate: cli.hang_rate,
        prompt_cached: false,
        token_delay_ms: cli.token_delay_ms,
        fail_after_tokens: None,
        reply_words: cli.reply_words,
        invalid_structured: 0,
    };
    let key = cli.openai_key.filter(|key| !key.is_empty());
    let sim = if cli.compatible {
        Sim::compatible_server(knobs, key)
    } else {
        Sim::new(knobs, key)
    };
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "provider-sim listening");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    #[expect(
        clippy::disallowed_methods,
        reason = "the signal listener lives as long as the process; nothing waits for it"
    )]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    provider_sim::serve(listener, sim, shutdown).await?;
    Ok(())
}
