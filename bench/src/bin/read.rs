//! `tollgate-bench-read`: latency of a GET endpoint under a small closed-loop load — N clients
//! calling it back to back until `--requests` calls are made; reports p50, p99 and max.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tollgate_bench::percentile;

#[derive(Debug, Parser)]
#[command(name = "tollgate-bench-read")]
struct Cli {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, env = "TOLLGATE_TOKEN")]
    token: String,
    /// Path and query, e.g. `/v1/usage`.
    #[arg(long)]
    path: String,
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Arc::new(Cli::parse());
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    #[expect(
        clippy::disallowed_methods,
        reason = "load clients, each joined for its figures"
    )]
    let clients: Vec<_> = (0..cli.concurrency)
        .map(|_| {
            let (cli, http, next) = (cli.clone(), http.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < cli.requests {
                    let clock = Instant::now();
                    let response = http
                        .get(format!("{}{}", cli.url, cli.path))
                        .bearer_auth(&cli.token)
                        .send()
                        .await?;
                    anyhow::ensure!(response.status().is_success(), "{}", response.status());
                    response.bytes().await?;
                    latencies.push(clock.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::new();
    for client in clients {
        latencies.extend(client.await??);
    }
    latencies.sort();
    let at = |q: f64| percentile(&latencies, q).as_secs_f64() * 1000.0;
    println!(
        "{}: {} requests, {} clients: p50={:.2} ms p99={:.2} ms max={:.2} ms",
        cli.path,
        latencies.len(),
        cli.concurrency,
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}
