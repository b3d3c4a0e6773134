//! Tollgate's intake API: authenticate, validate, persist, enqueue, answer 202.
//!
//! [`serve`] runs the HTTP server on a listener it is given until the shutdown token fires, so the
//! binary and the tests run exactly the same code. Provider work never happens here.
//!
//! Its modules, lowest floor first (each uses only those above it in this list, which
//! `scripts/import-cycles` checks folder by folder):
//! - `http`: the plumbing — `server` (accept loop, head limits), `head_errors` (hyper's refusals
//!   rewritten), `request_body` (the body deadline), `extract` (JSON and query extractors),
//!   `path` (typed ids in paths), `client` (origin, address behind trusted proxies), `error` and
//!   `error_code` (problem+json, the one set of codes, a job's code mapped onto it), `prefer`,
//!   `sse`, `trace`, `metrics`, `database` (the database gate);
//! - `access`: `auth` (tokens and their cache, `Caller`, `Admin`), `limits` (rate limits, quotas);
//! - `watching`: following a job — `watch` (its events, for SSE and `Prefer: wait`), `follow`
//!   (a streaming job's text across instances);
//! - `cancelling`: a job's and a batch's cancel for every surface;
//! - `intake`: the one admission sequence — `mod` (`admit`, `call`), `admission` (quota),
//!   `idempotency` (`Idempotency-Key`, `IdempotentJson`), `coalesced` (jobs submitted together
//!   written together), `published` (publish marks), `images` (a request's images decoded, or
//!   fetched through the SSRF guard), `cached` (the response cache: a request's key, and a hit
//!   admitted ended);
//! - `calls`: a drop-in call over intake and watching — `feed` (waiting for or feeding its job),
//!   `answer` (what a finished call answers);
//! - `fleet`: models on the fleet's hosts;
//! - `routes`: the routes, each with its `#[utoipa::path]` — `jobs`, `job_history`, `events`,
//!   `batches`, `batch_events`, `usage`, `models`, `health`, `openapi` (the document's frame),
//!   `dashboard`, `tenancy`, `paging`; `openai/` (`chat`, `streams` and `response_events`: its two stream dialects,
//!   `embeddings`, `models`, `files`, `batches`, `batch_input`, `objects`, `requests`: OpenAI's
//!   request bodies, `conversation`: its messages, tools and formats read into the conversation
//!   model, `replies`: a reply in its answer shapes) and `ollama/` (`generation`, `models`,
//!   `requests`: Ollama's request bodies, `conversation`: its messages, tools and `format` and
//!   its reply); `anthropic/` (`messages`: its routes, `requests`: a Messages body read into the
//!   conversation model with Anthropic's extras kept, `replies`: a job as a `message`, `events`:
//!   its stream's events); `admin/` (`settings`,
//!   `aliases`, `hosts`, `models`, `billing`, `cache` (purges), `tenants`, `tokens`, `rules`, `audit`, `webhooks`,
//!   `dead_letters`, `overview`);
//! - `cli`: the operator commands (`migrate`, `tenant`, `token`).

mod access;
mod calls;
mod cancelling;
pub mod cli;
mod fleet;
mod http;
mod intake;
mod routes;
mod watching;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::types::ipnetwork::IpNetwork;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tollgate_core::image_fetch::{ImageFetcher, ImageLimits};
use tollgate_core::process::Tasks;
use tollgate_core::queue::Broker;
use tollgate_core::runtime::RuntimeWatch;
use tollgate_core::secret::SecretKey;

pub use http::error::ApiError;

/// Limits and switches of one api process.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Largest batch body accepted, in bytes.
    pub batch_body_limit: usize,
    /// Largest body of a call that carries images inline (and most bytes of images one request
    /// may show).
    pub image_body_limit: usize,
    /// How big, how slow and where from an image may be.
    pub images: ImageLimits,
    /// Seals the keys an admin stores (cloud accounts', hosts'); without it no key can be stored.
    pub secret_key: Option<SecretKey>,
    /// How often the runtime settings are checked for changes made elsewhere.
    pub settings_refresh: Duration,
    /// Lets webhook URLs name loopback and private addresses (tests, on-premise receivers).
    pub webhook_allow_private: bool,
    /// How often an idle SSE stream gets a comment line, so proxies keep it open.
    pub sse_heartbeat: Duration,
    /// Peers whose `Forwarded` / `X-Forwarded-For` headers are believed (load balancers).
    pub trusted_proxies: Vec<IpNetwork>,
    /// Longest a client may take to send a request's headers, and then its body.
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    /// Longest a call on the OpenAI or Ollama surface waits for (or streams) its job; the job goes
    /// on after it.
    pub sync_timeout: Duration,
    /// The bearer token `/metrics` asks for, if any.
    pub metrics_token: Option<secrecy::SecretString>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            batch_body_limit: 200 * 1024 * 1024,
            image_body_limit: 32 * 1024 * 1024,
            images: ImageLimits {
                max_bytes: tollgate_core::domain::conversation::DEFAULT_MAX_IMAGE_BYTES,
                timeout: Duration::from_secs(10),
                reach: tollgate_core::webhook::Reach::Public,
            },
            secret_key: None,
            settings_refresh: Duration::from_secs(1),
            webhook_allow_private: false,
            sse_heartbeat: Duration::from_secs(15),
            trusted_proxies: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            sync_timeout: Duration::from_secs(600),
            metrics_token: None,
        }
    }
}

/// How often this instance adds its requests and jobs to the dashboard's activity per minute.
const ACTIVITY_EVERY: Duration = Duration::from_secs(2);

/// What every handler can reach. Cloned for every extractor and layer of every request, so it
/// is one shared allocation: a clone is one reference count, not one per field.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub(crate) struct Shared {
    pool: PgPool,
    broker: Broker,
    tokens: Arc<access::auth::TokenCache>,
    published: intake::published::Recorder,
    /// Writes jobs submitted together in one statement.
    inserter: intake::coalesced::Inserter,
    body_limit: usize,
    batch_body_limit: usize,
    image_body_limit: usize,
    /// Reads images given by URL (a single job's, at intake).
    image_fetcher: ImageFetcher,
    /// The settings and model routes (intake refuses models no provider serves).
    runtime: RuntimeWatch,
    secret_key: Option<SecretKey>,
    /// This instance's watches on jobs (SSE, submit-and-wait).
    watchers: watching::watch::Watchers,
    /// The streaming jobs whose text this instance's clients follow.
    followers: watching::follow::Followers,
    /// Longest a drop-in surface's call waits for its job before answering with its id.
    sync_timeout: Duration,
    webhook_allow_private: bool,
    sse_heartbeat: Duration,
    /// Fires when the api begins shutting down: open streams end.
    shutdown: CancellationToken,
    /// For calls the api makes itself (Ollama's model management).
    upstream: reqwest::Client,
    trusted_proxies: Arc<[IpNetwork]>,
    /// Rate limits and the authentication-failure throttle.
    limiter: Arc<access::limits::Limiter>,
    /// Whether Postgres is known to be down (requests needing it get 503 at once).
    database: http::database::DatabaseHealth,
    metrics: http::metrics::ApiMetrics,
}

/// Serves the API on `listener` until `shutdown` fires, then finishes in-flight requests and
/// records the last confirmed publishes. The broker's supervision is the caller's: the process
/// owns the connection, the server only uses it.
///
/// Long on purpose: the start-up order of the api's parts, read top to bottom.
pub async fn serve(
    listener: TcpListener,
    pool: PgPool,
    broker: Broker,
    settings: ApiSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let runtime = RuntimeWatch::load(pool.clone())
        .await
        .context("cannot read the runtime settings")?;
    let mut tasks = Tasks::default();
    tasks.spawn(
        "settings refresher",
        runtime
            .clone()
            .keep_fresh(settings.settings_refresh, shutdown.clone()),
    );
    let published = intake::published::Recorder::start(pool.clone(), &mut tasks);
    let inserter = intake::coalesced::Inserter::start(
        pool.clone(),
        broker.clone(),
        published.clone(),
        &mut tasks,
    );
    let watchers = watching::watch::Watchers::start(broker.clone(), shutdown.clone(), &mut tasks);
    // Streams run on after the signal, up to their grace (see `feed`): their text keeps coming
    // until the server has finished every connection.
    let streams_end = CancellationToken::new();
    let followers =
        watching::follow::Followers::start(broker.clone(), streams_end.clone(), &mut tasks);
    let database = http::database::DatabaseHealth::default();
    tasks.spawn(
        "database probe",
        database.clone().probe(pool.clone(), shutdown.clone()),
    );
    let limiter = Arc::new(access::limits::Limiter::default());
    tasks.spawn(
        "instance heartbeat",
        limiter
            .clone()
            .follow_instances(pool.clone(), shutdown.clone()),
    );
    let metrics = http::metrics::ApiMetrics::new(tollgate_core::metrics::ScrapeGuard::new(
        settings.metrics_token.as_ref(),
    ));
    tasks.spawn(
        "activity report",
        http::metrics::report(
            metrics.clone(),
            pool.clone(),
            ACTIVITY_EVERY,
            shutdown.clone(),
        ),
    );
    let state = AppState(Arc::new(Shared {
        pool,
        broker,
        watchers,
        followers,
        sync_timeout: settings.sync_timeout,
        webhook_allow_private: settings.webhook_allow_private,
        sse_heartbeat: settings.sse_heartbeat,
        shutdown: shutdown.clone(),
        upstream: reqwest::Client::new(),
        trusted_proxies: settings.trusted_proxies.clone().into(),
        limiter,
        database,
        tokens: Arc::new(access::auth::TokenCache::default()),
        published,
        inserter,
        body_limit: settings.body_limit,
        batch_body_limit: settings.batch_body_limit,
        image_body_limit: settings.image_body_limit,
        image_fetcher: ImageFetcher::new(settings.images.clone()),
        runtime,
        secret_key: settings.secret_key.clone(),
        metrics,
    }));
    let app = routes::router(state, &settings);
    tracing::info!(addr = %listener.local_addr()?, "api listening");
    http::server::run(
        listener,
        app,
        settings.header_read_timeout,
        shutdown.clone(),
    )
    .await;
    streams_end.cancel();
    // Every handler (and so every recorder handle) is gone now: the recorder flushes and ends,
    // and every other task ends on the shutdown.
    tasks.join().await?;
    Ok(())
}
