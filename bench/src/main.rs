//! `tollgate-bench`: a closed-loop load generator for `POST /v1/generate` (or `/v1/chat`, with
//! tools and a JSON schema: `--shape`).
//!
//! N clients submit jobs back to back for a fixed time; it reports intake throughput and latency
//! percentiles. With `--database-url` it then waits until every accepted job is terminal and
//! reports end-to-end throughput (first submit → last job succeeded).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;

use tollgate_bench::percentile;
use tollgate_bench::shapes::Shape;

#[derive(Debug, Parser)]
#[command(name = "tollgate-bench")]
struct Cli {
    /// Base URL of the api.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A client token.
    #[arg(long, env = "TOLLGATE_TOKEN")]
    token: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to submit, in seconds.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    #[arg(long, default_value = "llama3")]
    model: String,
    /// What each job asks for.
    #[arg(long, value_enum, default_value_t = Shape::Generate)]
    shape: Shape,
    /// When given, wait for every accepted job to finish and report end-to-end throughput.
    #[arg(long)]
    database_url: Option<String>,
    /// Open loop: submit this many jobs per second in total (paced across the clients) instead of
    /// as fast as responses come back.
    #[arg(long)]
    rate: Option<f64>,
    /// An `Origin` header to send (for a token with allowed domains).
    #[arg(long)]
    origin: Option<String>,
    /// Longest to wait for the backlog to finish, in seconds.
    #[arg(long, default_value_t = 300)]
    drain_timeout_secs: u64,
}

#[derive(Default)]
struct ClientReport {
    latencies: Vec<Duration>,
    refused: u64,
    failed: u64,
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Arc::new(Cli::parse());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(cli.concurrency)
        .build()?;
    let started = Instant::now();
    // The lowest job id of this run: its jobs are counted among ids from here on, so the count
    // reads only this run's days however much history the database holds.
    let first_id = lowest_id_from_now();
    let deadline = started + Duration::from_secs(cli.duration_secs);
    #[expect(
        clippy::disallowed_methods,
        reason = "load clients, each joined for its figures"
    )]
    let clients: Vec<_> = (0..cli.concurrency)
        .map(|client| tokio::spawn(run_client(client, http.clone(), cli.clone(), deadline)))
        .collect();
    let mut total = ClientReport::default();
    for client in clients {
        let report = client.await?;
        total.latencies.extend(report.latencies);
        total.refused += report.refused;
        total.failed += report.failed;
    }
    let window = started.elapsed();
    total.latencies.sort();
    let accepted = total.latencies.len();
    let pct = |p: f64| percentile(&total.latencies, p).as_secs_f64() * 1000.0;
    println!(
        "intake: concurrency={} window={:.1}s accepted={accepted} refused={} errors={}",
        cli.concurrency,
        window.as_secs_f64(),
        total.refused,
        total.failed
    );
    println!(
        "intake: throughput={:.0} jobs/s",
        accepted as f64 / window.as_secs_f64()
    );
    println!(
        "intake: latency_ms p50={:.2} p90={:.2} p99={:.2} max={:.2}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );

    if let Some(cpu) = own_cpu_seconds() {
        println!("load generator: {cpu:.1} cpu seconds");
    }
    if let Some(database_url) = &cli.database_url {
        let pool = sqlx::PgPool::connect(database_url)
            .await
            .context("connect to the database")?;
        let finished_during_window = count_finished(&pool, first_id).await?;
        let drain_deadline = Instant::now() + Duration::from_secs(cli.drain_timeout_secs);
        loop {
            let finished = count_finished(&pool, first_id).await?;
            if finished >= accepted as i64 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < drain_deadline,
                "only {finished} of {accepted} jobs finished in time"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let all_done = started.elapsed();
        let succeeded: i64 =
            sqlx::query_scalar("select count(*) from jobs where id >= $1 and status = 'succeeded'")
                .bind(first_id)
                .fetch_one(&pool)
                .await?;
        println!(
            "e2e: finished during the window={finished_during_window} succeeded={succeeded} of {accepted}"
        );
        println!(
            "e2e: throughput={:.0} jobs/s (first submit to last success, {:.1}s)",
            accepted as f64 / all_done.as_secs_f64(),
            all_done.as_secs_f64()
        );
    }
    Ok(())
}

/// This process's user + system CPU time so far, from /proc (Linux only).
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

async fn count_finished(pool: &sqlx::PgPool, first_id: uuid::Uuid) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("select count(*) from jobs where id >= $1 and finished_at is not null")
            .bind(first_id)
            .fetch_one(pool)
            .await?,
    )
}

/// The lowest UUIDv7 of this millisecond (a second back, for a clock a little behind).
fn lowest_id_from_now() -> uuid::Uuid {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(Duration::from_secs(1));
    uuid::Uuid::from_u128(since_epoch.as_millis() << 80)
}

async fn run_client(
    client: usize,
    http: reqwest::Client,
    cli: Arc<Cli>,
    deadline: Instant,
) -> ClientReport {
    let mut report = ClientReport::default();
    let mut n = 0u64;
    // Each client's share of an open-loop rate, started at an offset so they do not fire together.
    let mut pacing = cli.rate.map(|rate| {
        let period = Duration::from_secs_f64(cli.concurrency as f64 / rate);
        let offset = period.mul_f64(client as f64 / cli.concurrency as f64);
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        interval
    });
    while Instant::now() < deadline {
        if let Some(interval) = pacing.as_mut() {
            interval.tick().await;
        }
        n += 1;
        let (path, body) = cli.shape.request(&cli.model, client, n);
        let sent = Instant::now();
        let mut request = http
            .post(format!("{}{path}", cli.url))
            .bearer_auth(&cli.token)
            .json(&body);
        if let Some(origin) = &cli.origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await;
        match response {
            Ok(r) if r.status() == 202 => report.latencies.push(sent.elapsed()),
            Ok(r) if r.status() == 503 || r.status() == 429 => report.refused += 1,
            _ => report.failed += 1,
        }
    }
    report
}
