//! `tollgate-worker`: parse the configuration, start logging, hand over to the library.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = tollgate_worker::cli::Cli::parse();
    shared::process::init_tracing();
    tollgate_worker::cli::run(cli).await
}
