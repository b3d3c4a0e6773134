//! Records confirmed publishes in batches.
//!
//! After the broker confirms a job's message the job is marked `published_at`, so the worker's
//! sweeper knows not to send it again. Doing that per request would double the commits of intake;
//! instead handlers drop the id into a channel and one task marks them many at a time. Losing a
//! mark (crash, full channel) is harmless: the sweeper republishes and the worker's conditional
//! claim turns the duplicate into a no-op.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;
use tollgate_core::db::jobs;
use tollgate_core::domain::JobId;
use tollgate_core::process::Tasks;

const CHANNEL_CAPACITY: usize = 50_000;
const BATCH: usize = 2_000;

#[derive(Clone)]
pub struct Recorder {
    sender: mpsc::Sender<JobId>,
}

impl Recorder {
    /// Starts the recording task in `tasks`; it ends once every `Recorder` clone is dropped and
    /// the channel is drained.
    pub fn start(pool: PgPool, tasks: &mut Tasks) -> Self {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        tasks.spawn("publish recorder", record(pool, receiver));
        Self { sender }
    }

    pub fn confirmed(&self, id: JobId) {
        if self.sender.try_send(id).is_err() {
            tracing::debug!(job_id = %id, "publish recorder is full; the sweeper will resend the job");
        }
    }
}

async fn record(pool: PgPool, mut receiver: mpsc::Receiver<JobId>) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        if let Err(error) = jobs::mark_published(&pool, &batch).await {
            tracing::warn!(%error, count = batch.len(), "could not record confirmed publishes");
        }
        batch.clear();
        // Let more confirms arrive, so the next statement carries many ids and workers have
        // claimed (and so need no mark for) most jobs of a short queue.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
