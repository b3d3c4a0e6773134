//! `tollgate-bench-resolve`: what provider resolution costs a job, beside one database round trip.
//!
//! It loads the runtime settings from `DATABASE_URL` as a worker does, then times `Providers::plan`
//! (the per-job resolution: settings, routes, availability, the chain) over many calls, and a
//! `select version from settings` (what a resolution reading Postgres per job would at least cost)
//! in the same run.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use tollgate_core::domain::{DataPolicy, RouteInput};
use tollgate_core::runtime::RuntimeWatch;
use tollgate_worker::{Fleet, Providers};

#[derive(Debug, Parser)]
#[command(name = "tollgate-bench-resolve")]
struct Cli {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The model to resolve.
    #[arg(long, default_value = "llama3")]
    model: String,
    /// Resolutions per sample.
    #[arg(long, default_value_t = 100_000)]
    iterations: u32,
    /// Samples; the median is reported.
    #[arg(long, default_value_t = 9)]
    samples: usize,
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let pool = tollgate_core::db::connect(&cli.database_url, 2)
        .await
        .context("connect to the database")?;
    tollgate_core::db::migrate(&pool).await?;
    let runtime = RuntimeWatch::load(pool.clone()).await?;
    let (fleet, _tasks) = Fleet::new(
        pool.clone(),
        &runtime.current(),
        Duration::from_secs(15),
        Duration::from_secs(5),
        None,
    );
    let providers = Providers::new(runtime, fleet, None, Duration::from_secs(5));
    let job = RouteInput {
        policy: DataPolicy::Any,
        bulk: false,
        batch_overflow: false,
        share_draw: 0,
        needs: tollgate_core::domain::Capabilities::NONE,
    };
    let steps = providers.plan(&cli.model, job).await.steps.len();
    anyhow::ensure!(steps > 0, "{} resolves to no provider", cli.model);

    let mut resolve = Vec::new();
    for _ in 0..cli.samples {
        let clock = Instant::now();
        for _ in 0..cli.iterations {
            std::hint::black_box(providers.plan(std::hint::black_box(&cli.model), job).await);
        }
        resolve.push(clock.elapsed() / cli.iterations);
    }
    let mut round_trip = Vec::new();
    for _ in 0..cli.samples {
        let clock = Instant::now();
        for _ in 0..1_000 {
            tollgate_core::db::settings::version(&pool).await?;
        }
        round_trip.push(clock.elapsed() / 1_000);
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (resolve, round_trip) = (median(resolve), median(round_trip));
    println!(
        "resolve {model}: {steps} step(s), median {resolve:?} per job; \
         one settings query: median {round_trip:?} ({ratio:.0}x a resolution)",
        model = cli.model,
        ratio = round_trip.as_secs_f64() / resolve.as_secs_f64(),
    );
    Ok(())
}
