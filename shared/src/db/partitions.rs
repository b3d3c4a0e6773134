//! The time partitions of the big tables, and expiry by dropping them whole (see
//! `migrations/0016_retention.sql`).
//!
//! `jobs` and `job_attempts` are partitioned by the UUIDv7 time of the job's id, a UTC day each,
//! with the same bounds and names (`jobs_p20261201`, `job_attempts_p20261201`), and `images` by
//! the day of the jobs showing them (`images_p20261201`); `usage_records`
//! by the same time, a UTC month each (`usage_records_p202612`). A bound is the lowest UUIDv7 of
//! a midnight ([`floor`]). [`maintain`] keeps a week of days prepared ahead, and drops:
//!
//! - a day of jobs, with its attempts and images, once the day ended more than `job_retention_days` ago and
//!   none of its jobs is still in flight (a job queued, running or waiting for a retry keeps its
//!   whole day until it ends);
//! - a month of usage records once it ended more than `usage_retention_days` ago.
//!
//! Dropping a partition is instant and leaves nothing to vacuum, whatever it held; no `delete`
//! ever scans these tables. The daily rollups (`usage_daily`, `provider_spend_daily`) are kept.
//! Statements here are DDL built from bounds this module computes (never from input): they
//! cannot be compile-checked. A day's tables are created on their own and then attached, which
//! locks the parent only against other DDL (`SHARE UPDATE EXCLUSIVE`), but its default partition
//! wholly and the tables `jobs` refers to against writes; dropping a partition locks its parent.
//! Statements queue behind a waiting lock: a half-second lock timeout means a long query costs
//! the upkeep a retry at the next sweep, never the intake a stall — until less than
//! two days is prepared, when upkeep waits up to 5 s for its locks and warns if it fails.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, TimeZone, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::Retention;

/// Days of partitions kept ready ahead of today.
pub const DAYS_AHEAD: u64 = 7;

/// How little prepared time ahead makes preparing urgent: below it, upkeep waits longer for its
/// locks, and a failure is a warning. Above it (most of the week prepared), a lock not had in time
/// is routine under steady traffic — attaching a day waits for every statement on the table's
/// default partition, and for writers of the tables `jobs` refers to — and the next sweep simply
/// tries again.
const URGENT: chrono::Duration = chrono::Duration::days(2);

/// One process maintains the partitions at a time (a session advisory lock on this key).
const LOCK_KEY: i64 = 0x7011_6a7e_0019;

/// What one maintenance did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Maintained {
    /// Partitions created (ahead of their days).
    pub created: Vec<String>,
    /// Partitions dropped (expired).
    pub dropped: Vec<String>,
    /// Expired days of jobs kept because some of their jobs are still in flight.
    pub held: Vec<String>,
    /// Why the days ahead could not all be prepared (the next upkeep tries again).
    pub unprepared: Option<String>,
}

/// A side of a range bound: a time, or unbounded (`None`).
type Bound = Option<DateTime<Utc>>;

/// A partition and the times its ids span (`None`: unbounded).
#[derive(Debug, Clone)]
struct Partition {
    name: String,
    from: Bound,
    to: Bound,
}

/// The lowest UUIDv7 of `at`: its 48-bit millisecond time, every other bit zero.
pub fn floor(at: DateTime<Utc>) -> Uuid {
    let ms = u128::try_from(at.timestamp_millis()).unwrap_or(0);
    Uuid::from_u128(ms << 80)
}

/// The time a UUIDv7 (or a [`floor`]) carries.
pub fn time_of(id: Uuid) -> DateTime<Utc> {
    let ms = i64::try_from(id.as_u128() >> 80).unwrap_or(0);
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// Prepares the partitions `days_ahead` of `now` (none when `None`) and drops what expired,
/// unless another process is at it (then it does nothing and says `None`). `now` is a parameter
/// so that tests can age the data.
pub async fn maintain(
    pool: &PgPool,
    now: DateTime<Utc>,
    retention: Retention,
    days_ahead: Option<u64>,
) -> Result<Option<Maintained>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(None);
    }
    let done = async {
        // While more than `URGENT` is prepared, a lock not had within half a second costs only
        // a retry at the next sweep; closer to the edge, a few seconds' wait is worth it.
        let prepared_until = newest_end(&mut conn, "jobs").await?;
        let urgent = prepared_until.is_none_or(|end| end - now < URGENT);
        let timeout = if urgent { "5s" } else { "500ms" };
        sqlx::query(&format!("set lock_timeout = '{timeout}'"))
            .execute(&mut *conn)
            .await?;
        let mut maintained = Maintained::default();
        // Days not prepared now (a lock not had in time) are said, and the next upkeep tries
        // again; expiry goes on regardless.
        if let Some(days) = days_ahead
            && let Err(error) = prepare(&mut conn, now, days, prepared_until, &mut maintained).await
        {
            if urgent {
                tracing::warn!(%error, ?prepared_until, "cannot prepare the partitions ahead");
            } else {
                tracing::debug!(%error, ?prepared_until, "partitions ahead not prepared this time; the next sweep tries again");
            }
            maintained.unprepared = Some(error.to_string());
        }
        expire(&mut conn, now, retention, &mut maintained).await?;
        Ok::<_, sqlx::Error>(maintained)
    }
    .await;
    // Back to how the pool hands connections out.
    let reset = sqlx::query("reset lock_timeout").execute(&mut *conn).await;
    let unlocked = sqlx::query("select pg_advisory_unlock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await;
    let maintained = done?;
    reset?;
    unlocked?;
    Ok(Some(maintained))
}

/// The days from the newest prepared one (`prepared_until`, as `maintain` read it) to
/// `days_ahead` past `now`, and the months they fall in.
async fn prepare(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    days_ahead: u64,
    prepared_until: Option<DateTime<Utc>>,
    maintained: &mut Maintained,
) -> Result<(), sqlx::Error> {
    let until = midnight(now.date_naive()) + Days::new(days_ahead + 1);
    let mut next = prepared_until.unwrap_or_else(|| midnight(now.date_naive()));
    while next < until {
        let day = next.date_naive();
        let end = midnight(day) + Days::new(1);
        let suffix = format!("p{}", day.format("%Y%m%d"));
        let days = [
            ("jobs", " with (fillfactor = 90)"),
            ("job_attempts", ""),
            ("images", ""),
        ];
        for (table, fill) in days {
            let name = format!("{table}_{suffix}");
            let span = Span {
                table,
                from: floor(next),
                to: floor(end),
            };
            create(conn, &span, &name, fill, maintained).await?;
        }
        next = end;
    }
    let mut next = newest_end(conn, "usage_records")
        .await?
        .unwrap_or_else(|| midnight(now.date_naive()));
    while next < until {
        let month = next.date_naive().with_day(1).unwrap_or(next.date_naive());
        let end = midnight(month) + Months::new(1);
        let name = format!("usage_records_p{}", month.format("%Y%m"));
        let span = Span {
            table: "usage_records",
            from: floor(next),
            to: floor(end),
        };
        create(conn, &span, &name, "", maintained).await?;
        next = end;
    }
    Ok(())
}

/// The ids one partition of `table` holds: `from` up to, not including, `to`.
struct Span {
    table: &'static str,
    from: Uuid,
    to: Uuid,
}

/// Prepares one partition: the table is created on its own (no lock on the parent), then
/// attached, which takes only a `SHARE UPDATE EXCLUSIVE` lock on the parent — it does not wait
/// for, nor hold up, the reads and writes of the traffic, as `create table … partition of` (an
/// `ACCESS EXCLUSIVE` lock) did. A table left unattached by an earlier round (a lock not had in
/// time) is attached now. A span whose ids already sit in the default partition (no process
/// prepared it in time) cannot become a partition: its table is dropped, its rows stay in the
/// default, and the days after it are still prepared. Any other failure stops the upkeep until
/// the next round, so no day is ever skipped for a passing reason.
async fn create(
    conn: &mut PgConnection,
    span: &Span,
    name: &str,
    fill: &str,
    maintained: &mut Maintained,
) -> Result<(), sqlx::Error> {
    let Span { table, from, to } = span;
    let create = format!(
        "create table if not exists {name} (like {table} including defaults including constraints \
         including storage){fill}"
    );
    sqlx::query(&create).execute(&mut *conn).await?;
    match attach(conn, table, name, from, to).await {
        Ok(()) => {
            maintained.created.push(name.to_owned());
            Ok(())
        }
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("23514") => {
            tracing::warn!(partition = name, %error, "its ids are in the default partition already; left there");
            sqlx::query(&format!("drop table if exists {name}"))
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// Attaches `name` to `table` in a transaction that first locks the tables `table` refers to, as
/// attaching would (to add its foreign keys to the partition), but before `table` itself:
/// statements lock a referred table (a batch's row) before the jobs they change, so taking them
/// in the same order keeps upkeep from deadlocking with them (it did, with the statement that ends
/// batches).
async fn attach(
    conn: &mut PgConnection,
    table: &str,
    name: &str,
    from: &Uuid,
    to: &Uuid,
) -> Result<(), sqlx::Error> {
    let referred: Vec<String> = sqlx::query_scalar(
        "select distinct confrelid::regclass::text from pg_constraint
          where conrelid = $1::regclass and contype = 'f' order by 1",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    if !referred.is_empty() {
        let lock = format!(
            "lock table {} in share row exclusive mode",
            referred.join(", ")
        );
        sqlx::query(&lock).execute(&mut *tx).await?;
    }
    sqlx::query(&format!(
        "alter table {table} attach partition {name} for values from ('{from}') to ('{to}')"
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Drops the days of jobs and the months of usage that ended before their horizons.
async fn expire(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    retention: Retention,
    maintained: &mut Maintained,
) -> Result<(), sqlx::Error> {
    let horizon = retention.job_horizon(now);
    for day in partitions(conn, "jobs").await? {
        if day.to.is_none_or(|to| to > horizon) {
            continue;
        }
        if in_flight(conn, &day.name).await? {
            maintained.held.push(day.name);
            continue;
        }
        let suffix = day.name.trim_start_matches("jobs");
        let attempts = format!("job_attempts{suffix}");
        let images = format!("images{suffix}");
        let ddl = format!("drop table if exists {attempts}, {images}, {}", day.name);
        sqlx::query(&ddl).execute(&mut *conn).await?;
        maintained.dropped.extend([attempts, images, day.name]);
    }
    let horizon = retention.usage_horizon(now);
    for month in partitions(conn, "usage_records").await? {
        if month.to.is_some_and(|to| to <= horizon) {
            let ddl = format!("drop table if exists {}", month.name);
            sqlx::query(&ddl).execute(&mut *conn).await?;
            maintained.dropped.push(month.name);
        }
    }
    Ok(())
}

/// Whether any job of the partition is yet to end. Each unfinished status has a partial index
/// (see the migrations), so each question reads an index of the few such rows, never the day.
async fn in_flight(conn: &mut PgConnection, partition: &str) -> Result<bool, sqlx::Error> {
    let statuses = ["pending", "queued", "running", "retrying"];
    let any = statuses
        .map(|status| format!("exists (select 1 from {partition} where status = '{status}')"))
        .join(" or ");
    sqlx::query_scalar(&format!("select {any}"))
        .fetch_one(conn)
        .await
}

/// Where the newest bounded partition of `table` ends.
async fn newest_end(
    conn: &mut PgConnection,
    table: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let parts = partitions(conn, table).await?;
    Ok(parts.iter().filter_map(|p| p.to).max())
}

/// The range partitions of `table` (its default partition left out), oldest first.
async fn partitions(conn: &mut PgConnection, table: &str) -> Result<Vec<Partition>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select c.relname::text, pg_get_expr(c.relpartbound, c.oid)
           from pg_inherits i join pg_class c on c.oid = i.inhrelid
          where i.inhparent = $1::regclass",
    )
    .bind(table)
    .fetch_all(conn)
    .await?;
    let mut parts: Vec<Partition> = rows
        .into_iter()
        .filter_map(|(name, bound)| {
            let (from, to) = bounds(&bound)?;
            Some(Partition { name, from, to })
        })
        .collect();
    parts.sort_by_key(|p| p.from);
    Ok(parts)
}

/// The times of a range bound as Postgres prints it (`FOR VALUES FROM ('…') TO ('…')`, either
/// side possibly `MINVALUE`/`MAXVALUE`); `None` for the default partition.
fn bounds(expr: &str) -> Option<(Bound, Bound)> {
    let side = |after: &str| -> Option<Bound> {
        let rest = expr.split_once(after)?.1;
        let value = rest.strip_prefix("('")?.get(..36);
        Some(value.and_then(|v| Uuid::parse_str(v).ok()).map(time_of))
    };
    let from = side("FROM ").or_else(|| expr.contains("FROM (MINVALUE)").then_some(None))?;
    let to = side(" TO ").or_else(|| expr.contains("TO (MAXVALUE)").then_some(None))?;
    Some((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_is_the_lowest_uuidv7_of_its_moment() {
        let at = Utc
            .with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
            .single()
            .expect("a time");
        let bound = floor(at);
        assert_eq!(time_of(bound), at);
        let id = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            u64::try_from(at.timestamp()).expect("positive"),
            0,
        ));
        assert!(bound <= id, "every id of the moment sorts after its bound");
        let before = floor(at - chrono::Duration::milliseconds(1));
        assert!(before < bound);
    }

    #[test]
    fn bounds_are_read_as_postgres_prints_them() {
        let day = "FOR VALUES FROM ('01a22ee6-b000-0000-0000-000000000000') TO \
                   ('01a2340d-0c00-0000-0000-000000000000')";
        let (from, to) = bounds(day).expect("a range");
        assert_eq!(
            from,
            Some(time_of(
                Uuid::parse_str("01a22ee6-b000-0000-0000-000000000000").expect("uuid")
            ))
        );
        assert!(to.expect("bounded") - from.expect("bounded") == chrono::Duration::days(1));
        let legacy = "FOR VALUES FROM (MINVALUE) TO ('01a2340d-0c00-0000-0000-000000000000')";
        let (from, to) = bounds(legacy).expect("a range");
        assert_eq!(from, None);
        assert!(to.is_some());
        assert!(bounds("DEFAULT").is_none());
    }
}
