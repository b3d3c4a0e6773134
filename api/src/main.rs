//! `tollgate-api`: parse the command line, start logging (and span export), hand over to
//! the library.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = tollgate_api::cli::Cli::parse();
    let telemetry = tollgate_core::telemetry::init("tollgate-api", &cli.infra.telemetry)?;
    let outcome = tollgate_api::cli::run(cli).await;
    telemetry.shutdown();
    outcome
}
