//! What every Tollgate binary does at start and at the end: a shutdown token, waiting for
//! Postgres, and its background tasks joined before it exits (logging is [`crate::telemetry`]).

use std::time::Duration;

use std::future::Future;

use backon::{ExponentialBuilder, Retryable as _};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A token cancelled on Ctrl-C or SIGTERM, for graceful shutdown.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    #[expect(
        clippy::disallowed_methods,
        reason = "the signal listener lives as long as the process; nothing waits for it"
    )]
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            () = terminate => {}
        }
        tracing::info!("shutdown requested");
        cancel.cancel();
    });
    token
}

/// Connects to Postgres, retrying for up to about a minute (a container may start before its
/// database), then applies pending migrations.
pub async fn connect_database(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let connect = || crate::db::connect(url, max_connections);
    let pool = connect
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(15),
        )
        .notify(|error, delay| tracing::warn!(%error, retry_in = ?delay, "cannot reach Postgres"))
        .await?;
    crate::db::migrate(&pool).await?;
    Ok(pool)
}

/// A process's background tasks, each under a name, all joined before it exits: the one place
/// such tasks are spawned (`clippy.toml` refuses a bare `tokio::spawn` elsewhere), so none is
/// left running, or panics, unnoticed.
#[derive(Default)]
pub struct Tasks(Vec<(&'static str, JoinHandle<()>)>);

/// How long a task may take to end once its join waits for it before it is named in the log.
pub const SLOW_TO_STOP: std::time::Duration = std::time::Duration::from_secs(10);

/// Tasks that panicked, by name.
#[derive(Debug, thiserror::Error)]
#[error("tasks panicked: {}", .0.join(", "))]
pub struct Panicked(pub Vec<&'static str>);

impl Tasks {
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        #[expect(
            clippy::disallowed_methods,
            reason = "the one spawn of joined tasks: join awaits every one"
        )]
        let handle = tokio::spawn(task);
        self.0.push((name, handle));
    }

    /// Waits for every task in the order they were spawned (each ends on its own once shutdown
    /// is asked), logging each one that panicked — and, by name, each one still running
    /// [`SLOW_TO_STOP`] into its wait, so a shutdown that hangs says where.
    pub async fn join(self) -> Result<(), Panicked> {
        self.join_naming_after(SLOW_TO_STOP).await
    }

    /// [`Self::join`], naming a task still running `slow` into its wait.
    async fn join_naming_after(self, slow: std::time::Duration) -> Result<(), Panicked> {
        let mut panicked = Vec::new();
        for (name, mut task) in self.0 {
            let joined = match tokio::time::timeout(slow, &mut task).await {
                Ok(joined) => joined,
                Err(_) => {
                    tracing::warn!(task = name, waited = ?slow, "task still running after shutdown was asked");
                    task.await
                }
            };
            if let Err(error) = joined {
                tracing::error!(%error, task = name, "task panicked");
                panicked.push(name);
            }
        }
        if panicked.is_empty() {
            Ok(())
        } else {
            Err(Panicked(panicked))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_task_slow_to_stop_is_still_waited_for_and_a_panic_is_named() {
        let slow_to_stop = std::time::Duration::from_millis(20);
        let ended = Arc::new(AtomicBool::new(false));
        let mut tasks = Tasks::default();
        let slow = ended.clone();
        tasks.spawn("slow", async move {
            tokio::time::sleep(slow_to_stop * 3).await;
            slow.store(true, Ordering::SeqCst);
        });
        assert!(tasks.join_naming_after(slow_to_stop).await.is_ok());
        assert!(
            ended.load(Ordering::SeqCst),
            "the join outlasted the warning"
        );

        let mut tasks = Tasks::default();
        tasks.spawn("fine", async {});
        tasks.spawn("broken", async { panic!("on purpose") });
        let panicked = tasks.join().await.expect_err("one panicked");
        assert_eq!(panicked.0, ["broken"]);
    }
}
