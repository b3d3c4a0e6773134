//! `GET /v1/usage` (this calendar month, UTC, by model) and `GET /v1/usage/history` (one row per
//! day), served from the daily rollup. Clients see their tenant; admins may ask for any tenant
//! (`tenant_id=…`) or all of them (`tenant_id=all`).

use axum::Json;
use axum::extract::State;
use chrono::{Datelike as _, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tollgate_core::db::tokens::Principal;
use tollgate_core::db::usage::{self, DayTotals, ModelTotals, ReasonTotals, Scope, Totals};
use tollgate_core::domain::Role;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::access::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::QueryParams;

/// Longest history one request may ask for.
const MAX_HISTORY_DAYS: i64 = 366;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(month))
        .routes(routes!(history))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct MonthQuery {
    /// Admins: this tenant's usage, or `all` for every tenant's.
    tenant_id: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// First day, `YYYY-MM-DD` (UTC); 30 days before `to` unless given.
    #[param(format = Date)]
    from: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC); today unless given. At most 366 days from `from`.
    #[param(format = Date)]
    to: Option<String>,
    /// Admins: this tenant's usage, or `all` for every tenant's.
    tenant_id: Option<String>,
}

/// The month so far: totals, by model and by why jobs went where they did.
#[derive(Serialize, ToSchema)]
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

/// Day by day totals.
#[derive(Serialize, ToSchema)]
struct History {
    from: NaiveDate,
    to: NaiveDate,
    data: Vec<DayTotals>,
}

/// Usage this month
#[utoipa::path(get, path = "/v1/usage", tag = "Usage", params(MonthQuery),
    description = "Your tenant's tokens and spend this calendar month (UTC), in all and by model.",
    responses(
        (status = 200, description = "The month's usage", body = MonthUsage),
        (status = 422, description = "`tenant_id` is refused"),
    ))]
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

/// Usage by day
#[utoipa::path(get, path = "/v1/usage/history", tag = "Usage", params(HistoryQuery),
    responses(
        (status = 200, description = "Each day's totals", body = History),
        (status = 422, description = "A date is refused, or the span is over 366 days"),
    ))]
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
