//! Tollgate's intake API: authenticate, validate, persist, enqueue, answer 202.
//!
//! [`serve`] runs the HTTP server on a listener it is given until the shutdown token fires, so the
//! binary and the tests run exactly the same code. Provider work never happens here.

mod auth;
pub mod cli;
mod error;
mod extract;
mod published;
mod routes;

use std::sync::Arc;

use anyhow::Context as _;
use shared::queue::Broker;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;

/// Limits and switches of one api process.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pool: PgPool,
    broker: Broker,
    tokens: Arc<auth::TokenCache>,
    published: published::Recorder,
    body_limit: usize,
}

/// Serves the API on `listener` until `shutdown` fires, then finishes in-flight requests and
/// records the last confirmed publishes. The broker's supervision is the caller's: the process
/// owns the connection, the server only uses it.
pub async fn serve(
    listener: TcpListener,
    pool: PgPool,
    broker: Broker,
    settings: ApiSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (published, recorder_task) = published::Recorder::start(pool.clone());
    let state = AppState {
        pool,
        broker,
        tokens: Arc::new(auth::TokenCache::default()),
        published,
        body_limit: settings.body_limit,
    };
    let app = routes::router(state, &settings);
    tracing::info!(addr = %listener.local_addr()?, "api listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
    .context("the HTTP server failed")?;
    // Every handler (and so every recorder handle) is gone now: the recorder flushes and ends.
    recorder_task
        .await
        .context("the publish recorder panicked")?;
    Ok(())
}
