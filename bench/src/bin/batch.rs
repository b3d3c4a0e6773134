//! `tollgate-bench-batch`: batches against a running stack.
//!
//! 1. Intake: `POST /v1/batches` of 10,000 and of 50,000 short generate items, `--rounds` times
//!    each, timed from the first byte sent to the 202 (each batch is cancelled after, so the
//!    workers do not run it).
//! 2. A single job's latency, idle: one client submits with `Prefer: wait=10`, one at a time.
//! 3. A 50,000-item batch end to end (submit → `completed`) on an otherwise idle stack: its items
//!    per second.
//! 4. The same again while the single-job client runs for another tenant: the single jobs'
//!    latency meanwhile, and the batch's items per second beside them.
//! 5. The single job's latency idle again, after the batches: the same database (100,000 more
//!    jobs in it) without a batch running, once its autovacuum has finished (with
//!    `--database-url`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use clap::Parser;
use reqwest::Client;
use serde_json::{Value, json};
use tollgate_bench::{ended_batch, median, percentile};

#[derive(Debug, Clone, Parser)]
#[command(name = "tollgate-bench-batch")]
struct Cli {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The token batches are submitted with.
    #[arg(long)]
    token: String,
    /// Another tenant's token, for the single jobs.
    #[arg(long)]
    other_token: String,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Single jobs measured while idle.
    #[arg(long, default_value_t = 300)]
    singles: usize,
    /// Items of the end-to-end batch.
    #[arg(long, default_value_t = 50_000)]
    items: usize,
    /// The stack's database: the last idle measurement waits for its autovacuum to finish.
    #[arg(long)]
    database_url: Option<String>,
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let http = Client::new();

    for size in [10_000, 50_000] {
        let mut seconds = Vec::new();
        for round in 1..=cli.rounds {
            let (took, id) = submit(&http, &cli, size).await?;
            cancel(&http, &cli, &id).await?;
            println!(
                "intake {size} items, round {round}: {:.3} s",
                took.as_secs_f64()
            );
            seconds.push(took.as_secs_f64());
        }
        println!("intake {size} items: median {:.3} s", median(seconds));
    }

    let idle = singles_until(&http, &cli, Some(cli.singles), &AtomicBool::new(false)).await?;
    report("single jobs, idle", &idle);

    let alone = run_batch(&http, &cli).await?;
    println!(
        "batch of {} end to end, alone: {:.1} s = {:.0} items/s",
        cli.items,
        alone.as_secs_f64(),
        cli.items as f64 / alone.as_secs_f64()
    );

    let stop = Arc::new(AtomicBool::new(false));
    #[expect(
        clippy::disallowed_methods,
        reason = "load tasks, each joined for its figures"
    )]
    let meanwhile = {
        let (http, cli, stop) = (http.clone(), cli.clone(), stop.clone());
        tokio::spawn(async move { singles_until(&http, &cli, None, &stop).await })
    };
    let took = run_batch(&http, &cli).await?;
    stop.store(true, Ordering::Relaxed);
    let during = meanwhile.await??;
    println!(
        "batch of {} end to end, single jobs running meanwhile: {:.1} s = {:.0} items/s",
        cli.items,
        took.as_secs_f64(),
        cli.items as f64 / took.as_secs_f64()
    );
    report("single jobs of another tenant during the batch", &during);
    if let Some(url) = &cli.database_url {
        let settled = autovacuum_done(url).await?;
        println!(
            "autovacuum done {:.1} s after the batches",
            settled.as_secs_f64()
        );
    }
    let after = singles_until(&http, &cli, Some(cli.singles), &AtomicBool::new(false)).await?;
    report("single jobs, idle again after the batches", &after);
    Ok(())
}

/// Waits (up to 5 minutes) until no autovacuum worker is busy in the database; how long that took.
async fn autovacuum_done(url: &str) -> anyhow::Result<Duration> {
    let pool = sqlx::PgPool::connect(url).await.context("connect")?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(300) {
        let busy: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity
              where backend_type = 'autovacuum worker' and datname = current_database()",
        )
        .fetch_one(&pool)
        .await?;
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pool.close().await;
    Ok(started.elapsed())
}

/// Submits a batch of `--items` and waits for it to end; how long that took, every item having
/// succeeded.
async fn run_batch(http: &Client, cli: &Cli) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (_, id) = submit(http, cli, cli.items).await?;
    let every = Duration::from_millis(500);
    let batch = ended_batch(http, &cli.url, &cli.token, &id, every).await?;
    let took = started.elapsed();
    ensure!(
        batch["counts"]["succeeded"] == cli.items,
        "every item succeeded: {batch}"
    );
    Ok(took)
}

/// Submits a batch of `size` generate items; how long until the 202, and the batch's id.
async fn submit(http: &Client, cli: &Cli, size: usize) -> anyhow::Result<(Duration, String)> {
    let items: Vec<Value> = (0..size)
        .map(|i| json!({ "custom_id": format!("item-{i}"), "fields": { "n": i } }))
        .collect();
    let body = serde_json::to_vec(&json!({
        "kind": "generate", "model": "llama3",
        "template": "Write a product description for product number {{n}}.",
        "items": items,
    }))?;
    let started = Instant::now();
    let response = http
        .post(format!("{}/v1/batches", cli.url))
        .bearer_auth(&cli.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let took = started.elapsed();
    let status = response.status();
    let batch: Value = response.json().await?;
    ensure!(status == 202, "the batch was refused: {status} {batch}");
    let id = batch["id"].as_str().context("the batch's id")?.to_owned();
    Ok((took, id))
}

async fn cancel(http: &Client, cli: &Cli, id: &str) -> anyhow::Result<()> {
    let response = http
        .post(format!("{}/v1/batches/{id}/cancel", cli.url))
        .bearer_auth(&cli.token)
        .send()
        .await?;
    ensure!(
        response.status().is_success(),
        "cancel: {}",
        response.status()
    );
    Ok(())
}

/// One client's single jobs, each submitted with `Prefer: wait=10` once the last has finished:
/// `count` of them, or until `stop`. Returns each one's latency.
async fn singles_until(
    http: &Client,
    cli: &Cli,
    count: Option<usize>,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    while count.is_none_or(|n| latencies.len() < n) && !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let response = http
            .post(format!("{}/v1/generate", cli.url))
            .bearer_auth(&cli.other_token)
            .header("prefer", "wait=10")
            .json(&json!({ "model": "llama3", "prompt": "one question" }))
            .send()
            .await?;
        let status = response.status();
        response.bytes().await?;
        ensure!(
            status == 200,
            "a single job did not finish within 10 s: {status}"
        );
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
fn report(what: &str, latencies: &[Duration]) {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let ms = |p: f64| percentile(&sorted, p).as_secs_f64() * 1000.0;
    println!(
        "{what}: {} jobs, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        sorted.len(),
        ms(0.5),
        ms(0.99),
        ms(1.0)
    );
}
