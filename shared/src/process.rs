//! What every Tollgate binary does at start: logging, a shutdown token, and waiting for Postgres.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Structured logs to stderr, filtered by `RUST_LOG` (default `info,sqlx=warn`); JSON when
/// `TOLLGATE_LOG_FORMAT=json`.
pub fn init_tracing() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("TOLLGATE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

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
