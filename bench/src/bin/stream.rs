//! `tollgate-bench-stream`: what the queue adds to a streamed chat, against provider-sim direct.
//!
//! The sides are the same streamed chat — through the gateway's OpenAI surface
//! (`/openai/v1/chat/completions`: api → RabbitMQ → worker → the sim's Ollama stream → relay →
//! api), through its Anthropic surface (`/anthropic/v1/messages`, the same path written as
//! Anthropic's events), and straight to the sim's own `/v1/chat/completions`, which streams the
//! same words at the same per-token delay. At each concurrency the sides take turns, round after
//! round, and for each stream the time to first token (first piece of text) and the total time
//! are taken.
//! Then one client makes non-streaming calls one at a time through both, for the added latency.
//! With `--hold N`, it finally opens N streams at once through the gateway and keeps them open
//! (the caller samples the api's memory meanwhile).

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use clap::Parser;
use futures::StreamExt as _;
use reqwest::Client;
use serde_json::{Value, json};
use tollgate_bench::{median, percentile};

#[derive(Debug, Parser)]
#[command(name = "tollgate-bench-stream")]
struct Cli {
    /// The gateway's OpenAI base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/openai/v1")]
    gateway: String,
    /// The gateway's Anthropic base URL (its SDKs' form: `/v1` is added).
    #[arg(long, default_value = "http://127.0.0.1:8080/anthropic")]
    anthropic: String,
    /// provider-sim's OpenAI base URL.
    #[arg(long, default_value = "http://127.0.0.1:11434/v1")]
    direct: String,
    /// A client token of the gateway.
    #[arg(long)]
    token: String,
    /// The model asked of the gateway (routed to the sim's Ollama side).
    #[arg(long, default_value = "llama3")]
    model: String,
    /// The model asked of the sim directly (one its OpenAI side serves).
    #[arg(long, default_value = "gpt-4o-mini")]
    direct_model: String,
    /// Concurrent streams, one level after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    concurrency: Vec<usize>,
    /// Rounds per level; each round runs `concurrency` streams per side (at least 10).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Rounds per level run first and not counted: the pools' connections opened, each
    /// connection's statements planned, as a gateway that has been serving has them.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Non-streaming calls per side for the overhead at one client.
    #[arg(long, default_value_t = 300)]
    calls: usize,
    /// Streams to open at once and hold through the gateway, after the rest (0: none).
    #[arg(long, default_value_t = 0)]
    hold: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The gateway's OpenAI surface.
    Gateway,
    /// The gateway's Anthropic surface.
    Anthropic,
    Direct,
}

impl Side {
    const ALL: [Self; 3] = [Self::Gateway, Self::Anthropic, Self::Direct];

    fn label(self) -> &'static str {
        match self {
            Self::Gateway => "openai",
            Self::Anthropic => "anthropic",
            Self::Direct => "direct",
        }
    }
}

/// One stream's timings.
struct Timed {
    first_token: Duration,
    total: Duration,
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = Client::builder()
        .pool_max_idle_per_host(2048)
        .timeout(Duration::from_secs(600))
        .build()?;
    println!("== streams: time to first token and total (ms), each surface vs direct");
    println!(
        "{:>6} {:>9} | {:>9} {:>9} | {:>9} {:>9} | {:>10} {:>10}",
        "conc", "side", "ttft p50", "ttft p99", "total p50", "total p99", "+ttft p50", "+ttft p99"
    );
    for &concurrency in &cli.concurrency {
        let mut timed = [Vec::new(), Vec::new(), Vec::new()];
        for round in 0..cli.warmup + cli.rounds {
            // Rotate which side goes first, so none always runs on a warmer machine.
            let mut order = Side::ALL;
            order.rotate_left(round % Side::ALL.len());
            for side in order {
                let streams = concurrency.max(10);
                let batch = run_streams(&client, &cli, side, concurrency, streams).await?;
                if round >= cli.warmup {
                    timed[side as usize].extend(batch);
                }
            }
        }
        report(concurrency, &mut timed);
    }
    overhead(&client, &cli).await?;
    if cli.hold > 0 {
        hold(&client, &cli).await?;
    }
    Ok(())
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
fn report(concurrency: usize, timed: &mut [Vec<Timed>; 3]) {
    let stats = |timed: &[Timed]| {
        let mut first: Vec<Duration> = timed.iter().map(|t| t.first_token).collect();
        let mut total: Vec<Duration> = timed.iter().map(|t| t.total).collect();
        first.sort();
        total.sort();
        [
            percentile(&first, 0.5),
            percentile(&first, 0.99),
            percentile(&total, 0.5),
            percentile(&total, 0.99),
        ]
    };
    let direct = stats(&timed[Side::Direct as usize]);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for side in Side::ALL {
        let s = stats(&timed[side as usize]);
        let added = match side {
            Side::Direct => String::new(),
            _ => format!(
                "{:>10.2} {:>10.2}",
                ms(s[0]) - ms(direct[0]),
                ms(s[1]) - ms(direct[1])
            ),
        };
        println!(
            "{concurrency:>6} {:>9} | {:>9.2} {:>9.2} | {:>9.1} {:>9.1} | {added}",
            side.label(),
            ms(s[0]),
            ms(s[1]),
            ms(s[2]),
            ms(s[3]),
        );
    }
    for side in [Side::Gateway, Side::Anthropic] {
        println!(
            "{concurrency:>6}    total | {} / direct p50: {:.4}",
            side.label(),
            ms(stats(&timed[side as usize])[2]) / ms(direct[2])
        );
    }
}

/// Runs `count` streams on `side`, at most `concurrency` at once.
async fn run_streams(
    client: &Client,
    cli: &Cli,
    side: Side,
    concurrency: usize,
    count: usize,
) -> anyhow::Result<Vec<Timed>> {
    let results: Vec<anyhow::Result<Timed>> = futures::stream::iter(0..count)
        .map(|i| one_stream(client, cli, side, i))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

/// A Chat Completions call on `side` (a Messages API call on the Anthropic surface), for its
/// model.
fn chat(cli: &Cli, client: &Client, side: Side, mut body: Value) -> reqwest::RequestBuilder {
    let (url, model) = match side {
        Side::Gateway => (format!("{}/chat/completions", cli.gateway), &cli.model),
        Side::Anthropic => {
            body["max_tokens"] = json!(1024);
            let url = format!("{}/v1/messages", cli.anthropic);
            let call = client.post(url).header("x-api-key", &cli.token);
            body["model"] = json!(cli.model);
            return call.json(&body);
        }
        Side::Direct => (
            format!("{}/chat/completions", cli.direct),
            &cli.direct_model,
        ),
    };
    body["model"] = json!(model);
    client.post(url).bearer_auth(&cli.token).json(&body)
}

async fn one_stream(client: &Client, cli: &Cli, side: Side, i: usize) -> anyhow::Result<Timed> {
    let body = json!({ "stream": true,
                       "messages": [{ "role": "user", "content": format!("stream {i}") }] });
    let started = Instant::now();
    let response = chat(cli, client, side, body).send().await?;
    ensure!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    let mut body = response.bytes_stream();
    let mut first_token = None;
    let mut pending = String::new();
    while let Some(chunk) = body.next().await {
        if first_token.is_some() {
            chunk?;
            continue;
        }
        pending.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            if has_text(&line) {
                first_token = Some(started.elapsed());
                break;
            }
        }
    }
    let total = started.elapsed();
    Ok(Timed {
        first_token: first_token.context("a stream without text")?,
        total,
    })
}

/// Whether an SSE line is a chunk with a piece of text (the role chunk's content is empty): a
/// Chat Completions chunk's content, or an Anthropic `text_delta`.
fn has_text(line: &str) -> bool {
    line.strip_prefix("data: ")
        .and_then(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .and_then(|chunk| {
            let openai = &chunk["choices"][0]["delta"]["content"];
            let anthropic = &chunk["delta"]["text"];
            openai
                .as_str()
                .or_else(|| anthropic.as_str())
                .map(|text| !text.is_empty())
        })
        .unwrap_or(false)
}

/// Non-streaming calls one at a time through both sides, alternating.
#[expect(clippy::print_stdout, reason = "the report is the program's output")]
async fn overhead(client: &Client, cli: &Cli) -> anyhow::Result<()> {
    let mut latencies = [Vec::new(), Vec::new(), Vec::new()];
    for i in 0..cli.calls * 2 {
        let side = if i % 2 == 0 {
            Side::Gateway
        } else {
            Side::Direct
        };
        let body = json!({ "messages": [{ "role": "user", "content": format!("call {i}") }] });
        let started = Instant::now();
        let response = chat(cli, client, side, body).send().await?;
        ensure!(
            response.status().is_success(),
            "status {}",
            response.status()
        );
        response.bytes().await?;
        latencies[side as usize].push(started.elapsed());
    }
    for l in &mut latencies {
        l.sort();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (gateway, direct) = (
        &latencies[Side::Gateway as usize],
        &latencies[Side::Direct as usize],
    );
    println!(
        "== non-streaming chat/completions, one client, {} calls a side",
        cli.calls
    );
    println!(
        "gateway p50 {:.2} ms p99 {:.2} ms | direct p50 {:.2} ms p99 {:.2} ms | added p50 {:.2} ms",
        ms(percentile(gateway, 0.5)),
        ms(percentile(gateway, 0.99)),
        ms(percentile(direct, 0.5)),
        ms(percentile(direct, 0.99)),
        median(vec![
            ms(percentile(gateway, 0.5)) - ms(percentile(direct, 0.5))
        ]),
    );
    Ok(())
}

/// Opens `hold` streams through the gateway at once and reads them to their end.
#[expect(clippy::print_stdout, reason = "the report is the program's output")]
async fn hold(client: &Client, cli: &Cli) -> anyhow::Result<()> {
    println!("== {} streams at once through the gateway", cli.hold);
    let started = Instant::now();
    let timed = run_streams(client, cli, Side::Gateway, cli.hold, cli.hold).await?;
    let mut first: Vec<Duration> = timed.iter().map(|t| t.first_token).collect();
    first.sort();
    println!(
        "all {} ended in {:.1} s; first token p50 {:.0} ms p99 {:.0} ms",
        timed.len(),
        started.elapsed().as_secs_f64(),
        percentile(&first, 0.5).as_secs_f64() * 1000.0,
        percentile(&first, 0.99).as_secs_f64() * 1000.0,
    );
    Ok(())
}
