//! Consumers: one subscription to a queue per broker session, one task per delivery, at most
//! `concurrency` at once. The job consumer and the webhook deliverer both run on this.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tollgate_core::queue::{Acknowledged, Delivery, JobMessage, Subscription};

use crate::chain::Lane;
use crate::{Context, execute};

/// Consumes the interactive and the bulk queue until shutdown, each with its own slots, so single
/// jobs never wait for a free slot behind batch items.
pub async fn run(context: Arc<Context>) {
    let topology = context.broker.topology().clone();
    let settings = &context.settings;
    let queues = [
        (
            topology.jobs_queue(),
            settings.concurrency,
            Lane::Interactive,
        ),
        (topology.bulk_queue(), settings.bulk_concurrency, Lane::Bulk),
    ];
    futures::future::join_all(queues.map(|(queue, concurrency, lane)| {
        consume::<JobMessage, _, _>(
            context.clone(),
            queue,
            concurrency,
            move |context, delivery| async move {
                execute::handle(&context, &delivery, lane).await;
            },
        )
    }))
    .await;
}

/// Hands each delivery of `queue` to `handle` on its own task, at most `concurrency` at once,
/// until shutdown; then gives the running ones the shutdown grace.
pub async fn consume<M, H, Fut>(context: Arc<Context>, queue: String, concurrency: usize, handle: H)
where
    M: Acknowledged + Send + Sync + 'static,
    H: Fn(Arc<Context>, Arc<Delivery<M>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(concurrency));
    let mut in_flight = JoinSet::new();
    let prefetch = u16::try_from(concurrency).unwrap_or(u16::MAX);
    'sessions: while let Some(mut subscription) =
        Subscription::<M>::open(&context.broker, &queue, prefetch, &context.shutdown).await
    {
        loop {
            // Reap finished handlers so the set only holds what is running.
            while in_flight.try_join_next().is_some() {}
            let permit = tokio::select! {
                () = context.shutdown.cancelled() => break 'sessions,
                permit = limit.clone().acquire_owned() => permit,
            };
            // The semaphore is never closed: an error cannot come.
            let Ok(permit) = permit else { break 'sessions };
            let delivery = tokio::select! {
                () = context.shutdown.cancelled() => break 'sessions,
                delivery = subscription.next() => delivery,
            };
            // The subscription ended (its session was lost): subscribe again.
            let Some(delivery) = delivery else { break };
            let delivery = Arc::new(delivery);
            let run = AssertUnwindSafe(handle(context.clone(), delivery.clone()));
            in_flight.spawn(async move {
                if run.catch_unwind().await.is_err() {
                    // A bug, not an outcome: put the message back. Each requeue counts towards
                    // the delivery limit, so a job message that always panics ends in the
                    // dead-letter queue and its job is failed there.
                    tracing::error!("handler panicked; requeueing the message");
                    delivery.requeue().await;
                }
                drop(permit);
            });
        }
    }
    drain(in_flight, &context).await;
}

/// Gives in-flight jobs the grace period, then abandons the rest unacked (they are redelivered).
async fn drain(mut in_flight: JoinSet<()>, context: &Context) {
    let grace = context.settings.shutdown_grace;
    let all_done = async { while in_flight.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all_done).await.is_err() {
        tracing::warn!(
            abandoned = in_flight.len(),
            "shutdown grace over; jobs left for redelivery"
        );
        in_flight.abort_all();
    }
}
