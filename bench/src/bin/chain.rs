//! `tollgate-bench-chain`: what the api's middleware chain costs one request.
//!
//! One client on one keep-alive connection sends requests one at a time, so nothing queues. Three
//! kinds of request alternate, round after round:
//! - `GET /healthz`: the server and its layers (trace, timeout, CORS, rate headers, body limits)
//!   with no extractor behind them;
//! - `POST /v1/generate` for a model no provider serves, with a token without rules: refused with
//!   422 once the body is validated, so it passes every extractor (token cache, access rules, rate
//!   limits, JSON) and writes nothing;
//! - the same with a token carrying allowed domains, allowed networks and a rate limit, whose
//!   tenant has a rate limit too.
//!
//! A 422's latency minus `/healthz`'s bounds from above what authentication, access rules and rate
//! limiting add (it includes parsing and validating the body).

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use clap::Parser;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::json;
use tollgate_bench::{median, percentile};

#[derive(Debug, Parser)]
#[command(name = "tollgate-bench-chain")]
struct Cli {
    /// Base URL of the api.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A client token without access rules or rate limits.
    #[arg(long)]
    plain_token: String,
    /// A client token with allowed domains, allowed networks and rate limits.
    #[arg(long)]
    guarded_token: String,
    /// The `Origin` the guarded token allows.
    #[arg(long)]
    origin: String,
    /// Requests of each kind per round.
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

#[derive(Clone, Copy)]
enum Kind {
    Health,
    Plain,
    Guarded,
}

impl Kind {
    const ALL: [Self; 3] = [Self::Health, Self::Plain, Self::Guarded];

    fn label(self) -> &'static str {
        match self {
            Self::Health => "GET /healthz",
            Self::Plain => "422, token without rules",
            Self::Guarded => "422, token with domains, networks, limits",
        }
    }

    fn expected(self) -> StatusCode {
        match self {
            Self::Health => StatusCode::OK,
            Self::Plain | Self::Guarded => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

/// Median p50 and p99 over the rounds, in microseconds.
#[derive(Default)]
struct Figures {
    p50s: Vec<f64>,
    p99s: Vec<f64>,
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let http = Client::builder().pool_max_idle_per_host(1).build()?;
    let mut figures: [Figures; 3] = Default::default();
    // One unmeasured pass fills the token cache and warms the connection.
    for kind in Kind::ALL {
        measure(&http, &cli, kind, 200).await?;
    }
    for round in 1..=cli.rounds {
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            let mut latencies = measure(&http, &cli, kind, cli.requests).await?;
            latencies.sort_unstable();
            let micros = |p: f64| percentile(&latencies, p).as_secs_f64() * 1e6;
            let (p50, p99) = (micros(0.50), micros(0.99));
            println!(
                "round {round}: {:<42} p50 {p50:>6.1} µs  p99 {p99:>6.1} µs",
                kind.label()
            );
            figures[i].p50s.push(p50);
            figures[i].p99s.push(p99);
        }
    }
    println!("medians over {} rounds of {}:", cli.rounds, cli.requests);
    for (kind, figures) in Kind::ALL.into_iter().zip(&figures) {
        println!(
            "  {:<42} p50 {:>6.1} µs  p99 {:>6.1} µs",
            kind.label(),
            median(figures.p50s.clone()),
            median(figures.p99s.clone())
        );
    }
    let health = median(figures[0].p50s.clone());
    println!(
        "chain (p50 minus /healthz's): without rules {:.1} µs, with every rule {:.1} µs",
        median(figures[1].p50s.clone()) - health,
        median(figures[2].p50s.clone()) - health
    );
    Ok(())
}

async fn measure(
    http: &Client,
    cli: &Cli,
    kind: Kind,
    requests: usize,
) -> anyhow::Result<Vec<Duration>> {
    let unserved = json!({ "model": "no-such-model", "prompt": "hi" });
    let mut latencies = Vec::with_capacity(requests);
    for _ in 0..requests {
        let request: RequestBuilder = match kind {
            Kind::Health => http.get(format!("{}/healthz", cli.url)),
            Kind::Plain => http
                .post(format!("{}/v1/generate", cli.url))
                .bearer_auth(&cli.plain_token)
                .json(&unserved),
            Kind::Guarded => http
                .post(format!("{}/v1/generate", cli.url))
                .bearer_auth(&cli.guarded_token)
                .header("origin", &cli.origin)
                .json(&unserved),
        };
        let started = Instant::now();
        let response = request.send().await.context("request")?;
        let status = response.status();
        response.bytes().await.context("body")?;
        latencies.push(started.elapsed());
        ensure!(
            status == kind.expected(),
            "{} answered {status}",
            kind.label()
        );
    }
    Ok(latencies)
}
