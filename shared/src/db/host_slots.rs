//! The `host_slots` table: a host's call slots, held across every worker. A worker calls an Ollama
//! host only while it holds one of its slots, so however many workers run, a host never has more
//! calls in flight than its `slots`.
//!
//! Taking a slot is one statement: the least loaded of the candidate hosts, a free slot of it
//! locked with `skip locked` (two workers never get the same one; the lock's recheck sees a slot
//! taken meanwhile). Freeing one notifies `HOST_SLOT_FREED`, which waiting workers listen on; a
//! worker whose calls wait says so on `HOST_SLOT_WANTED`, so that slots kept elsewhere between
//! calls come back. A held slot carries a lease its worker renews; a worker that dies gives its
//! slots back when their leases run out.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

/// The notification channel a freed slot is announced on (payload: the host's id).
pub const HOST_SLOT_FREED: &str = "tollgate_host_slot_freed";

/// The notification channel a worker whose calls wait for a host's slot announces it on (payload:
/// `<host id>/<worker id>`): the other workers keeping that host's slots between calls give them
/// back.
pub const HOST_SLOT_WANTED: &str = "tollgate_host_slot_wanted";

/// Which slots a call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotLane {
    /// A single job: any slot, the ones batch items may not take first.
    Any,
    /// A batch item: only the host's first `bulk_slots`, so single jobs always find the rest.
    Bulk,
}

/// A slot taken for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldSlot {
    pub host_id: Uuid,
    pub slot: i32,
    /// The call holding it: only it frees it.
    pub holder: Uuid,
}

/// Takes a free slot on the least loaded (held slots over slots) of `hosts` that is enabled, for
/// `holder`, good for `lease`; `None` when every such slot is held.
pub async fn take(
    pool: &PgPool,
    hosts: &[Uuid],
    lane: SlotLane,
    holder: Uuid,
    lease: Duration,
) -> Result<Option<HeldSlot>, sqlx::Error> {
    // Ties between hosts are broken by a hash of the call, so idle hosts share the work; within
    // a host a single job takes the highest free slot first, the ones batch items cannot use.
    let taken = sqlx::query!(
        "with load as (
            select h.id, h.slots, h.bulk_slots,
                   (select count(*) from host_slots b
                     where b.host_id = h.id and b.held_until >= now()) as held
              from hosts h
             where h.id = any($1) and h.enabled
         ), free as (
            select s.host_id, s.slot
              from host_slots s join load l on l.id = s.host_id
             where s.slot <= l.slots and ($2 or s.slot <= l.bulk_slots)
               and (s.holder is null or s.held_until < now())
             order by l.held::float8 / l.slots, hashtext(s.host_id::text || $3::uuid::text),
                      s.slot desc
             limit 1
             for update of s skip locked
         )
         update host_slots t
            set holder = $3, held_until = now() + make_interval(secs => $4)
           from free
          where t.host_id = free.host_id and t.slot = free.slot
         returning t.host_id, t.slot",
        hosts,
        lane == SlotLane::Any,
        holder,
        lease.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await?;
    Ok(taken.map(|taken| HeldSlot {
        host_id: taken.host_id,
        slot: taken.slot,
        holder,
    }))
}

/// Frees a slot (if `holder` still holds it) and tells waiting workers.
pub async fn free(pool: &PgPool, slot: &HeldSlot) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "with freed as (
            update host_slots set holder = null, held_until = null
             where host_id = $1 and slot = $2 and holder = $3
         returning host_id
         )
         select pg_notify($4, host_id::text) from freed",
        slot.host_id,
        slot.slot,
        slot.holder,
        HOST_SLOT_FREED,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Tells every worker that calls of worker `worker` wait for slots of `hosts`.
pub async fn want(pool: &PgPool, hosts: &[Uuid], worker: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "select pg_notify($3, host::text || '/' || $2::uuid::text)
           from unnest($1::uuid[]) as host",
        hosts,
        worker,
        HOST_SLOT_WANTED,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A `HOST_SLOT_WANTED` payload: the host, and the worker whose calls wait for it.
pub fn wanted(payload: &str) -> Option<(Uuid, Uuid)> {
    let (host, worker) = payload.split_once('/')?;
    Some((host.parse().ok()?, worker.parse().ok()?))
}

/// Extends the leases of the slots `holders` hold to `lease` from now.
pub async fn renew(pool: &PgPool, holders: &[Uuid], lease: Duration) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update host_slots set held_until = now() + make_interval(secs => $2)
          where holder = any($1)",
        holders,
        lease.as_secs_f64(),
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Slots held per host now (unexpired leases).
pub async fn held(pool: &PgPool) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select host_id, count(*) as "held!" from host_slots
          where held_until >= now()
          group by host_id"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.host_id, row.held))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wanted_payload_names_the_host_and_the_waiting_worker() {
        let (host, worker) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(wanted(&format!("{host}/{worker}")), Some((host, worker)));
        assert_eq!(wanted(&host.to_string()), None);
        assert_eq!(wanted("x/y"), None);
    }
}
