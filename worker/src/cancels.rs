//! Cancels for running jobs: the api records the request on the job and publishes a
//! [`CancelMessage`] to every worker; the one running the job cancels its run, which aborts the
//! provider call (closing the connection stops the upstream generation) and ends the job
//! `cancelled`, billing the text generated so far.
//!
//! Each worker follows the control exchange through an exclusive queue of its own per broker
//! session. A message missed while the broker was away is caught when the run next renews its
//! lease (see `execute::keep_lease`), and a run that claims a job already asked to stop ends it at
//! once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tollgate_core::domain::JobId;
use tollgate_core::queue::{Broker, CancelMessage, HintBounds, HintQueue};

/// The runs of this worker that a cancel can reach, by job.
#[derive(Clone, Default)]
pub struct Cancels {
    running: Arc<Mutex<HashMap<JobId, CancellationToken>>>,
}

/// A run's registration; dropping it ends it.
pub struct Registered {
    id: JobId,
    pub token: CancellationToken,
    cancels: Cancels,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.cancels.table().remove(&self.id);
    }
}

impl Cancels {
    /// Registers the run of job `id`; its token is cancelled when a cancel for the job arrives.
    pub fn register(&self, id: JobId) -> Registered {
        let token = CancellationToken::new();
        self.table().insert(id, token.clone());
        Registered {
            id,
            token,
            cancels: self.clone(),
        }
    }

    fn cancel(&self, id: JobId) {
        if let Some(token) = self.table().get(&id) {
            tracing::info!(job_id = %id, "cancel asked for a running job");
            token.cancel();
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, CancellationToken>> {
        tollgate_core::sync::lock(&self.running)
    }

    /// Follows the control exchange until `shutdown`: one subscription per broker session.
    pub async fn follow(self, broker: Broker, shutdown: CancellationToken) {
        let exchange = broker.topology().control_exchange();
        broker
            .each_session(&shutdown, |session| {
                let (cancels, exchange) = (self.clone(), exchange.clone());
                async move {
                    let declared = HintQueue::<CancelMessage>::declare(
                        &session,
                        &exchange,
                        &[""],
                        HintBounds::default(),
                    );
                    match declared.await {
                        Ok(mut queue) => {
                            while let Some(message) = queue.next().await {
                                cancels.cancel(message.job_id);
                            }
                        }
                        Err(error) => tracing::warn!(%error, "cannot subscribe to cancels"),
                    }
                }
            })
            .await;
    }
}
