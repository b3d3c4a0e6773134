//! Whether Postgres is known to be down, so that a request needing it is answered `503` with
//! `Retry-After` at once, instead of each one waiting out the pool's acquire timeout (5 s) while
//! the pool tries to reconnect.
//!
//! A probe of its own keeps one connection (outside the pool) and pings it twice a second: a
//! database that dies is known down within half a second. A request that meets a database error
//! of the "unreachable" kind (its answer carries [`DatabaseUnreachable`]) reports it too, and the probe
//! checks at once. While down, the probe reconnects four times a second and the api is back the
//! moment one succeeds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use sqlx::postgres::PgConnection;
use sqlx::{ConnectOptions as _, Connection as _, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::http::error::{ApiError, DatabaseUnreachable};

/// How often the probe pings while the database is up, and tries to reconnect while it is down.
const PING_EVERY: Duration = Duration::from_millis(500);
const RECONNECT_EVERY: Duration = Duration::from_millis(250);
/// Longest a ping or a connection attempt may take before the database counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Default)]
pub struct DatabaseHealth(Arc<Inner>);

#[derive(Default)]
struct Inner {
    down: AtomicBool,
    /// Wakes the probe when a request met the database unreachable.
    reported: Notify,
}

impl DatabaseHealth {
    pub fn is_down(&self) -> bool {
        self.0.down.load(Ordering::Relaxed)
    }

    /// Something met the database unreachable: the probe looks at once.
    pub fn report(&self) {
        self.0.reported.notify_one();
    }

    fn set_down(&self, down: bool) {
        if self.0.down.swap(down, Ordering::Relaxed) != down {
            if down {
                tracing::warn!("the database is unreachable; answering 503 until it is back");
            } else {
                tracing::info!("the database is back");
            }
        }
    }

    /// Runs the probe until `shutdown`.
    pub async fn probe(self, pool: PgPool, shutdown: CancellationToken) {
        let options = pool.connect_options();
        let mut connection: Option<PgConnection> = None;
        loop {
            let up = match connection.as_mut() {
                Some(open) => tokio::time::timeout(PROBE_TIMEOUT, open.ping())
                    .await
                    .is_ok_and(|ping| ping.is_ok()),
                None => {
                    let attempt = tokio::time::timeout(PROBE_TIMEOUT, options.connect()).await;
                    connection = attempt.ok().and_then(Result::ok);
                    connection.is_some()
                }
            };
            if !up {
                connection = None;
            }
            self.set_down(!up);
            let pause = if up { PING_EVERY } else { RECONNECT_EVERY };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.0.reported.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
        if let Some(connection) = connection {
            let _ = connection.close().await;
        }
    }
}

/// Middleware for the routes that need the database: while it is known to be down, a request is
/// answered 503 at once; one that found it unreachable has the probe look at once.
pub async fn gate(State(health): State<DatabaseHealth>, request: Request, next: Next) -> Response {
    if health.is_down() {
        return ApiError::database_unavailable().into_response();
    }
    let response = next.run(request).await;
    if response.extensions().get::<DatabaseUnreachable>().is_some() {
        health.report();
    }
    response
}
