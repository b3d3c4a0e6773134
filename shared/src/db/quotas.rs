//! Monthly quotas: the tenants' limits, and the `quota_months` rows where admission reserves and a
//! job's end releases.
//!
//! Used amounts come from the `usage_daily` rollup (what finished jobs were billed); reserved ones
//! from jobs admitted but not finished. Admission checks both and reserves in one conditional
//! upsert that locks the tenant's month row, so concurrent admissions on any number of api
//! instances serialize there and a burst cannot overshoot by more than what was already admitted.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgExecutor, PgPool};

use crate::domain::TenantId;

/// A tenant's monthly limits; `None` is unlimited.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct Limits {
    #[serde(with = "rust_decimal::serde::str_option", default)]
    pub monthly_cost_budget: Option<Decimal>,
    #[serde(default)]
    pub monthly_token_quota: Option<i64>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self.monthly_cost_budget.is_none() && self.monthly_token_quota.is_none()
    }
}

/// What admission reserved for one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub tokens: i64,
    pub cost: Decimal,
    pub month: NaiveDate,
}

/// Reserves `prompt_tokens + completion_tokens` (and their cost at the highest current price among
/// `model`'s routes) against this month's limits, inside the caller's transaction; `None` when
/// that would exceed a limit.
pub async fn reserve(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    limits: &Limits,
    model: &str,
    prompt_tokens: i64,
    completion_tokens: i64,
) -> Result<Option<Reservation>, sqlx::Error> {
    sqlx::query_as!(
        Reservation,
        r#"with price as (
            select coalesce(max(p.input_per_1k), 0) as i, coalesce(max(p.output_per_1k), 0) as o
              from model_routes r
              cross join lateral (
                    select input_per_1k, output_per_1k from prices
                     where provider = r.provider and model = r.upstream_model
                       and effective_from <= now()
                     order by effective_from desc limit 1) p
             where r.model = $2),
         month as (select date_trunc('month', now() at time zone 'utc')::date as start),
         est as (
            select $3::bigint + $4::bigint as tokens,
                   round(($3 * price.i + $4 * price.o) / 1000, 10) as cost
              from price),
         used as (
            select coalesce(sum(d.prompt_tokens + d.completion_tokens), 0) as tokens,
                   coalesce(sum(d.cost), 0) as cost
              from usage_daily d, month
             where d.tenant_id = $1 and d.day >= month.start
               and d.day < (month.start + interval '1 month')::date),
         reserved as (
            insert into quota_months as q (tenant_id, month, reserved_tokens, reserved_cost)
            select $1, month.start, est.tokens, est.cost from est, used, month
             where ($5::bigint is null or used.tokens + est.tokens <= $5)
               and ($6::numeric is null or used.cost + est.cost <= $6)
            on conflict (tenant_id, month) do update
               set reserved_tokens = q.reserved_tokens + excluded.reserved_tokens,
                   reserved_cost = q.reserved_cost + excluded.reserved_cost
             where ($5::bigint is null
                    or (select tokens from used) + q.reserved_tokens + excluded.reserved_tokens <= $5)
               and ($6::numeric is null
                    or (select cost from used) + q.reserved_cost + excluded.reserved_cost <= $6)
            returning 1)
         select est.tokens as "tokens!", est.cost as "cost!", month.start as "month!"
           from est, month
          where exists (select 1 from reserved)"#,
        tenant_id as TenantId,
        model,
        prompt_tokens,
        completion_tokens,
        limits.monthly_token_quota,
        limits.monthly_cost_budget,
    )
    .fetch_optional(conn)
    .await
}

/// A tenant's month against its limits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct MonthStatus {
    pub month: NaiveDate,
    #[serde(flatten)]
    pub limits: Limits,
    pub used_tokens: i64,
    #[serde(with = "rust_decimal::serde::str")]
    pub used_cost: Decimal,
    pub reserved_tokens: i64,
    #[serde(with = "rust_decimal::serde::str")]
    pub reserved_cost: Decimal,
    /// When the month's usage starts over (the next month, 00:00 UTC).
    pub resets_at: DateTime<Utc>,
}

/// The tenant's limits and this month's use and reservations; `None` for an unknown tenant.
pub async fn status(
    conn: impl PgExecutor<'_>,
    tenant_id: TenantId,
) -> Result<Option<MonthStatus>, sqlx::Error> {
    let row = sqlx::query!(
        r#"with month as (select date_trunc('month', now() at time zone 'utc')::date as start)
         select t.monthly_cost_budget, t.monthly_token_quota, month.start as "month!",
                used.tokens as "used_tokens!", used.cost as "used_cost!",
                coalesce(q.reserved_tokens, 0) as "reserved_tokens!",
                coalesce(q.reserved_cost, 0) as "reserved_cost!",
                ((month.start + interval '1 month')::timestamp at time zone 'utc') as "resets_at!"
           from tenants t cross join month
           cross join lateral (
                select coalesce(sum(d.prompt_tokens + d.completion_tokens), 0)::bigint as tokens,
                       coalesce(sum(d.cost), 0) as cost
                  from usage_daily d
                 where d.tenant_id = t.id and d.day >= month.start
                   and d.day < (month.start + interval '1 month')::date) used
           left join quota_months q on q.tenant_id = t.id and q.month = month.start
          where t.id = $1"#,
        tenant_id as TenantId,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| MonthStatus {
        month: row.month,
        limits: Limits {
            monthly_cost_budget: row.monthly_cost_budget,
            monthly_token_quota: row.monthly_token_quota,
        },
        used_tokens: row.used_tokens,
        used_cost: row.used_cost,
        reserved_tokens: row.reserved_tokens,
        reserved_cost: row.reserved_cost,
        resets_at: row.resets_at,
    }))
}

/// Sets a tenant's limits; `false` for an unknown tenant.
pub async fn set_limits(
    pool: &PgPool,
    tenant_id: TenantId,
    limits: &Limits,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update tenants set monthly_cost_budget = $2, monthly_token_quota = $3 where id = $1",
        tenant_id as TenantId,
        limits.monthly_cost_budget,
        limits.monthly_token_quota,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}
