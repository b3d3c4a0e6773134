//! Group commit: work that arrives together done in one round trip.
//!
//! Callers [`Coalescer::submit`] one item each and wait for its own answer. One task takes every
//! item waiting and hands them to a `flush` as one batch (one multi-row statement, one commit, one
//! window of publisher confirms), at most `flushes` batches at once. There is no timer: an item
//! that arrives alone while a flush slot is free is flushed at once, by itself; items that arrive
//! while every slot is busy wait for the first to free and are flushed together. So a batch grows
//! with the load, and waiting for companions costs nothing when there are none.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::process::Tasks;

/// How items are gathered into flushes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most items in one flush.
    pub batch: usize,
    /// Most flushes running at once.
    pub flushes: usize,
}

/// The coalescer stopped before it answered: the process is shutting down, or the flush panicked.
#[derive(Debug, thiserror::Error)]
#[error("the {0} coalescer stopped before answering")]
pub struct Stopped(pub &'static str);

/// A handle to submit items; cheap to clone. The task ends once every handle is dropped and what
/// was submitted is flushed.
pub struct Coalescer<I, O> {
    name: &'static str,
    sender: mpsc::UnboundedSender<(I, oneshot::Sender<O>)>,
}

impl<I, O> Clone for Coalescer<I, O> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            sender: self.sender.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Coalescer<I, O> {
    /// Starts the gathering task in `tasks`. `flush` answers a batch with one output per item, in
    /// the items' order.
    pub fn start<F, Fut>(tasks: &mut Tasks, name: &'static str, limits: Limits, flush: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        // Unbounded: what waits here is bounded by the callers, each awaiting its own answer.
        let (sender, receiver) = mpsc::unbounded_channel();
        tasks.spawn(name, gather(receiver, limits, Arc::new(flush)));
        Self { name, sender }
    }

    /// Submits `item` and waits for its output.
    pub async fn submit(&self, item: I) -> Result<O, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((item, reply))
            .map_err(|_| Stopped(self.name))?;
        answer.await.map_err(|_| Stopped(self.name))
    }
}

/// A flush's answers from its one statement for the whole batch, or `None` when that failed for
/// several items: the flush then tries each by itself, so one item the database refuses fails
/// only its own caller. (A lone item's failure is its answer.)
pub fn answered<T, E: std::fmt::Display>(
    together: Result<Vec<Result<T, E>>, E>,
    items: usize,
) -> Option<Vec<Result<T, E>>> {
    match together {
        Ok(answers) => Some(answers),
        Err(error) if items == 1 => Some(vec![Err(error)]),
        Err(error) => {
            tracing::warn!(%error, items, "a coalesced statement failed; one by one");
            None
        }
    }
}

/// Takes whatever is waiting whenever a flush slot is free, and flushes it on a task of its own.
async fn gather<I, O, F, Fut>(
    mut receiver: mpsc::UnboundedReceiver<(I, oneshot::Sender<O>)>,
    limits: Limits,
    flush: Arc<F>,
) where
    I: Send + 'static,
    O: Send + 'static,
    F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<O>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.flushes.max(1)));
    let mut running = JoinSet::new();
    let mut waiting = Vec::with_capacity(limits.batch);
    loop {
        // The semaphore is never closed: an error cannot come.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        if receiver.recv_many(&mut waiting, limits.batch.max(1)).await == 0 {
            break;
        }
        let (items, replies): (Vec<I>, Vec<_>) = waiting.drain(..).unzip();
        let flush = flush.clone();
        running.spawn(async move {
            let outputs = flush(items).await;
            // A reply whose caller gave up is dropped; an item left without output (a flush that
            // answered short) has its caller told the coalescer stopped.
            for (reply, output) in replies.into_iter().zip(outputs) {
                let _ = reply.send(output);
            }
            drop(slot);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A flush that records each batch's size and answers each item doubled, after `pause`.
    fn doubling(
        sizes: Arc<Mutex<Vec<usize>>>,
        pause: Duration,
    ) -> impl Fn(Vec<u32>) -> std::pin::Pin<Box<dyn Future<Output = Vec<u32>> + Send>>
    + Send
    + Sync
    + 'static {
        move |items: Vec<u32>| {
            crate::sync::lock(&sizes).push(items.len());
            Box::pin(async move {
                tokio::time::sleep(pause).await;
                items.into_iter().map(|i| i * 2).collect()
            })
        }
    }

    #[tokio::test]
    async fn a_lone_item_is_flushed_alone_and_answered() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Tasks::default();
        let limits = Limits {
            batch: 100,
            flushes: 1,
        };
        let coalescer = Coalescer::start(
            &mut tasks,
            "test",
            limits,
            doubling(sizes.clone(), Duration::ZERO),
        );
        assert_eq!(coalescer.submit(21).await.expect("answered"), 42);
        drop(coalescer);
        tasks
            .join()
            .await
            .expect("the task ends once its handles are gone");
        assert_eq!(*crate::sync::lock(&sizes), vec![1]);
    }

    #[tokio::test]
    async fn items_arriving_while_a_flush_runs_are_flushed_together_each_with_its_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Tasks::default();
        let limits = Limits {
            batch: 100,
            flushes: 1,
        };
        let coalescer = Coalescer::start(
            &mut tasks,
            "test",
            limits,
            doubling(sizes.clone(), Duration::from_millis(50)),
        );
        let answers = futures::future::join_all((0..50).map(|i| coalescer.submit(i))).await;
        for (i, answer) in answers.into_iter().enumerate() {
            assert_eq!(
                answer.expect("answered"),
                u32::try_from(i).expect("small") * 2
            );
        }
        let sizes = crate::sync::lock(&sizes).clone();
        assert_eq!(sizes.iter().sum::<usize>(), 50);
        assert!(sizes.len() < 50, "50 items in {} flushes", sizes.len());
        drop(coalescer);
        tasks.join().await.expect("ends");
    }

    #[test]
    fn a_failed_statement_answers_a_lone_item_and_sends_several_one_by_one() {
        let ok: Result<Vec<Result<u32, String>>, String> = Ok(vec![Ok(1), Err("row".into())]);
        assert_eq!(answered(ok, 2), Some(vec![Ok(1), Err("row".into())]));
        let failed = || Err::<Vec<Result<u32, String>>, String>("down".into());
        assert_eq!(answered(failed(), 1), Some(vec![Err("down".into())]));
        assert_eq!(answered(failed(), 2), None);
    }

    #[tokio::test]
    async fn a_flush_that_answers_short_tells_the_rest_it_stopped() {
        let mut tasks = Tasks::default();
        let limits = Limits {
            batch: 10,
            flushes: 1,
        };
        let coalescer = Coalescer::start(&mut tasks, "short", limits, |_items: Vec<u32>| async {
            Vec::<u32>::new()
        });
        let stopped = coalescer.submit(1).await.expect_err("no answer");
        assert_eq!(
            stopped.to_string(),
            "the short coalescer stopped before answering"
        );
        drop(coalescer);
        tasks.join().await.expect("ends");
    }
}
