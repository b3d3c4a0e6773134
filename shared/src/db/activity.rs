//! The `activity_minutes` table: requests and jobs per minute across every process, each adding
//! its own counts every few seconds (see the migration), read back by the dashboard's overview.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// Counts one process adds to the current minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: i64,
    pub jobs_accepted: i64,
    pub jobs_succeeded: i64,
    pub jobs_failed: i64,
}

impl Counts {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One minute's activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Minute {
    pub minute: DateTime<Utc>,
    pub requests: i64,
    pub jobs_accepted: i64,
    pub jobs_succeeded: i64,
    pub jobs_failed: i64,
}

/// Adds `counts` to the current minute, and drops minutes older than a day.
pub async fn add(pool: &PgPool, counts: Counts) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "with aged as (delete from activity_minutes where minute < now() - interval '1 day')
         insert into activity_minutes
                (minute, requests, jobs_accepted, jobs_succeeded, jobs_failed)
         values (date_trunc('minute', now()), $1, $2, $3, $4)
         on conflict (minute) do update
            set requests = activity_minutes.requests + excluded.requests,
                jobs_accepted = activity_minutes.jobs_accepted + excluded.jobs_accepted,
                jobs_succeeded = activity_minutes.jobs_succeeded + excluded.jobs_succeeded,
                jobs_failed = activity_minutes.jobs_failed + excluded.jobs_failed",
        counts.requests,
        counts.jobs_accepted,
        counts.jobs_succeeded,
        counts.jobs_failed,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The last `minutes` minutes, oldest first, the current one included; quiet minutes as zeros.
pub async fn recent(pool: &PgPool, minutes: i32) -> Result<Vec<Minute>, sqlx::Error> {
    sqlx::query_as!(
        Minute,
        r#"select m.minute as "minute!", coalesce(a.requests, 0) as "requests!",
                coalesce(a.jobs_accepted, 0) as "jobs_accepted!",
                coalesce(a.jobs_succeeded, 0) as "jobs_succeeded!",
                coalesce(a.jobs_failed, 0) as "jobs_failed!"
           from generate_series(date_trunc('minute', now()) - make_interval(mins => $1 - 1),
                                date_trunc('minute', now()), interval '1 minute') as m (minute)
           left join activity_minutes a on a.minute = m.minute
          order by m.minute"#,
        minutes,
    )
    .fetch_all(pool)
    .await
}
