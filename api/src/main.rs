//! `tollgate-api`: parse the command line, start logging, hand over to the library.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = tollgate_api::cli::Cli::parse();
    shared::process::init_tracing();
    tollgate_api::cli::run(cli).await
}
