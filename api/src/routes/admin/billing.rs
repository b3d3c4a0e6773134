//! Operators' billing routes (admin only): prices (`GET/POST /v1/admin/prices`), usage no price
//! covered (`GET /v1/admin/usage/unpriced`), spend per provider beside charges per tenant
//! (`GET /v1/admin/spend`), and tenants' monthly limits (`GET/PUT /v1/admin/tenants/{id}/quota`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Datelike as _, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_core::db::prices::{self, PriceRow};
use tollgate_core::db::quotas::{self, Limits, MonthStatus};
use tollgate_core::db::usage::{self, ProviderSpend, TenantCharge, Unpriced};
use tollgate_core::domain::{ModelName, TenantId};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::providers::named;
use crate::AppState;
use crate::access::auth::Admin;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::{JsonBody, QueryParams};
use crate::http::path::Path;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_prices, add_price))
        .routes(routes!(unpriced))
        .routes(routes!(spend))
        .routes(routes!(quota, set_quota))
}

#[derive(Serialize, ToSchema)]
struct List<T> {
    data: Vec<T>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPrice {
    /// One of `ollama`, `openai`.
    provider: String,
    /// The upstream model
    model: String,
    /// Decimal strings, per 1,000 tokens.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.00015")]
    input_per_1k: Decimal,
    /// Decimal string
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.0006")]
    output_per_1k: Decimal,
    /// Decimal string: what a prompt token read from the provider's cache costs (OpenAI bills
    /// cached input apart); the input rate if absent.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>, example = "0.000075")]
    cached_input_per_1k: Option<Decimal>,
    /// Decimal string: what a prompt token written to the provider's cache costs (Anthropic
    /// bills cache writes apart); the input rate if absent.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>, example = "0.00375")]
    cache_write_input_per_1k: Option<Decimal>,
    /// Decimal string: what a response-cache hit costs per 1,000 tokens of the answer it
    /// replays; 0 if absent.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>, example = "0.0001")]
    cache_hit_per_1k: Option<Decimal>,
    /// When it takes effect; now if absent. Jobs finishing from then on are billed at it.
    effective_from: Option<DateTime<Utc>>,
}

/// Every price with its history
#[utoipa::path(get,
    path = "/v1/admin/prices",
    tag = "Admin",
    description = "`current` marks those in force",
    responses(
        (status = 200, description = "Every price, newest first", body = List<PriceRow>),
    ))]
async fn list_prices(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Json<List<PriceRow>>, ApiError> {
    Ok(Json(List {
        data: prices::list(&state.pool).await?,
    }))
}

/// Add a price
#[utoipa::path(post,
    path = "/v1/admin/prices",
    tag = "Admin",
    description = "Jobs finishing from its effective_from on are billed at it",
    request_body = NewPrice,
    responses(
        (status = 201, description = "The price", body = PriceRow),
        (status = 409, description = "a price takes effect at that instant already"),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
async fn add_price(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(price): JsonBody<NewPrice>,
) -> Result<(StatusCode, Json<PriceRow>), ApiError> {
    let provider = named(&state.runtime.current(), "provider", &price.provider)?;
    let model = ModelName::parse(&price.model)?;
    let rates = [
        ("input_per_1k", Some(price.input_per_1k)),
        ("output_per_1k", Some(price.output_per_1k)),
        ("cached_input_per_1k", price.cached_input_per_1k),
        ("cache_write_input_per_1k", price.cache_write_input_per_1k),
        ("cache_hit_per_1k", price.cache_hit_per_1k),
    ];
    for (field, value) in rates.into_iter().filter_map(|(f, v)| Some((f, v?))) {
        if value.is_sign_negative()
            || value.scale() > 10
            || value >= Decimal::from(10_000_000_000u64)
        {
            return Err(ApiError::invalid_field(
                field,
                "must be a non-negative decimal string with at most 10 decimal places",
            ));
        }
    }
    let row = prices::insert(
        &state.pool,
        provider,
        model.as_str(),
        prices::Rates {
            input_per_1k: price.input_per_1k,
            output_per_1k: price.output_per_1k,
            cached_input_per_1k: price.cached_input_per_1k,
            cache_write_input_per_1k: price.cache_write_input_per_1k,
            cache_hit_per_1k: price.cache_hit_per_1k.unwrap_or_default(),
        },
        price.effective_from,
    )
    .await
    .map_err(|error| match &error {
        sqlx::Error::Database(e) if e.constraint() == Some(prices::SAME_INSTANT) => {
            ApiError::conflict(
                ErrorCode::PriceExists,
                "a price for this provider and model takes effect at that instant already",
            )
        }
        _ => error.into(),
    })?;
    tracing::info!(token_id = %admin.token_id, provider = provider.as_str(), model = model.as_str(), "price added");
    Ok((StatusCode::CREATED, Json(row)))
}

/// Usage no price covered, by provider and upstream model
#[utoipa::path(get,
    path = "/v1/admin/usage/unpriced",
    tag = "Admin",
    responses(
        (status = 200, description = "The models used without a price", body = List<Unpriced>),
    ))]
async fn unpriced(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Json<List<Unpriced>>, ApiError> {
    Ok(Json(List {
        data: usage::unpriced(&state.pool).await?,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SpanQuery {
    /// First day (UTC); the month's first unless given.
    from: Option<NaiveDate>,
    /// Last day (UTC); today unless given.
    to: Option<NaiveDate>,
}

#[derive(Serialize, ToSchema)]
struct Spend {
    from: NaiveDate,
    to: NaiveDate,
    /// What the gateway paid, per provider and model, failed calls included.
    providers: Vec<ProviderSpend>,
    /// What each tenant was charged.
    tenants: Vec<TenantCharge>,
}

/// What the gateway paid per provider and model (failed calls included) beside what each tenant was charged
///
/// Defaults to this calendar month (UTC).
#[utoipa::path(get,
    path = "/v1/admin/spend",
    tag = "Admin",
    description = "Default this month",
    params(SpanQuery),
    responses(
        (status = 200, description = "Paid and charged", body = Spend),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
async fn spend(
    State(state): State<AppState>,
    Admin(_): Admin,
    QueryParams(query): QueryParams<SpanQuery>,
) -> Result<Json<Spend>, ApiError> {
    let today = Utc::now().date_naive();
    let to = query.to.unwrap_or(today);
    let from = query.from.unwrap_or(today.with_day(1).unwrap_or(today));
    if from > to {
        return Err(ApiError::invalid_field("from", "must not be after `to`"));
    }
    let (providers, tenants) = usage::spend(&state.pool, from, to).await?;
    Ok(Json(Spend {
        from,
        to,
        providers,
        tenants,
    }))
}

/// A tenant's monthly limits, this month's use and reservations
#[utoipa::path(get,
    path = "/v1/admin/tenants/{id}/quota",
    tag = "Admin",
    params(("id" = TenantId, Path)),
    responses(
        (status = 200, description = "The quota and the month so far", body = MonthStatus),
        (status = 404, description = "Not found (`not_found`)"),
    ))]
async fn quota(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<TenantId>,
) -> Result<Json<MonthStatus>, ApiError> {
    quotas::status(&state.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such tenant"))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    /// A decimal string, or null for no budget.
    #[serde(with = "rust_decimal::serde::str_option", default)]
    #[schema(value_type = Option<String>)]
    monthly_cost_budget: Option<Decimal>,
    monthly_token_quota: Option<i64>,
}

/// Set a tenant's monthly cost budget and token quota (null: none)
///
/// Replaces the tenant's limits (null or absent: none); api instances apply them within a second.
#[utoipa::path(put,
    path = "/v1/admin/tenants/{id}/quota",
    tag = "Admin",
    params(("id" = TenantId, Path)),
    request_body = QuotaBody,
    responses(
        (status = 200, description = "The quota", body = MonthStatus),
        (status = 404, description = "Not found (`not_found`)"),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
async fn set_quota(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<TenantId>,
    JsonBody(body): JsonBody<QuotaBody>,
) -> Result<Json<MonthStatus>, ApiError> {
    if body
        .monthly_cost_budget
        .is_some_and(|b| b.is_sign_negative())
    {
        return Err(ApiError::invalid_field(
            "monthly_cost_budget",
            "must not be negative",
        ));
    }
    if body.monthly_token_quota.is_some_and(|q| q < 0) {
        return Err(ApiError::invalid_field(
            "monthly_token_quota",
            "must not be negative",
        ));
    }
    let limits = Limits {
        monthly_cost_budget: body.monthly_cost_budget,
        monthly_token_quota: body.monthly_token_quota,
    };
    if !quotas::set_limits(&state.pool, id, &limits).await? {
        return Err(ApiError::not_found("no such tenant"));
    }
    quotas::status(&state.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such tenant"))
}
