//! The dispatcher: releases batch items from Postgres to the bulk queue, keeping that queue only
//! as deep as the workers can use, and shares each round fairly: equally across the tenants with
//! items waiting, then equally across each tenant's batches. Every worker runs one; their rounds
//! take turns under a transaction-scoped lock, and an item is released only from `pending`, so
//! none is ever released twice.
//!
//! A round commits before it publishes. If the publish is lost, the sweeper republishes released
//! items whose message was never confirmed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgConnection;
use tollgate_core::db::{dispatch, jobs};
use tollgate_core::domain::{BatchId, JobId, TenantId};
use tollgate_core::queue::Work;

use crate::Context;

/// Pause between rounds while items flow, and while there is nothing to release.
const BUSY_PAUSE: Duration = Duration::from_millis(20);
const IDLE_PAUSE: Duration = Duration::from_millis(250);

/// Releases items until shutdown; also ends the batches whose items have all ended.
pub async fn run(context: Arc<Context>) {
    let mut round: usize = 0;
    let mut pause = IDLE_PAUSE;
    loop {
        tokio::select! {
            () = context.shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        round = round.wrapping_add(1);
        pause = match dispatch_round(&context, round).await {
            Ok(0) => IDLE_PAUSE,
            Ok(_) => BUSY_PAUSE,
            Err(error) => {
                tracing::warn!(%error, "dispatch round failed; trying again");
                IDLE_PAUSE
            }
        };
        if let Err(error) = end_batches(&context).await {
            tracing::warn!(%error, "could not end finished batches");
        }
    }
}

/// One round: how many items the bulk queue can take, shared out and released; returns how many.
async fn dispatch_round(context: &Context, round: usize) -> anyhow::Result<usize> {
    if !context.broker.is_connected() {
        return Ok(0);
    }
    let mut tx = context.pool.begin().await?;
    let released = match release(&mut tx, context.settings.bulk_depth, round).await {
        Ok(released) => released,
        Err(error) => {
            tx.rollback().await?;
            return Err(error.into());
        }
    };
    // Ends the round, and with it the turn, now: a transaction merely dropped would hold the turn
    // until its connection is next used, and other dispatchers would skip their rounds meanwhile.
    tx.commit().await?;
    if released.is_empty() {
        return Ok(0);
    }
    context.broker.publish_bulk(&released).await?;
    let ids: Vec<JobId> = released.iter().map(|work| work.id).collect();
    jobs::mark_published(&context.pool, &ids).await?;
    Ok(released.len())
}

/// Inside the round's transaction: takes the turn, then releases what the bulk queue can take,
/// shared out fairly; nothing when another dispatcher has the turn or nothing fits or waits.
async fn release(
    tx: &mut PgConnection,
    bulk_depth: usize,
    round: usize,
) -> Result<Vec<Work>, sqlx::Error> {
    if !dispatch::take_turn(tx).await? {
        return Ok(Vec::new());
    }
    let depth = dispatch::released_unclaimed(tx).await?;
    let target = i64::try_from(bulk_depth).unwrap_or(i64::MAX);
    let budget = usize::try_from(target - depth).unwrap_or(0);
    if budget == 0 {
        return Ok(Vec::new());
    }
    let waiting = dispatch::waiting(tx).await?;
    if waiting.is_empty() {
        return Ok(Vec::new());
    }
    let released = dispatch::release(tx, &fair_shares(budget, &waiting, round)).await?;
    Ok(released
        .into_iter()
        .map(|(id, trace)| Work::new(id, trace))
        .collect())
}

/// Ends batches whose items have all ended and sends their webhooks (the sweeper resends one
/// whose publish is lost).
async fn end_batches(context: &Context) -> Result<(), sqlx::Error> {
    let ended = dispatch::end_finished(&context.pool, None).await?;
    for batch in &ended {
        tracing::info!(batch_id = %batch.id, status = batch.status, "batch ended");
    }
    let deliveries: Vec<_> = ended.iter().filter_map(|b| b.delivery).collect();
    if !deliveries.is_empty()
        && let Err(error) = context.broker.publish_webhooks(&deliveries).await
    {
        tracing::warn!(%error, "webhook publish failed; the sweeper will resend");
    }
    Ok(())
}

/// Shares `budget` items out: equally across tenants, then equally across each tenant's batches
/// (both in the order given, the oldest first). What does not divide evenly goes to the tenants,
/// then the batches, whose turn it is: the starting point moves on every `round`, so over rounds
/// no one is favoured. Batches that get nothing this round are left out.
pub fn fair_shares(
    budget: usize,
    waiting: &[(BatchId, TenantId)],
    round: usize,
) -> Vec<(BatchId, i32)> {
    let mut tenants: BTreeMap<TenantId, Vec<BatchId>> = BTreeMap::new();
    let mut order: Vec<TenantId> = Vec::new();
    for &(batch, tenant) in waiting {
        let batches = tenants.entry(tenant).or_default();
        if batches.is_empty() {
            order.push(tenant);
        }
        batches.push(batch);
    }
    let mut shares = Vec::new();
    for (tenant_share, tenant) in split(budget, order.len())
        .into_iter()
        .zip(rotate(&order, round))
    {
        let batches = &tenants[&tenant];
        for (batch_share, batch) in split(tenant_share, batches.len())
            .into_iter()
            .zip(rotate(batches, round))
        {
            if batch_share > 0 {
                shares.push((batch, i32::try_from(batch_share).unwrap_or(i32::MAX)));
            }
        }
    }
    shares
}

/// `total` split into `parts` near-equal shares, the larger ones first.
fn split(total: usize, parts: usize) -> Vec<usize> {
    if parts == 0 {
        return Vec::new();
    }
    let (each, extra) = (total / parts, total % parts);
    (0..parts).map(|i| each + usize::from(i < extra)).collect()
}

/// The items starting from the one whose turn `round` makes it.
fn rotate<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    if items.is_empty() {
        return Vec::new();
    }
    let start = round % items.len();
    items[start..]
        .iter()
        .chain(&items[..start])
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn ids(n: usize) -> Vec<BatchId> {
        (0..n).map(|_| BatchId::new()).collect()
    }

    fn totals(shares: &[(BatchId, i32)]) -> HashMap<BatchId, i32> {
        shares.iter().copied().collect()
    }

    #[test]
    fn tenants_share_equally_whatever_their_number_of_batches() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let a_batches = ids(4);
        let b_batch = BatchId::new();
        let mut waiting: Vec<_> = a_batches.iter().map(|&id| (id, a)).collect();
        waiting.push((b_batch, b));

        let shares = totals(&fair_shares(100, &waiting, 0));
        assert_eq!(shares[&b_batch], 50, "b's one batch gets b's half");
        let a_total: i32 = a_batches.iter().map(|id| shares[id]).sum();
        assert_eq!(a_total, 50);
        assert!(
            a_batches
                .iter()
                .all(|id| shares[id] == 12 || shares[id] == 13)
        );
    }

    #[test]
    fn a_small_budget_takes_turns_across_rounds() {
        let tenants: Vec<TenantId> = (0..3).map(|_| TenantId::new()).collect();
        let batches = ids(3);
        let waiting: Vec<_> = batches.iter().copied().zip(tenants).collect();
        let mut received: HashMap<BatchId, i32> = HashMap::new();
        for round in 0..3 {
            let shares = fair_shares(1, &waiting, round);
            assert_eq!(shares.len(), 1, "one item, one batch");
            *received.entry(shares[0].0).or_default() += shares[0].1;
        }
        assert_eq!(received.len(), 3, "every batch had its turn: {received:?}");
    }

    #[test]
    fn nothing_waiting_or_no_budget_releases_nothing() {
        assert!(fair_shares(10, &[], 0).is_empty());
        let waiting = [(BatchId::new(), TenantId::new())];
        assert!(fair_shares(0, &waiting, 0).is_empty());
        assert_eq!(fair_shares(7, &waiting, 5)[0].1, 7);
    }
}
