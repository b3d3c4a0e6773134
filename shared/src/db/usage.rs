//! Reading usage and spend: the `usage_daily` and `provider_spend_daily` rollups (never the
//! per-job records, so the answers stay quick however many jobs there are), and the unpriced
//! records admins must see.
//!
//! The usage reads are assembled with `QueryBuilder`: each is asked for one tenant or for all, and
//! grouped by model, route reason or day, and a prepared statement written as `($1 is null or
//! tenant_id = $1)` would share one generic plan between a tenant's few rows and everyone's (read
//! through the wrong index). Their fragments are constants here; every value is bound. The other
//! statements are compile-checked.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder};

use crate::domain::TenantId;

/// Whose usage: one tenant's, or every tenant's (admins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Tenant(TenantId),
    All,
}

impl Scope {
    /// Adds the rollup's rows in scope and in `[from, to]` to a `where` clause. Written out for
    /// each scope rather than as `($1 is null or tenant_id = $1)`: a prepared statement's generic
    /// plan cannot tell the two apart, and would read a tenant's few rows through the day index.
    fn push_rows(self, query: &mut QueryBuilder<'_, Postgres>, from: NaiveDate, to: NaiveDate) {
        match self {
            Self::Tenant(id) => query.push("tenant_id = ").push_bind(id),
            Self::All => query.push("true"),
        };
        query
            .push(" and day between ")
            .push_bind(from)
            .push(" and ")
            .push_bind(to);
    }
}

/// Requests, tokens and cost over some span.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Totals {
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// Of the completion tokens, those spent reasoning.
    pub reasoning_tokens: i64,
    /// Of the prompt tokens, those read from the provider's cache.
    pub cached_tokens: i64,
    #[serde(with = "rust_decimal::serde::str")]
    pub cost: Decimal,
    /// Requests billed without a price (not counted in `cost`).
    pub unpriced_requests: i64,
    /// Of the requests, those answered from the response cache (billed at the cache rate).
    pub cache_hits: i64,
    /// What the answers the cache replayed cost when they were called: what the hits saved.
    #[serde(with = "rust_decimal::serde::str")]
    pub saved_cost: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ModelTotals {
    pub model: String,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub totals: Totals,
}

/// Usage of the jobs that went where they did for one reason (`active`, `fallback`, `overflow`,
/// `share`; `unrecorded` before reasons were kept): what the fleet served and what it did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ReasonTotals {
    pub route_reason: String,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DayTotals {
    pub day: NaiveDate,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub totals: Totals,
}

const SUMS: &str = "coalesce(sum(requests), 0)::bigint as requests,
    coalesce(sum(prompt_tokens), 0)::bigint as prompt_tokens,
    coalesce(sum(completion_tokens), 0)::bigint as completion_tokens,
    coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint as total_tokens,
    coalesce(sum(reasoning_tokens), 0)::bigint as reasoning_tokens,
    coalesce(sum(cached_tokens), 0)::bigint as cached_tokens,
    coalesce(sum(cost), 0) as cost,
    coalesce(sum(unpriced_requests), 0)::bigint as unpriced_requests,
    coalesce(sum(cache_hits), 0)::bigint as cache_hits,
    coalesce(sum(saved_cost), 0) as saved_cost";

/// Usage per model over `[from, to]` (UTC days), and the whole.
pub async fn by_model(
    pool: &PgPool,
    scope: Scope,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<(Totals, Vec<ModelTotals>), sqlx::Error> {
    let models: Vec<ModelTotals> = grouped(pool, scope, from, to, "model").await?;
    let mut total = Totals::default();
    for m in &models {
        total.requests += m.totals.requests;
        total.prompt_tokens += m.totals.prompt_tokens;
        total.completion_tokens += m.totals.completion_tokens;
        total.total_tokens += m.totals.total_tokens;
        total.reasoning_tokens += m.totals.reasoning_tokens;
        total.cached_tokens += m.totals.cached_tokens;
        total.cost += m.totals.cost;
        total.unpriced_requests += m.totals.unpriced_requests;
        total.cache_hits += m.totals.cache_hits;
        total.saved_cost += m.totals.saved_cost;
    }
    Ok((total, models))
}

/// Usage per route reason over `[from, to]` (UTC days).
pub async fn by_route_reason(
    pool: &PgPool,
    scope: Scope,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<ReasonTotals>, sqlx::Error> {
    grouped(pool, scope, from, to, "route_reason").await
}

/// The rollup's sums over `[from, to]` grouped by one of its key columns, `by` (a constant of
/// this module, never input).
async fn grouped<T>(
    pool: &PgPool,
    scope: Scope,
    from: NaiveDate,
    to: NaiveDate,
    by: &'static str,
) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let mut query = QueryBuilder::new(format!("select {by}, {SUMS} from usage_daily where "));
    scope.push_rows(&mut query, from, to);
    query.push(format!(" group by {by} order by {by}"));
    query.build_query_as().fetch_all(pool).await
}

/// One row per UTC day in `[from, to]`, days without use as zeros.
pub async fn by_day(
    pool: &PgPool,
    scope: Scope,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DayTotals>, sqlx::Error> {
    // Summed first over the span (the tenant's key, or for every tenant `usage_daily_day`), then
    // laid on the calendar: joining the calendar first would hash the whole rollup.
    let mut query = QueryBuilder::new(
        "select days.day::date as day,
                coalesce(s.requests, 0) as requests,
                coalesce(s.prompt_tokens, 0) as prompt_tokens,
                coalesce(s.completion_tokens, 0) as completion_tokens,
                coalesce(s.total_tokens, 0) as total_tokens,
                coalesce(s.reasoning_tokens, 0) as reasoning_tokens,
                coalesce(s.cached_tokens, 0) as cached_tokens,
                coalesce(s.cost, 0) as cost,
                coalesce(s.unpriced_requests, 0) as unpriced_requests,
                coalesce(s.cache_hits, 0) as cache_hits,
                coalesce(s.saved_cost, 0) as saved_cost
           from generate_series(",
    );
    query
        .push_bind(from)
        .push("::date, ")
        .push_bind(to)
        .push(format!(
            "::date, interval '1 day') as days(day)
             left join (select day, {SUMS} from usage_daily where "
        ));
    scope.push_rows(&mut query, from, to);
    query.push(
        " group by day) s
             on s.day = days.day::date
          order by days.day",
    );
    query.build_query_as().fetch_all(pool).await
}

/// Usage that no price covered, by provider and upstream model, for admins to price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Unpriced {
    pub provider: String,
    pub upstream_model: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

pub async fn unpriced(pool: &PgPool) -> Result<Vec<Unpriced>, sqlx::Error> {
    sqlx::query_as!(
        Unpriced,
        r#"select provider, upstream_model, count(*) as "requests!",
                sum(prompt_tokens)::bigint as "prompt_tokens!",
                sum(completion_tokens)::bigint as "completion_tokens!",
                min(finished_at) as "first_seen!", max(finished_at) as "last_seen!"
           from usage_records where cost is null
          group by provider, upstream_model order by provider, upstream_model"#,
    )
    .fetch_all(pool)
    .await
}

/// What the gateway paid one provider for one model over a span, failed calls included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProviderSpend {
    pub provider: String,
    pub upstream_model: String,
    pub calls: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub reasoning_tokens: i64,
    pub cached_tokens: i64,
    #[serde(with = "rust_decimal::serde::str")]
    pub cost: Decimal,
    pub unpriced_calls: i64,
    /// Of `calls`, those made by runs whose worker died (or lost its claim) before recording
    /// them: counted, with estimated tokens and cost.
    pub estimated_calls: i64,
}

/// What one tenant was charged over a span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TenantCharge {
    pub tenant_id: TenantId,
    pub tenant: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// The operator's view over `[from, to]`: spend per provider beside charges per tenant.
pub async fn spend(
    pool: &PgPool,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<(Vec<ProviderSpend>, Vec<TenantCharge>), sqlx::Error> {
    let providers = sqlx::query_as!(
        ProviderSpend,
        r#"select provider, upstream_model, sum(calls)::bigint as "calls!",
                sum(prompt_tokens)::bigint as "prompt_tokens!",
                sum(completion_tokens)::bigint as "completion_tokens!",
                sum(reasoning_tokens)::bigint as "reasoning_tokens!",
                sum(cached_tokens)::bigint as "cached_tokens!",
                sum(cost) as "cost!", sum(unpriced_calls)::bigint as "unpriced_calls!",
                sum(estimated_calls)::bigint as "estimated_calls!"
           from provider_spend_daily where day between $1 and $2
          group by provider, upstream_model order by provider, upstream_model"#,
        from,
        to,
    )
    .fetch_all(pool)
    .await?;
    // Summed per tenant first, then named: a tenant's name is looked up once, not per row.
    let tenants = sqlx::query!(
        r#"select s.tenant_id as "tenant_id!: TenantId", t.name as tenant,
                s.requests as "requests!", s.prompt_tokens as "prompt_tokens!",
                s.completion_tokens as "completion_tokens!", s.total_tokens as "total_tokens!",
                s.reasoning_tokens as "reasoning_tokens!", s.cached_tokens as "cached_tokens!",
                s.cost as "cost!", s.unpriced_requests as "unpriced_requests!",
                s.cache_hits as "cache_hits!", s.saved_cost as "saved_cost!"
           from (select tenant_id, sum(requests)::bigint as requests,
                        sum(prompt_tokens)::bigint as prompt_tokens,
                        sum(completion_tokens)::bigint as completion_tokens,
                        sum(prompt_tokens + completion_tokens)::bigint as total_tokens,
                        sum(reasoning_tokens)::bigint as reasoning_tokens,
                        sum(cached_tokens)::bigint as cached_tokens,
                        sum(cost) as cost, sum(unpriced_requests)::bigint as unpriced_requests,
                        sum(cache_hits)::bigint as cache_hits, sum(saved_cost) as saved_cost
                   from usage_daily
                  where day between $1 and $2 group by tenant_id) s
           join tenants t on t.id = s.tenant_id
          order by t.name"#,
        from,
        to,
    )
    .fetch_all(pool)
    .await?;
    let tenants = tenants
        .into_iter()
        .map(|row| TenantCharge {
            tenant_id: row.tenant_id,
            tenant: row.tenant,
            totals: Totals {
                requests: row.requests,
                prompt_tokens: row.prompt_tokens,
                completion_tokens: row.completion_tokens,
                total_tokens: row.total_tokens,
                reasoning_tokens: row.reasoning_tokens,
                cached_tokens: row.cached_tokens,
                cost: row.cost,
                unpriced_requests: row.unpriced_requests,
                cache_hits: row.cache_hits,
                saved_cost: row.saved_cost,
            },
        })
        .collect();
    Ok((providers, tenants))
}
