//! Writing a run's end until the database takes it, or until the worker must stop.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use tollgate_core::queue::{Delivery, JobMessage};

use crate::Context;

/// Why a database step was abandoned.
pub(super) enum Halt {
    /// Shutdown began while the database was away.
    ShuttingDown,
    /// The step fails the same way every time (e.g. a stored request this version cannot read).
    Failed(sqlx::Error),
}

impl Halt {
    pub(super) async fn give_up(self, delivery: &Delivery<JobMessage>) {
        match self {
            // Unacked, the message is redelivered once the connection closes.
            Self::ShuttingDown => {}
            Self::Failed(error) => {
                tracing::error!(%error, "job cannot be processed; dead-lettering its message");
                // The dead-letter consumer marks the job failed with `internal_error`.
                delivery.dead_letter().await;
            }
        }
    }
}

/// Retries a database step while its failures are transient: a job's message is held (unacked)
/// meanwhile, so a database outage delays jobs instead of losing or dead-lettering them. Once
/// shutdown has begun it stops retrying and leaves the message to be redelivered.
pub(super) async fn persistently<T, F, Fut>(
    context: &Context,
    step: &str,
    operation: F,
) -> Result<T, Halt>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    // At most a second between tries (500 ms, and up to as much again of jitter): once the
    // database is back, a held job goes on within about a second, not after a long backoff.
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_millis(500))
        .with_jitter()
        .without_max_times();
    let result = operation
        .retry(backoff)
        .when(|error| tollgate_core::db::is_transient(error) && !context.shutdown.is_cancelled())
        .notify(
            |error, delay| tracing::warn!(%error, step, retry_in = ?delay, "database step failed"),
        )
        .await;
    result.map_err(|error| {
        if tollgate_core::db::is_transient(&error) {
            Halt::ShuttingDown
        } else {
            Halt::Failed(error)
        }
    })
}
