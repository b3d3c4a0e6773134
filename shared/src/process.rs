//! What every Tollgate binary does at start: a shutdown token, and waiting for Postgres (logging
//! is [`crate::telemetry`]).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// A token cancelled on Ctrl-C or SIGTERM, for graceful shutdown.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
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
