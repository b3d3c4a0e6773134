//! `tollgate-worker`: parse the configuration, start logging (and span export), hand over to
//! the library.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = tollgate_worker::cli::Cli::parse();
    let telemetry = tollgate_core::telemetry::init("tollgate-worker", &cli.infra.telemetry)?;
    let outcome = tollgate_worker::cli::run(cli).await;
    telemetry.shutdown();
    outcome
}
