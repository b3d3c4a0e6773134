//! `tollgate`, the command line for Tollgate's batches: submit a JSONL file, follow it with a
//! progress bar, collect its results, check on it or cancel it. The binary parses the command line
//! and calls [`run`], which tests call too.
//!
//! Its modules: [`api`] (the HTTP client of Tollgate's API), `batch` (submit, follow, results,
//! cancel), `progress` (the progress bar).

pub mod api;
mod batch;
mod progress;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use api::CliError;

/// The exit status when a batch ended with failed or cancelled items.
pub const EXIT_ITEMS_FAILED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Submit and follow Tollgate batches"
)]
pub struct Cli {
    /// Tollgate's api.
    #[arg(
        long,
        env = "TOLLGATE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// A client token (`tg_…`).
    #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Batches: many items of one kind and model.
    #[command(subcommand)]
    Batch(BatchCommand),
}

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Submit a JSONL file, one item a line (`{"custom_id", "prompt"|"messages"|"input"|"fields"}`).
    Submit {
        file: PathBuf,
        #[arg(long)]
        model: String,
        #[arg(long, default_value = "generate", value_parser = ["generate", "chat", "embedding"])]
        kind: String,
        /// A text with `{{field}}` placeholders that each item's `fields` fill.
        #[arg(long)]
        template: Option<String>,
        /// A JSON object kept with the batch.
        #[arg(long)]
        metadata: Option<String>,
        /// Where `batch.completed` is POSTed (else the tenant's endpoint).
        #[arg(long)]
        webhook_url: Option<String>,
        /// Makes a retried submit return the first batch instead of a second one.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Follow the batch to its end with a progress bar.
        #[arg(long)]
        wait: bool,
        /// Write the results here once the batch has ended (implies --wait).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show a batch's status and counts.
    Status {
        id: String,
        /// Print the batch as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow a batch to its end with a progress bar.
    Wait {
        id: String,
        /// Write the results here once the batch has ended.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a batch's results (JSONL, one line per item) to stdout or a file.
    Results {
        id: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Cancel the items not started; running ones finish.
    Cancel { id: String },
}

/// Runs a command, writing what it reports to `stdout` (progress goes to stderr). Returns the exit
/// status: 0, or [`EXIT_ITEMS_FAILED`] when a batch waited for ended with failed or cancelled items.
pub async fn run(cli: Cli, stdout: &mut dyn Write) -> Result<u8, CliError> {
    // Set but empty (`TOLLGATE_TOKEN=`) is no token either.
    let token = cli
        .token
        .filter(|token| !token.trim().is_empty())
        .ok_or_else(|| {
            CliError::Usage("no token: pass --token or set TOLLGATE_TOKEN".to_owned())
        })?;
    let api = api::Api::new(&cli.url, &token);
    match cli.command {
        Command::Batch(command) => batch::run(&api, command, stdout).await,
    }
}
