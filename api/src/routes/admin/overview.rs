//! `GET /v1/admin/overview` (admin only): the dashboard's first page in one answer — requests
//! and jobs per minute over the last hour, the jobs not finished by status, the queues' depths,
//! what was charged today and this month, and each provider's health as the live workers report
//! it. Every part is read from something small (the per-minute activity, partial indexes, the
//! daily rollup, the workers' reports), so the answer stays quick however much history there is.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Datelike as _, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_core::db::activity::{self, Minute};
use tollgate_core::db::backlog::{self, Unfinished};
use tollgate_core::db::usage::{self, Scope};
use tollgate_core::db::workers::{self, ProviderState};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::access::auth::Admin;
use crate::http::error::ApiError;

/// How many minutes of activity the overview charts.
const MINUTES: i32 = 60;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(overview))
}

#[derive(Serialize, ToSchema)]
struct Overview {
    generated_at: DateTime<Utc>,
    /// The last hour, oldest minute first, summed over every api instance and worker.
    activity: Vec<Minute>,
    jobs: Unfinished,
    /// Messages ready in each queue; `null` while RabbitMQ cannot be asked.
    queues: Option<Vec<QueueDepth>>,
    spend: Spend,
    api_instances: u32,
    workers: usize,
    providers: Vec<ProviderHealth>,
}

#[derive(Serialize, ToSchema)]
struct QueueDepth {
    queue: String,
    messages: u32,
}

/// Charged to tenants at the prices in force (decimal strings).
#[derive(Serialize, ToSchema)]
#[schema(as = OverviewSpend)]
struct Spend {
    #[serde(with = "rust_decimal::serde::str")]
    today: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    month: Decimal,
}

/// A provider (or a fleet host) across the live workers.
#[derive(Debug, PartialEq, Eq, Serialize, ToSchema)]
struct ProviderHealth {
    provider: String,
    host: Option<String>,
    /// `closed` (calls go out), `open` (every worker holds it open) or `partly_open`.
    circuit: &'static str,
    /// Workers reporting it, and how many of them hold its circuit open.
    workers: u32,
    open_in: u32,
    /// Calls in flight across the workers, and its slots (a host's hold across workers; OpenAI's
    /// are each worker's).
    in_flight: u32,
    slots: u32,
}

/// Admin: the dashboard's overview (activity per minute, jobs by status, queues, spend, provider health)
#[utoipa::path(get,
    path = "/v1/admin/overview",
    tag = "Admin",
    responses(
        (status = 200, description = "The overview", body = Overview),
    ))]
async fn overview(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Json<Overview>, ApiError> {
    let today = Utc::now().date_naive();
    let month_start = today.with_day(1).unwrap_or(today);
    let (activity, jobs, days, reports, queues) = tokio::join!(
        activity::recent(&state.pool, MINUTES),
        backlog::unfinished(&state.pool),
        usage::by_day(&state.pool, Scope::All, month_start, today),
        workers::alive(&state.pool),
        state.broker.queue_depths(),
    );
    let days = days?;
    let reports = reports?;
    let spend = Spend {
        today: days
            .iter()
            .filter(|d| d.day == today)
            .map(|d| d.totals.cost)
            .sum(),
        month: days.iter().map(|d| d.totals.cost).sum(),
    };
    let queues = queues
        .inspect_err(|error| tracing::debug!(%error, "cannot read the queue depths"))
        .ok()
        .map(|depths| {
            depths
                .into_iter()
                .map(|(queue, messages)| QueueDepth { queue, messages })
                .collect()
        });
    Ok(Json(Overview {
        generated_at: Utc::now(),
        activity: activity?,
        jobs: jobs?,
        queues,
        spend,
        api_instances: state.limiter.instances(),
        workers: reports.len(),
        providers: across(reports.iter().flat_map(|r| r.providers.0.iter())),
    }))
}

/// Each provider's and host's states, one per worker, summed into one health.
fn across<'a>(states: impl Iterator<Item = &'a ProviderState>) -> Vec<ProviderHealth> {
    let mut by_provider: BTreeMap<(String, Option<String>), ProviderHealth> = BTreeMap::new();
    for state in states {
        let health = by_provider
            .entry((state.provider.clone(), state.host.clone()))
            .or_insert_with(|| ProviderHealth {
                provider: state.provider.clone(),
                host: state.host.clone(),
                circuit: "closed",
                workers: 0,
                open_in: 0,
                in_flight: 0,
                slots: 0,
            });
        health.workers += 1;
        health.open_in += u32::from(state.circuit_open);
        health.in_flight += state.in_flight;
        health.slots = health.slots.max(state.slots);
    }
    by_provider
        .into_values()
        .map(|mut health| {
            health.circuit = match health.open_in {
                0 => "closed",
                n if n == health.workers => "open",
                _ => "partly_open",
            };
            health
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(provider: &str, host: Option<&str>, open: bool, in_flight: u32) -> ProviderState {
        ProviderState {
            provider: provider.to_owned(),
            host: host.map(str::to_owned),
            circuit_open: open,
            slots: 4,
            in_flight,
        }
    }

    #[test]
    fn a_circuit_is_open_only_where_every_worker_holds_it_open() {
        let states = [
            state("ollama", Some("gpu-a"), true, 1),
            state("ollama", Some("gpu-a"), false, 2),
            state("ollama", Some("gpu-b"), true, 0),
            state("openai", None, false, 3),
            state("openai", None, false, 1),
        ];
        let health = across(states.iter());
        let circuits: Vec<_> = health
            .iter()
            .map(|h| (h.host.as_deref(), h.circuit, h.workers, h.in_flight))
            .collect();
        assert_eq!(
            circuits,
            [
                (Some("gpu-a"), "partly_open", 2, 3),
                (Some("gpu-b"), "open", 1, 0),
                (None, "closed", 2, 4),
            ]
        );
    }
}
