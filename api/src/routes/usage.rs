//! `GET /v1/usage` (this calendar month, UTC, by model) and `GET /v1/usage/history` (one row per
//! day), served from the daily rollup. Clients see their tenant; admins may ask for any tenant
//! (`tenant_id=…`) or all of them (`tenant_id=all`).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Datelike as _, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tollgate_core::db::tokens::Principal;
use tollgate_core::db::usage::{self, DayTotals, ModelTotals, ReasonTotals, Scope, Totals};
use tollgate_core::domain::Role;

use crate::AppState;
use crate::access::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::QueryParams;

/// Longest history one request may ask for.
const MAX_HISTORY_DAYS: i64 = 366;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/usage", get(month))
        .route("/v1/usage/history", get(history))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MonthQuery {
    tenant_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    from: Option<String>,
    to: Option<String>,
    tenant_id: Option<String>,
}

#[derive(Serialize)]
struct MonthUsage {
    /// `YYYY-MM`, UTC.
    month: String,
    from: NaiveDate,
    to: NaiveDate,
    #[serde(flatten)]
    totals: Totals,
    by_model: Vec<ModelTotals>,
    /// Why the jobs went where they did: what the local fleet served (`active`, `share`), what
    /// overflowed to the cloud, what fell back.
    by_route_reason: Vec<ReasonTotals>,
}

#[derive(Serialize)]
struct History {
    from: NaiveDate,
    to: NaiveDate,
    data: Vec<DayTotals>,
}

async fn month(
    State(state): State<AppState>,
    Caller(caller): Caller,
    QueryParams(query): QueryParams<MonthQuery>,
) -> Result<Json<MonthUsage>, ApiError> {
    let scope = scope(&caller, query.tenant_id.as_deref())?;
    let to = Utc::now().date_naive();
    let from = to.with_day(1).unwrap_or(to);
    let (totals, by_model) = usage::by_model(&state.pool, scope, from, to).await?;
    let by_route_reason = usage::by_route_reason(&state.pool, scope, from, to).await?;
    Ok(Json(MonthUsage {
        month: from.format("%Y-%m").to_string(),
        from,
        to,
        totals,
        by_model,
        by_route_reason,
    }))
}

async fn history(
    State(state): State<AppState>,
    Caller(caller): Caller,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    let scope = scope(&caller, query.tenant_id.as_deref())?;
    let to = match &query.to {
        Some(to) => day("to", to)?,
        None => Utc::now().date_naive(),
    };
    let from = match &query.from {
        Some(from) => day("from", from)?,
        None => to - Duration::days(29),
    };
    if from > to {
        return Err(ApiError::invalid_field("from", "must not be after `to`"));
    }
    if (to - from).num_days() >= MAX_HISTORY_DAYS {
        return Err(ApiError::invalid_field(
            "from",
            format!("the span may be at most {MAX_HISTORY_DAYS} days"),
        ));
    }
    let data = usage::by_day(&state.pool, scope, from, to).await?;
    Ok(Json(History { from, to, data }))
}

fn day(field: &str, value: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid_field(field, "must be a date as YYYY-MM-DD"))
}

/// The caller's own tenant, or for an admin the one asked for, or all of them (`all`).
fn scope(caller: &Principal, asked: Option<&str>) -> Result<Scope, ApiError> {
    match asked {
        Some("all") if caller.role == Role::Admin => Ok(Scope::All),
        Some("all") => Err(ApiError::forbidden(
            "only admins may see other tenants' usage",
        )),
        asked => super::tenancy::tenant(caller, asked).map(Scope::Tenant),
    }
}
