//! The runtime settings (with model routes and prices) as every process holds them: loaded from Postgres at start, then checked
//! every second (one tiny `select version`) and reloaded only when an operator changed something.
//!
//! Holding them in memory is what keeps provider resolution free of a database round trip per job;
//! polling the version is what makes a change reach every api and worker process within about a
//! second, without a restart.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::db;
use crate::domain::Runtime;

/// A process's copy of the settings and model routes, shared by its tasks.
#[derive(Clone)]
pub struct RuntimeWatch {
    pool: PgPool,
    current: watch::Sender<Arc<Runtime>>,
}

impl RuntimeWatch {
    /// Loads the settings; fails if the database cannot be read.
    pub async fn load(pool: PgPool) -> Result<Self, sqlx::Error> {
        let runtime = read(&pool).await?;
        let (current, _) = watch::channel(Arc::new(runtime));
        Ok(Self { pool, current })
    }

    /// The settings now: a cheap clone of an `Arc`.
    pub fn current(&self) -> Arc<Runtime> {
        self.current.borrow().clone()
    }

    /// Notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Runtime>> {
        self.current.subscribe()
    }

    /// Reloads if the stored version differs from the one held.
    pub async fn refresh(&self) -> Result<(), sqlx::Error> {
        let stored = db::version::current(&self.pool).await?;
        if stored != self.current.borrow().settings.version {
            self.reload().await?;
        }
        Ok(())
    }

    /// Reloads at once, e.g. right after this process changed the settings itself.
    pub async fn reload(&self) -> Result<(), sqlx::Error> {
        let runtime = read(&self.pool).await?;
        tracing::info!(
            version = runtime.settings.version,
            "runtime settings loaded"
        );
        self.current.send_replace(Arc::new(runtime));
        Ok(())
    }

    /// Checks for changes every `every` until `shutdown`.
    pub async fn keep_fresh(self, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            if let Err(error) = self.refresh().await {
                tracing::warn!(%error, "cannot refresh the runtime settings; keeping the last ones");
            }
        }
    }
}

async fn read(pool: &PgPool) -> Result<Runtime, sqlx::Error> {
    let settings = db::settings::get(pool).await?;
    let routes = db::model_routes::all(pool).await?;
    let prices = db::prices::all(pool).await?;
    let hosts = db::hosts::all(pool).await?;
    let fleet_models = db::host_models::fleet(pool).await?;
    let clouds = db::providers::clouds(pool).await?;
    Ok(Runtime {
        settings,
        clouds,
        routes,
        prices,
        hosts,
        fleet_models,
    })
}
