//! `tollgate-bench-fleet`: the fleet of Ollama hosts under an offered load.
//!
//! For each load (a multiple of the fleet's capacity, `slots × hosts / call seconds` jobs a
//! second) it submits generate jobs open-loop at that rate for a while, samples every host's
//! in-flight calls (the sims count them) while they run, waits for every job, and reports from the
//! job rows: the share served locally, the local jobs' queue wait (accepted until their local call
//! started) at p50 and p99, throughput, each host's peak in flight (never above its slots) and
//! the fleet's mean use of its slots while loaded. It runs under the settings the api has: the
//! script switches between `hybrid` and `local` with fallback and runs this once for each.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use clap::Parser;
use serde_json::{Value, json};
use sqlx::PgPool;
use tollgate_bench::percentile;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(name = "tollgate-bench-fleet")]
struct Cli {
    /// Base URL of the api.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, env = "TOLLGATE_TOKEN")]
    token: String,
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The hosts' sims, `name=url` (their `/_sim/stats` counts calls in flight).
    #[arg(long = "host", required = true)]
    hosts: Vec<String>,
    /// Slots per host.
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// Seconds one local call takes.
    #[arg(long, default_value_t = 0.5)]
    call_secs: f64,
    /// Offered loads, as multiples of the fleet's capacity.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2,3")]
    loads: Vec<f64>,
    /// Seconds each load is offered.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// A label for the report (the routing under test).
    #[arg(long, default_value = "")]
    label: String,
}

struct Host {
    name: String,
    url: String,
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let http = reqwest::Client::new();
    let pool = tollgate_core::db::connect(&cli.database_url, 2).await?;
    let hosts: Vec<Host> = cli
        .hosts
        .iter()
        .map(|h| {
            let (name, url) = h.split_once('=').context("--host name=url")?;
            Ok(Host {
                name: name.to_owned(),
                url: url.to_owned(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let capacity = f64::from(cli.slots) * hosts.len() as f64 / cli.call_secs;
    println!(
        "{}: fleet of {} hosts × {} slots at {} s a call = {capacity:.0} jobs/s",
        cli.label,
        hosts.len(),
        cli.slots,
        cli.call_secs
    );
    println!(
        "load  offered/s  jobs  local%  wait p50  wait p99  throughput/s  peak in flight  slots used"
    );
    for &load in &cli.loads {
        for host in &hosts {
            http.delete(format!("{}/_sim/stats", host.url))
                .send()
                .await?;
        }
        let rate = capacity * load;
        let (ids, samples) = offer(&cli, &http, &hosts, rate).await?;
        let peaks = peaks(&http, &hosts).await?;
        let report = measure(&pool, &ids).await?;
        let slots = f64::from(cli.slots) * hosts.len() as f64;
        let used = samples.iter().sum::<f64>() / samples.len().max(1) as f64 / slots * 100.0;
        println!(
            "{load:>4}x  {rate:>9.1}  {:>4}  {:>5.1}%  {:>8.0?}  {:>8.0?}  {:>12.1}  {}  {used:>9.0}%",
            ids.len(),
            report.local_share * 100.0,
            report.wait_p50,
            report.wait_p99,
            report.throughput,
            peaks
                .iter()
                .map(|(name, peak)| format!("{name}={peak}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
        for (name, peak) in &peaks {
            ensure!(
                *peak <= u64::from(cli.slots),
                "{name} had {peak} calls in flight, over its {} slots",
                cli.slots
            );
        }
    }
    Ok(())
}

/// Submits jobs at `rate` a second for the configured time, sampling the fleet's calls in flight
/// (summed over hosts) every 50 ms meanwhile; the ids of the jobs.
async fn offer(
    cli: &Cli,
    http: &reqwest::Client,
    hosts: &[Host],
    rate: f64,
) -> anyhow::Result<(Vec<Uuid>, Vec<f64>)> {
    let total = (rate * cli.seconds as f64).round() as usize;
    let every = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let submissions = (0..total).map(|n| {
        let http = http.clone();
        let url = format!("{}/v1/generate", cli.url);
        let token = cli.token.clone();
        async move {
            tokio::time::sleep_until((started + every * u32::try_from(n)?).into()).await;
            let job: Value = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "model": "llama3", "prompt": format!("fleet job {n}") }))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let id: Uuid = job["id"].as_str().context("job id")?.parse()?;
            anyhow::Ok(id)
        }
    });
    let sampling = async {
        let mut samples = Vec::new();
        while started.elapsed() < Duration::from_secs(cli.seconds) {
            let mut sum = 0;
            for host in hosts {
                sum += stat(http, host, "in_flight").await.unwrap_or(0);
            }
            // The first second fills the fleet; it is not the steady state.
            if started.elapsed() > Duration::from_secs(1) {
                samples.push(sum as f64);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        samples
    };
    let (ids, samples) = tokio::join!(futures::future::join_all(submissions), sampling);
    let ids = ids.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((ids, samples))
}

async fn stat(http: &reqwest::Client, host: &Host, field: &str) -> anyhow::Result<u64> {
    let stats: Value = http
        .get(format!("{}/_sim/stats", host.url))
        .send()
        .await?
        .json()
        .await?;
    stats[field].as_u64().context("a count")
}

async fn peaks(http: &reqwest::Client, hosts: &[Host]) -> anyhow::Result<Vec<(String, u64)>> {
    let mut peaks = Vec::new();
    for host in hosts {
        peaks.push((host.name.clone(), stat(http, host, "peak_in_flight").await?));
    }
    Ok(peaks)
}

struct Report {
    local_share: f64,
    wait_p50: Duration,
    wait_p99: Duration,
    throughput: f64,
}

/// Waits for every job to end, then reads the figures from their rows.
async fn measure(pool: &PgPool, ids: &[Uuid]) -> anyhow::Result<Report> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from jobs
              where id = any($1) and status not in ('succeeded', 'failed', 'cancelled')",
        )
        .bind(ids)
        .fetch_one(pool)
        .await?;
        if open == 0 {
            break;
        }
        ensure!(Instant::now() < deadline, "{open} jobs never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failed: i64 = sqlx::query_scalar(
        "select count(*) from jobs where id = any($1) and status <> 'succeeded'",
    )
    .bind(ids)
    .fetch_one(pool)
    .await?;
    ensure!(failed == 0, "{failed} jobs did not succeed");
    // A local job's wait: from its acceptance until the local call that answered it started.
    let waits: Vec<f64> = sqlx::query_scalar(
        "select extract(epoch from a.started_at - j.created_at)::float8
           from jobs j
           join lateral (select started_at from job_attempts
                          where job_id = j.id and outcome = 'succeeded') a on true
          where j.id = any($1) and j.provider = 'ollama'",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let (first, last): (f64, f64) = sqlx::query_as(
        "select extract(epoch from min(created_at))::float8,
                extract(epoch from max(finished_at))::float8
           from jobs where id = any($1)",
    )
    .bind(ids)
    .fetch_one(pool)
    .await?;
    let mut waits: Vec<Duration> = waits
        .into_iter()
        .map(|w| Duration::from_secs_f64(w.max(0.0)))
        .collect();
    waits.sort();
    Ok(Report {
        local_share: waits.len() as f64 / ids.len() as f64,
        wait_p50: percentile(&waits, 0.5),
        wait_p99: percentile(&waits, 0.99),
        throughput: ids.len() as f64 / (last - first),
    })
}
