//! `tollgate-bench-compare`: Tollgate's interactive path side by side with a plain call and with
//! other gateways (issue 38). The same non-streaming chat completion, a new question each call,
//! is sent to every target — Tollgate's OpenAI surface, the upstream direct, and whatever peers
//! the script started (Portkey's gateway, LiteLLM's proxy) — at each concurrency, the targets
//! taking turns round after round so that a noisy minute hurts them all alike.
//!
//! Per target and concurrency it reports p50 and p99 over every call, the median round's calls a
//! second, and the CPU seconds each named process spent per 1,000 calls during that target's
//! turns (read from `/proc/<pid>/stat`, summed over every process whose command line contains the
//! process's pattern): what a change saves, judged apart from a noisy latency.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use reqwest::Client;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use tollgate_bench::{median, percentile};

#[derive(Debug, Parser)]
#[command(name = "tollgate-bench-compare")]
struct Cli {
    /// A target, `NAME=URL` of its chat completions endpoint; in the order they take turns.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// The model a target is asked for, `NAME=MODEL` (default `llama3`).
    #[arg(long = "model")]
    models: Vec<String>,
    /// A header a target's calls carry, `NAME=Header: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// A process whose CPU time is reported, `LABEL=PATTERN` (a substring of its command line).
    #[arg(long = "process")]
    processes: Vec<String>,
    /// Concurrent clients, one level after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Rounds per level; in each, every target makes `calls` calls.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Calls per target and round.
    #[arg(long, default_value_t = 500)]
    calls: usize,
}

/// One endpoint under test.
struct Target {
    name: String,
    url: String,
    model: String,
    headers: HeaderMap,
}

/// A process group whose CPU time is counted.
struct Watched {
    label: String,
    pattern: String,
}

/// What one target did at one concurrency, over every round.
#[derive(Default)]
struct Tally {
    times: Vec<Duration>,
    rates: Vec<f64>,
    /// CPU seconds per watched process, summed over the target's turns.
    cpu: BTreeMap<String, f64>,
    calls: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let targets = targets(&cli)?;
    let watched = watched(&cli.processes)?;
    // Idle connections are dropped before a server closes them (Tollgate's api closes a
    // connection idle past its header timeout), so a call never races a closing connection.
    let client = Client::builder()
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(5))
        .build()?;
    for target in &targets {
        call(&client, target, 0)
            .await
            .with_context(|| format!("a first call to {}", target.name))?;
    }
    for &concurrency in &cli.concurrency {
        let mut tallies: Vec<Tally> = targets.iter().map(|_| Tally::default()).collect();
        for round in 0..cli.rounds {
            for (target, tally) in targets.iter().zip(&mut tallies) {
                let before = cpu_seconds(&watched);
                let started = Instant::now();
                let first = 1 + round * cli.calls;
                let times = load(&client, target, concurrency, cli.calls, first).await?;
                tally
                    .rates
                    .push(times.len() as f64 / started.elapsed().as_secs_f64());
                for (label, spent) in cpu_seconds(&watched) {
                    let was = before.get(&label).copied().unwrap_or(0.0);
                    *tally.cpu.entry(label).or_default() += (spent - was).max(0.0);
                }
                tally.calls += times.len();
                tally.times.extend(times);
            }
        }
        report(concurrency, cli.rounds, cli.calls, &targets, tallies);
    }
    Ok(())
}

fn targets(cli: &Cli) -> anyhow::Result<Vec<Target>> {
    let models = pairs(&cli.models)?;
    let mut targets = Vec::new();
    for (name, url) in pairs(&cli.targets)? {
        let mut headers = HeaderMap::new();
        for (owner, header) in pairs(&cli.headers)? {
            if owner != name {
                continue;
            }
            let (key, value) = header
                .split_once(':')
                .with_context(|| format!("header {header:?} is not `Key: value`"))?;
            headers.insert(
                HeaderName::try_from(key.trim())?,
                HeaderValue::try_from(value.trim())?,
            );
        }
        let model = models
            .iter()
            .find(|(owner, _)| *owner == name)
            .map_or_else(|| "llama3".to_owned(), |(_, model)| model.clone());
        targets.push(Target {
            name,
            url,
            model,
            headers,
        });
    }
    Ok(targets)
}

fn watched(processes: &[String]) -> anyhow::Result<Vec<Watched>> {
    Ok(pairs(processes)?
        .into_iter()
        .map(|(label, pattern)| Watched { label, pattern })
        .collect())
}

/// `NAME=VALUE` arguments split at their first `=`.
fn pairs(arguments: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    arguments
        .iter()
        .map(|argument| match argument.split_once('=') {
            Some((name, value)) => Ok((name.to_owned(), value.to_owned())),
            None => bail!("{argument:?} is not NAME=VALUE"),
        })
        .collect()
}

/// `calls` calls to `target` from `concurrency` clients, each calling one after the other; the
/// time of each.
async fn load(
    client: &Client,
    target: &Target,
    concurrency: usize,
    calls: usize,
    first: usize,
) -> anyhow::Result<Vec<Duration>> {
    let per_client = calls.div_ceil(concurrency);
    let clients = (0..concurrency).map(|c| async move {
        let mut taken = Vec::with_capacity(per_client);
        for i in 0..per_client {
            taken.push(call(client, target, first + c * per_client + i).await?);
        }
        anyhow::Ok(taken)
    });
    let mut times = Vec::with_capacity(per_client * concurrency);
    for taken in futures::future::try_join_all(clients).await? {
        times.extend(taken);
    }
    Ok(times)
}

/// One chat completion, question `n`; its time.
async fn call(client: &Client, target: &Target, n: usize) -> anyhow::Result<Duration> {
    let body = json!({
        "model": target.model,
        "temperature": 0,
        "messages": [{ "role": "user", "content": format!("Describe teapot {n} for a catalogue.") }],
    });
    let started = Instant::now();
    let response = client
        .post(&target.url)
        .headers(target.headers.clone())
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {}", target.url))?;
    let status = response.status();
    let answer = response.bytes().await?;
    let took = started.elapsed();
    ensure!(
        status.is_success(),
        "{} answered {status}: {}",
        target.name,
        String::from_utf8_lossy(&answer)
    );
    Ok(took)
}

/// CPU seconds (user + system) spent so far by each watched group's live processes.
fn cpu_seconds(watched: &[Watched]) -> BTreeMap<String, f64> {
    let mut spent: BTreeMap<String, f64> = watched.iter().map(|w| (w.label.clone(), 0.0)).collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return spent;
    };
    // This program's own command line names every pattern.
    let me = std::process::id().to_string();
    for entry in entries
        .flatten()
        .filter(|entry| entry.file_name() != me.as_str())
    {
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let Some(group) = watched.iter().find(|w| cmdline.contains(&w.pattern)) else {
            continue;
        };
        if let Some(seconds) = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|stat| ticks(&stat))
        {
            *spent.entry(group.label.clone()).or_default() += seconds;
        }
    }
    spent
}

/// User plus system time from a `/proc/<pid>/stat` line, in seconds (USER_HZ is 100 on Linux).
fn ticks(stat: &str) -> Option<f64> {
    // The command name, in parentheses, may hold spaces: fields are counted after its end.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
fn report(
    concurrency: usize,
    rounds: usize,
    calls: usize,
    targets: &[Target],
    tallies: Vec<Tally>,
) {
    println!("-- {concurrency} client(s), {rounds} rounds of {calls} calls per target");
    for (target, mut tally) in targets.iter().zip(tallies) {
        tally.times.sort();
        let p50 = ms(percentile(&tally.times, 0.5));
        let p99 = ms(percentile(&tally.times, 0.99));
        let per_thousand = 1000.0 / tally.calls.max(1) as f64;
        let cpu: Vec<String> = tally
            .cpu
            .iter()
            .filter(|(_, seconds)| **seconds > 0.0)
            .map(|(label, seconds)| format!("{label} {:.2}", seconds * per_thousand))
            .collect();
        let tail = if p99 > 10.0 * p50 {
            "  p99 > 10 x p50"
        } else {
            ""
        };
        println!(
            "{:>10}: p50 {p50:>8.2} ms  p99 {p99:>8.2} ms  {:>6.0} calls/s  CPU s/1000 calls: {}{tail}",
            target.name,
            median(tally.rates),
            cpu.join(", "),
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name_whatever_it_holds() {
        let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194304 500 0 0 0 250 50 0 0 20 0 9";
        assert_eq!(ticks(stat), Some(3.0));
        assert_eq!(ticks("garbage"), None);
    }

    #[test]
    fn arguments_split_at_their_first_equals_sign() {
        let split =
            pairs(&["portkey=x-portkey-custom-host: http://h/v1?a=b".to_owned()]).expect("splits");
        assert_eq!(split[0].0, "portkey");
        assert_eq!(split[0].1, "x-portkey-custom-host: http://h/v1?a=b");
        assert!(pairs(&["no-equals".to_owned()]).is_err());
    }
}
