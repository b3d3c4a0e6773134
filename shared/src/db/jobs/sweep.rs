//! What the sweeper finds in `jobs`: messages that may be missing, and runs whose lease ran out.

use std::time::Duration;

use sqlx::PgPool;

use crate::domain::{JobId, TraceParent};

/// A job whose message may be missing (see [`unpublished`]).
#[derive(Debug, Clone, Copy)]
pub struct Unpublished {
    pub id: JobId,
    /// A batch item, for the bulk queue.
    pub bulk: bool,
    /// The trace its message carries.
    pub trace: Option<TraceParent>,
}

/// Jobs whose message may be missing: `queued` ones never confirmed published (the api or
/// dispatcher died between commit and publish, or a lease ran out), and `retrying` ones whose
/// delayed message is overdue.
pub async fn unpublished(
    pool: &PgPool,
    older_than: Duration,
    overdue: Duration,
    limit: i64,
) -> Result<Vec<Unpublished>, sqlx::Error> {
    // Each arm matches one partial index (jobs_queued, jobs_batch_released, jobs_retrying). A
    // batch item counts from its release, not its creation.
    let rows = sqlx::query!(
        r#"(select id as "id!: JobId", false as "bulk!", traceparent from jobs
           where status = 'queued' and published_at is null and batch_id is null
             and created_at < now() - make_interval(secs => $1)
           order by created_at
           limit $3)
         union all
         (select id, true, traceparent from jobs
           where status = 'queued' and published_at is null and batch_id is not null
             and released_at < now() - make_interval(secs => $1)
           limit $3)
         union all
         (select id, batch_id is not null, traceparent from jobs
           where status = 'retrying'
             and retry_at < now() - make_interval(secs => $1)
             and (published_at is null or retry_at < now() - make_interval(secs => $2))
           order by retry_at
           limit $3)"#,
        older_than.as_secs_f64(),
        overdue.as_secs_f64(),
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let (id, trace) = with_trace((row.id, row.traceparent));
            Unpublished {
                id,
                bulk: row.bulk,
                trace,
            }
        })
        .collect())
}

/// A job id with its stored `traceparent`, parsed.
pub(in crate::db) fn with_trace(
    (id, trace): (JobId, Option<String>),
) -> (JobId, Option<TraceParent>) {
    (id, trace.as_deref().and_then(TraceParent::parse))
}

/// Puts `running` jobs whose lease ran out back to `queued`, unpublished, so the sweeper sends them
/// again: their worker died and their message is gone (dead-lettered or purged). The old claim is
/// cleared, so should that worker still be alive it can no longer finish the job. Returns each
/// released job with its new revision.
pub async fn release_abandoned(
    pool: &PgPool,
    limit: i64,
) -> Result<Vec<(JobId, i32)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"update jobs set status = 'queued', claim_id = null, lease_expires_at = null,
                         published_at = null, revision = revision + 1
          where id in (select id from jobs
                        where status = 'running' and lease_expires_at < now()
                        order by lease_expires_at
                        limit $1
                        for update skip locked)
      returning id as "id: JobId", revision"#,
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, row.revision)).collect())
}
