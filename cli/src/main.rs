//! `tollgate`: parse the command line, run it, exit with its status.

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = tollgate_cli::Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match tollgate_cli::run(cli, &mut stdout).await {
        Ok(status) => ExitCode::from(status),
        Err(error) => {
            eprintln!("tollgate: {error}");
            ExitCode::FAILURE
        }
    }
}
