//! `tollgate-bench-cache`: what the response cache costs and saves.
//!
//! 1. The cost of a key: [`CacheKey::of`] for a 20-message chat with tools, in process.
//! 2. Latency through `/openai/v1/chat/completions` at each concurrency, four sides taking
//!    turns round after round: a **hit** (the same deterministic question, answered from the
//!    cache at intake), a **miss** (a new question each call: looked up, queued, called, stored),
//!    the same new questions from a tenant **without a cache**, and the same call **direct** to
//!    provider-sim; p50 and p99 of each.
//! 3. A batch with a share of repeated items: its wall time, and the hits (provider calls saved)
//!    as the usage endpoint counts them.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use clap::Parser;
use reqwest::Client;
use serde_json::{Value, json};
use tollgate_bench::{ended_batch, median, percentile};
use tollgate_core::domain::cache::{CacheKey, KeyScope};
use tollgate_core::domain::{DataPolicy, JobRequest, TenantId};

#[derive(Debug, Parser)]
#[command(name = "tollgate-bench-cache")]
struct Cli {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// provider-sim's OpenAI base URL.
    #[arg(long, default_value = "http://127.0.0.1:11434/v1")]
    direct: String,
    /// A client token of a tenant whose cache is on.
    #[arg(long)]
    token: String,
    /// A client token of a tenant without a cache (the miss's baseline).
    #[arg(long)]
    uncached_token: String,
    /// Concurrent clients, one level after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    concurrency: Vec<usize>,
    /// Rounds per level; each round makes `calls` calls per side.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Calls per side and round.
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Items of the batch.
    #[arg(long, default_value_t = 2000)]
    items: usize,
    /// Percent of the batch's items that repeat another.
    #[arg(long, default_value_t = 30)]
    repeated: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Hit,
    Miss,
    /// The same calls as a miss's, from a tenant without a cache.
    Uncached,
    Direct,
}

impl Side {
    const ALL: [Self; 4] = [Self::Hit, Self::Miss, Self::Uncached, Self::Direct];

    fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Uncached => "no cache",
            Self::Direct => "direct",
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    key_cost()?;
    let client = Client::builder().pool_max_idle_per_host(512).build()?;
    // The hit side's answer, stored.
    let warm = call(&client, &cli, Side::Hit, 0).await?;
    ensure!(warm.1 != "bypass", "the tenant's cache is off");
    for &concurrency in &cli.concurrency {
        latency(&client, &cli, concurrency).await?;
    }
    batch(&client, &cli).await
}

/// Times [`CacheKey::of`] for a 20-message chat offering 5 tools.
#[expect(clippy::print_stdout, reason = "the report is the program's output")]
fn key_cost() -> anyhow::Result<()> {
    let messages: Vec<Value> = (0..20)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            json!({ "role": role, "content": format!("message {i}: {}", "lorem ipsum ".repeat(20)) })
        })
        .collect();
    let tools: Vec<Value> = (0..5)
        .map(|i| {
            json!({ "name": format!("tool_{i}"), "description": "a tool of the benchmark",
                         "parameters": { "type": "object", "properties": {
                             "city": { "type": "string" }, "days": { "type": "integer" } },
                             "required": ["city"] } })
        })
        .collect();
    let request: JobRequest = serde_json::from_value(json!({
        "kind": "chat", "model": "llama3", "messages": messages, "tools": tools,
        "options": { "temperature": 0, "seed": 1 } }))?;
    let scope = KeyScope {
        tenant: TenantId::new(),
        policy: DataPolicy::Any,
        route: "provider=local;fallback=none;hybrid_cloud=openai;local=true;local=llama3",
    };
    let runs = 20_000u32;
    let mut samples = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(CacheKey::of(std::hint::black_box(&request), scope)?);
        }
        samples.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(runs));
    }
    let json = serde_json::to_vec(&request)?.len();
    println!(
        "key of a 20-message chat with 5 tools ({json} bytes of JSON): {:.1} us (median of 5 x {runs})",
        median(samples)
    );
    Ok(())
}

/// One call on `side`; its time and what the cache said.
async fn call(
    client: &Client,
    cli: &Cli,
    side: Side,
    n: usize,
) -> anyhow::Result<(Duration, String)> {
    let content = match side {
        Side::Hit => "Describe a teapot for a catalogue.".to_owned(),
        Side::Miss | Side::Uncached | Side::Direct => format!(
            "Describe teapot {n} for a catalogue, {}.",
            uuid::Uuid::now_v7()
        ),
    };
    let (url, model) = match side {
        Side::Direct => (format!("{}/chat/completions", cli.direct), "gpt-4o-mini"),
        _ => (
            format!("{}/openai/v1/chat/completions", cli.gateway),
            "llama3",
        ),
    };
    let body = json!({ "model": model, "temperature": 0,
                       "messages": [{ "role": "user", "content": content }] });
    let token = match side {
        Side::Uncached => &cli.uncached_token,
        _ => &cli.token,
    };
    let started = Instant::now();
    let response = client
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .context("POST")?;
    let status = response.status();
    let cache = response
        .headers()
        .get("x-tollgate-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    response.bytes().await?;
    ensure!(status.is_success(), "{} answered {status}", side.label());
    if side == Side::Hit {
        ensure!(n == 0 || cache == "hit", "a hit side's call said {cache}");
    }
    Ok((started.elapsed(), cache))
}

/// The four sides at `concurrency` clients, taking turns round after round.
#[expect(clippy::print_stdout, reason = "the report is the program's output")]
async fn latency(client: &Client, cli: &Cli, concurrency: usize) -> anyhow::Result<()> {
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); Side::ALL.len()];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); Side::ALL.len()];
    for _ in 0..cli.rounds {
        for (s, &side) in Side::ALL.iter().enumerate() {
            let started = Instant::now();
            let per_client = cli.calls.div_ceil(concurrency);
            let clients = (0..concurrency).map(|c| async move {
                let mut taken = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    taken.push(call(client, cli, side, 1 + c * per_client + i).await?.0);
                }
                anyhow::Ok(taken)
            });
            for taken in futures::future::try_join_all(clients).await? {
                times[s].extend(taken);
            }
            let made = per_client * concurrency;
            rates[s].push(made as f64 / started.elapsed().as_secs_f64());
        }
    }
    println!(
        "-- {concurrency} client(s), {} rounds of {} calls per side",
        cli.rounds, cli.calls
    );
    for (s, side) in Side::ALL.iter().enumerate() {
        let mut sorted = times[s].clone();
        sorted.sort();
        println!(
            "{:>8}: p50 {:>7.2} ms  p99 {:>7.2} ms  {:>6.0} calls/s (median round)",
            side.label(),
            ms(percentile(&sorted, 0.5)),
            ms(percentile(&sorted, 0.99)),
            median(rates[s].clone()),
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A batch whose items repeat `repeated` percent of the time: its time, hits and calls saved.
#[expect(clippy::print_stdout, reason = "the report is the program's output")]
async fn batch(client: &Client, cli: &Cli) -> anyhow::Result<()> {
    let distinct = cli.items - cli.items * cli.repeated / 100;
    let run = uuid::Uuid::now_v7();
    let items: Vec<Value> = (0..cli.items)
        .map(|i| {
            let n = if i < distinct { i } else { i % distinct };
            json!({ "custom_id": format!("i{i}"), "prompt": format!("SEO text {n} of run {run}") })
        })
        .collect();
    let hits_before = month_hits(client, cli).await?;
    let body = json!({ "kind": "generate", "model": "llama3", "items": items,
                       "options": { "temperature": 0 } });
    let started = Instant::now();
    let response = client
        .post(format!("{}/v1/batches", cli.gateway))
        .bearer_auth(&cli.token)
        .json(&body)
        .send()
        .await?;
    ensure!(
        response.status().is_success(),
        "batch: {}",
        response.status()
    );
    let accepted = started.elapsed();
    let batch: Value = response.json().await?;
    let id = batch["id"].as_str().context("batch id")?.to_owned();
    let every = Duration::from_millis(100);
    let batch = ended_batch(client, &cli.gateway, &cli.token, &id, every).await?;
    ensure!(batch["counts"]["succeeded"] == cli.items, "batch: {batch}");
    let took = started.elapsed();
    let hits = month_hits(client, cli).await? - hits_before;
    println!(
        "batch of {} items, {}% repeating another: accepted in {:.0} ms, done in {:.1} s; \
         {hits} hits ({:.1}%), {} provider calls made, {hits} saved",
        cli.items,
        cli.repeated,
        ms(accepted),
        took.as_secs_f64(),
        hits as f64 * 100.0 / cli.items as f64,
        cli.items as i64 - hits,
    );
    Ok(())
}

/// The tenant's cache hits this month, from the usage endpoint.
async fn month_hits(client: &Client, cli: &Cli) -> anyhow::Result<i64> {
    let usage: Value = client
        .get(format!("{}/v1/usage", cli.gateway))
        .bearer_auth(&cli.token)
        .send()
        .await?
        .json()
        .await?;
    usage["cache_hits"]
        .as_i64()
        .with_context(|| format!("no cache hits in {usage}"))
}
