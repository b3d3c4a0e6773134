//! `tollgate-bench-resolve`: what provider resolution costs a job, beside one database round trip.
//!
//! It loads the runtime settings from `DATABASE_URL` as a worker does, then times `Providers::plan`
//! (the per-job resolution: settings, routes, availability, the chain) over many calls, and a
//! `select version from settings` (what a resolution reading Postgres per job would at least cost)
//! in the same run.
//!
//! With `--registry 20,50` it then fills the database's registry with that many cloud accounts and
//! routes (each route on three accounts and the fleet, every other one with its own chain of
//! three accounts) and times the same model again, and a chained model, in the same run: what a
//! large registry adds to a job's resolution.

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
    /// PROVIDERS,ROUTES: fill the registry this large, then time again.
    #[arg(long, value_parser = parse_registry)]
    registry: Option<(u32, u32)>,
}

fn parse_registry(s: &str) -> Result<(u32, u32), String> {
    let (providers, routes) = s.split_once(',').ok_or("PROVIDERS,ROUTES")?;
    let number = |n: &str| n.trim().parse::<u32>().map_err(|e| e.to_string());
    Ok((number(providers)?, number(routes)?))
}

const ANY: RouteInput = RouteInput {
    policy: DataPolicy::Any,
    bulk: false,
    batch_overflow: false,
    share_draw: 0,
    needs: tollgate_core::domain::Capabilities::NONE,
};

/// A worker's providers over `runtime` as it stands (without their background tasks: resolution
/// reads only memory).
fn worker_providers(pool: &sqlx::PgPool, runtime: &RuntimeWatch) -> Providers {
    let (fleet, _tasks) = Fleet::new(
        pool.clone(),
        &runtime.current(),
        Duration::from_secs(15),
        Duration::from_secs(5),
        None,
    );
    Providers::new(runtime.clone(), fleet, None, Duration::from_secs(5))
}

/// The median time `providers` takes to plan a job for `model`.
async fn time_plans(providers: &Providers, model: &str, cli: &Cli) -> anyhow::Result<Duration> {
    let steps = providers.plan(model, ANY).await.steps.len();
    anyhow::ensure!(steps > 0, "{model} resolves to no provider");
    let mut samples = Vec::new();
    for _ in 0..cli.samples {
        let clock = Instant::now();
        for _ in 0..cli.iterations {
            std::hint::black_box(providers.plan(std::hint::black_box(model), ANY).await);
        }
        samples.push(clock.elapsed() / cli.iterations);
    }
    Ok(median(samples))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Adds `providers` cloud accounts (`cloud-1`…) and `routes` models (`model-1`…), each routed to
/// three accounts and the fleet, every odd one with its own chain of the three; the settings
/// version is bumped so processes reload.
async fn fill_registry(pool: &sqlx::PgPool, providers: u32, routes: u32) -> anyhow::Result<()> {
    let providers = i32::try_from(providers)?.max(3);
    let routes = i32::try_from(routes)?;
    let statements = [
        "insert into providers (name, kind, base_url)
         select 'cloud-' || i, 'openai_compatible', 'http://127.0.0.1:9/v1'
           from generate_series(1, $1) i on conflict do nothing",
        "insert into model_routes (model, provider, host_kind, upstream_model)
         select 'model-' || m, 'cloud-' || ((m + k) % $1 + 1), null, 'upstream-' || m
           from generate_series(1, $2) m, generate_series(0, 2) k
         union all
         select 'model-' || m, 'local', 'ollama', 'llama3' from generate_series(1, $2) m
         on conflict do nothing",
        "insert into model_chains (model, providers)
         select 'model-' || m, array['cloud-' || ((m + 2) % $1 + 1), 'cloud-' || ((m + 1) % $1 + 1),
                                     'cloud-' || (m % $1 + 1)]
           from generate_series(1, $2) m where m % 2 = 1 on conflict do nothing",
        "update settings set version = version + 1 where $1 > 0 and $2 > 0",
    ];
    for statement in statements {
        sqlx::query(statement)
            .bind(providers)
            .bind(routes)
            .execute(pool)
            .await?;
    }
    Ok(())
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
    let providers = worker_providers(&pool, &runtime);
    let steps = providers.plan(&cli.model, ANY).await.steps.len();
    let resolve = time_plans(&providers, &cli.model, &cli).await?;
    let mut round_trip = Vec::new();
    for _ in 0..cli.samples {
        let clock = Instant::now();
        for _ in 0..1_000 {
            tollgate_core::db::version::current(&pool).await?;
        }
        round_trip.push(clock.elapsed() / 1_000);
    }
    let round_trip = median(round_trip);
    println!(
        "resolve {model}: {steps} step(s), median {resolve:?} per job; \
         one settings query: median {round_trip:?} ({ratio:.0}x a resolution)",
        model = cli.model,
        ratio = round_trip.as_secs_f64() / resolve.as_secs_f64(),
    );
    if let Some((accounts, routes)) = cli.registry {
        fill_registry(&pool, accounts, routes).await?;
        runtime.refresh().await?;
        let large = worker_providers(&pool, &runtime);
        let clouds = runtime.current().clouds.len();
        let same = time_plans(&large, &cli.model, &cli).await?;
        let chained = time_plans(&large, "model-7", &cli).await?;
        let settled = time_plans(&large, "model-8", &cli).await?;
        println!(
            "with {clouds} cloud accounts and {routes}+ routes: resolve {model} median {same:?} \
             ({ratio:.2}x before); model-7 (its own chain of 3 accounts) {chained:?}; \
             model-8 (3 accounts and the fleet, the settings' order) {settled:?}",
            model = cli.model,
            ratio = same.as_secs_f64() / resolve.as_secs_f64(),
        );
    }
    Ok(())
}
