//! `tollgate-bench-delivery`: what result delivery costs.
//!
//! - `wait`: N clients call provider-sim directly, then submit the same request through Tollgate
//!   with `Prefer: wait`, alternating for several rounds in one run; it reports p50/p99 of the whole
//!   call for each and the gateway's overhead (the difference).
//! - `sse`: submits N jobs that stay queued (no worker running), opens one SSE stream on each,
//!   and reports the api process's resident memory before and with every stream open.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::{Parser, Subcommand};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tollgate_bench::{median, percentile};

#[derive(Debug, Parser)]
#[command(name = "tollgate-bench-delivery")]
struct Cli {
    /// Base URL of the api.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A client token.
    #[arg(long, env = "TOLLGATE_TOKEN")]
    token: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Submit-and-wait against direct calls to provider-sim.
    Wait {
        /// Base URL of provider-sim (its Ollama API).
        #[arg(long)]
        sim_url: String,
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        /// Seconds per phase.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Rounds of (direct, gateway).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Memory of many open SSE streams.
    Sse {
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        /// The api's process id, to read its memory from /proc.
        #[arg(long)]
        api_pid: u32,
    },
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Wait {
            sim_url,
            concurrency,
            seconds,
            rounds,
        } => {
            let duration = Duration::from_secs(*seconds);
            let (mut direct_p50, mut direct_p99, mut gateway_p50, mut gateway_p99) =
                (vec![], vec![], vec![], vec![]);
            for round in 1..=*rounds {
                let direct = phase(&cli, Target::Direct(sim_url), *concurrency, duration).await?;
                let gateway = phase(&cli, Target::Gateway, *concurrency, duration).await?;
                println!(
                    "round {round}: direct n={} p50={:.2} p99={:.2} ms | gateway (Prefer: wait) n={} p50={:.2} p99={:.2} ms | overhead p50={:.2} p99={:.2} ms",
                    direct.count,
                    direct.p50,
                    direct.p99,
                    gateway.count,
                    gateway.p50,
                    gateway.p99,
                    gateway.p50 - direct.p50,
                    gateway.p99 - direct.p99
                );
                direct_p50.push(direct.p50);
                direct_p99.push(direct.p99);
                gateway_p50.push(gateway.p50);
                gateway_p99.push(gateway.p99);
            }
            let (d50, d99, g50, g99) = (
                median(direct_p50),
                median(direct_p99),
                median(gateway_p50),
                median(gateway_p99),
            );
            println!(
                "median of rounds: direct p50={d50:.2} p99={d99:.2} ms, gateway p50={g50:.2} p99={g99:.2} ms, overhead p50={:.2} p99={:.2} ms",
                g50 - d50,
                g99 - d99
            );
        }
        Command::Sse { streams, api_pid } => sse(&cli, *streams, *api_pid).await?,
    }
    Ok(())
}

enum Target<'a> {
    Direct(&'a str),
    Gateway,
}

struct Phase {
    count: usize,
    p50: f64,
    p99: f64,
}

/// `concurrency` clients calling back to back for `duration`; latencies of the whole call.
async fn phase(
    cli: &Cli,
    target: Target<'_>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let deadline = Instant::now() + duration;
    let (url, gateway) = match target {
        Target::Direct(sim) => (format!("{sim}/api/generate"), false),
        Target::Gateway => (format!("{}/v1/generate", cli.url), true),
    };
    #[expect(
        clippy::disallowed_methods,
        reason = "load clients, each joined for its figures"
    )]
    let clients: Vec<_> = (0..concurrency)
        .map(|client| {
            let (http, url, token) = (http.clone(), url.clone(), cli.token.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let prompt = format!("Describe product {client}-{n} in one sentence");
                    let sent = Instant::now();
                    let request = if gateway {
                        http.post(&url)
                            .bearer_auth(&token)
                            .header("prefer", "wait=10")
                            .json(&json!({ "model": "llama3", "prompt": prompt }))
                    } else {
                        http.post(&url)
                            .json(&json!({ "model": "llama3", "prompt": prompt, "stream": false }))
                    };
                    let response = request.send().await?;
                    let status = response.status();
                    let body: Value = response.json().await?;
                    if gateway {
                        ensure!(
                            status == 200 && body["status"] == "succeeded",
                            "the job did not finish within the wait: {status} {body}"
                        );
                    } else {
                        ensure!(status == 200, "provider-sim answered {status}");
                    }
                    latencies.push(sent.elapsed());
                }
                Ok::<_, anyhow::Error>(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await??);
    }
    ensure!(!all.is_empty(), "no call completed");
    all.sort();
    let pct = |p: f64| percentile(&all, p).as_secs_f64() * 1000.0;
    Ok(Phase {
        count: all.len(),
        p50: pct(0.50),
        p99: pct(0.99),
    })
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
async fn sse(cli: &Cli, streams: usize, api_pid: u32) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut ids = Vec::with_capacity(streams);
    for n in 0..streams {
        let job: Value = http
            .post(format!("{}/v1/generate", cli.url))
            .bearer_auth(&cli.token)
            .json(&json!({ "model": "llama3", "prompt": format!("stream {n}") }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        ids.push(job["id"].as_str().context("job id")?.to_owned());
    }
    // Let the api settle (publish marks, allocator) before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(api_pid)?;
    let mut open = Vec::with_capacity(streams);
    let started = Instant::now();
    for id in &ids {
        let response = http
            .get(format!("{}/v1/jobs/{id}/events", cli.url))
            .bearer_auth(&cli.token)
            .send()
            .await?
            .error_for_status()?;
        let mut body = response.bytes_stream();
        // The first event (the job, queued) arrives at once.
        let first = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .context("no first event")?;
        if !matches!(first, Some(Ok(ref chunk)) if chunk.starts_with(b"event: job")) {
            bail!("unexpected first chunk: {first:?}");
        }
        open.push(body);
    }
    let opened_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with = rss_kib(api_pid)?;
    println!(
        "sse: {} streams opened in {:.1} s; api RSS {:.1} MiB before, {:.1} MiB with them open: {:.1} MiB more ({:.1} KiB per stream)",
        open.len(),
        opened_in.as_secs_f64(),
        before as f64 / 1024.0,
        with as f64 / 1024.0,
        (with as f64 - before as f64) / 1024.0,
        (with as f64 - before as f64) / open.len() as f64
    );
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .context("VmRSS in /proc/<pid>/status")
}
