//! `tollgate-bench-floor`: the floor of a durable sync call on this machine (issue 38) — what no
//! gateway that keeps its jobs can go below. A durable call needs one fsync'd commit before its
//! work is trusted to the broker (the job row), one confirmed publish, and one fsync'd commit of
//! its outcome; this times each, one after another, on the machine's Postgres and RabbitMQ:
//! a single-row insert committed alone (with `synchronous_commit` on, and off for comparison) and
//! a job message published to a quorum queue and confirmed.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tollgate_bench::percentile;
use tollgate_core::domain::JobId;
use tollgate_core::process::Tasks;
use tollgate_core::queue::{Broker, Topology};

#[derive(Debug, Parser)]
#[command(name = "tollgate-bench-floor")]
struct Cli {
    /// A database the benchmark may make a table in.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// The prefix of the queues it declares (removed by its script).
    #[arg(long, env = "TOLLGATE_QUEUE_PREFIX", default_value = "benchfloor")]
    prefix: String,
    /// Operations timed per measure.
    #[arg(long, default_value_t = 2000)]
    count: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let pool = tollgate_core::db::connect(&cli.database_url, 2).await?;
    sqlx::query("create table if not exists floor_probe (id bigint primary key, at timestamptz)")
        .execute(&pool)
        .await?;
    let mut next = 0i64;
    for (label, synchronous) in [
        ("fsync'd single-row commit", "on"),
        ("commit without fsync", "off"),
    ] {
        let mut conn = pool.acquire().await?;
        sqlx::query(&format!("set synchronous_commit = {synchronous}"))
            .execute(&mut *conn)
            .await?;
        let mut times = Vec::with_capacity(cli.count);
        for _ in 0..cli.count {
            next += 1;
            let started = Instant::now();
            sqlx::query("insert into floor_probe (id, at) values ($1, now())")
                .bind(next)
                .execute(&mut *conn)
                .await?;
            times.push(started.elapsed());
        }
        sqlx::query("reset synchronous_commit")
            .execute(&mut *conn)
            .await?;
        report(label, times);
    }
    sqlx::query("drop table floor_probe").execute(&pool).await?;

    let broker = Broker::new(
        cli.amqp_url,
        Topology::new(cli.prefix),
        "tollgate-bench-floor",
    );
    let stop = CancellationToken::new();
    let mut tasks = Tasks::default();
    tasks.spawn("broker", broker.clone().supervise(stop.clone()));
    broker
        .connected(Duration::from_secs(10))
        .await
        .context("RabbitMQ within 10 s")?;
    let mut times = Vec::with_capacity(cli.count);
    for _ in 0..cli.count {
        let started = Instant::now();
        broker.publish_job(JobId::new(), None).await?;
        times.push(started.elapsed());
    }
    report("confirmed publish (quorum queue)", times);
    stop.cancel();
    tasks.join().await?;
    Ok(())
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
fn report(label: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label:>34}: p50 {:.3} ms  p99 {:.3} ms  ({} in a row)",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        times.len()
    );
}
