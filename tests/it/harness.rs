//! The test stack: a fresh database and queue prefix per test, two provider-sims on port 0 (one
//! playing Ollama, one playing OpenAI, so each can fail on its own), and the real api and worker
//! running in-process against real Postgres and RabbitMQ.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use provider_sim::{Knobs, Sim};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_api::ApiSettings;
use tollgate_core::db::jobs::NewJob;
use tollgate_core::domain::{
    CloudChange, GenerateRequest, HostKind, JobId, JobRequest, JobStatus, ProviderName, Role,
    SealedKey, SettingsChange, Strategy,
};
use tollgate_core::queue::{Broker, Topology};
use tollgate_core::secret::{SecretKey, last4};
use tollgate_core::webhook::RetrySchedule;
use tollgate_worker::{WebhookSettings, WorkerSettings};

pub const WAIT: Duration = Duration::from_secs(20);
pub const OPENAI_KEY: &str = "sk-test-0123456789abcdef";

/// Which provider the settings make active. Both sims run either way and OpenAI's key is stored,
/// so a test can switch at run time; the fallback starts as `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// `ai_provider = local`: the Ollama sim answers.
    Ollama,
    /// `ai_provider = openai`: the OpenAI sim answers.
    OpenAi,
    /// `ai_provider = local` with the local provider disabled and no fallback: nothing can serve.
    Nothing,
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub struct Stack {
    pub api_url: String,
    pub pool: PgPool,
    /// The sim playing Ollama, and the one playing OpenAI.
    pub ollama: Sim,
    pub openai: Sim,
    /// Where the Ollama sim listens.
    pub ollama_url: String,
    pub topology: Topology,
    /// A client token of tenant "acme".
    pub token: String,
    /// An admin token of tenant "ops".
    pub admin_token: String,
    pub secret_key: SecretKey,
    /// The test's own broker connection, for publishing by hand.
    pub broker: Broker,
    amqp_url: String,
    db_name: String,
    stop: CancellationToken,
    apis: std::sync::Mutex<Vec<JoinHandle<()>>>,
    workers: Vec<WorkerHandle>,
    /// Set once [`Stack::stop`] has cleaned up; a stack dropped without it (its test panicked)
    /// has its queues and database removed by `Drop`.
    stopped: bool,
}

pub struct WorkerHandle {
    shutdown: CancellationToken,
    connection: CancellationToken,
    task: JoinHandle<()>,
    /// Where the worker's probe (`/metrics`, `/healthz`, `/readyz`) listens.
    pub probe: String,
}

impl WorkerHandle {
    /// Stops the worker with no grace: running jobs are abandoned unacked and the connection is
    /// closed, as when the process dies.
    pub async fn crash(self) {
        self.shutdown.cancel();
        self.task.await.expect("worker task");
        self.connection.cancel();
    }
}

pub struct Options {
    pub upstream: Upstream,
    /// Applied to the settings after [`test_settings`], before anything starts.
    pub settings: SettingsChange,
    pub worker: bool,
    pub worker_settings: WorkerSettings,
    /// Route the api's and worker's AMQP connections through this address (a [`Proxy`]).
    pub amqp_url: Option<String>,
    pub api_settings: ApiSettings,
    /// The slots of the fleet's one host, `default` (the Ollama sim).
    pub host_slots: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            upstream: Upstream::Ollama,
            settings: SettingsChange::default(),
            host_slots: 64,
            worker: true,
            worker_settings: test_worker_settings(),
            amqp_url: None,
            api_settings: test_api_settings(),
        }
    }
}

/// A stack whose settings, besides `settings`, fall back to OpenAI (the second sim).
pub fn with_openai_fallback(settings: SettingsChange) -> Options {
    Options {
        settings: SettingsChange {
            ai_fallback_provider: Some(Some(ProviderName::OPENAI)),
            ..settings
        },
        ..Options::default()
    }
}

/// A stack without a worker: submitted jobs stay queued.
pub fn idle() -> Options {
    Options {
        worker: false,
        ..Options::default()
    }
}

/// Webhooks and image URLs may reach the tests' servers on 127.0.0.1 unless a test says
/// otherwise.
pub fn test_api_settings() -> ApiSettings {
    ApiSettings {
        settings_refresh: Duration::from_millis(100),
        webhook_allow_private: true,
        images: test_image_limits(),
        ..ApiSettings::default()
    }
}

pub fn test_image_limits() -> tollgate_core::image_fetch::ImageLimits {
    tollgate_core::image_fetch::ImageLimits {
        reach: tollgate_core::webhook::Reach::Everything,
        ..ApiSettings::default().images
    }
}

pub fn test_worker_settings() -> WorkerSettings {
    WorkerSettings {
        concurrency: 16,
        sweep_every: Duration::from_millis(200),
        sweep_after: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(5),
        provider_timeout: Duration::from_secs(5),
        // Tests decide health through real calls; the probe stays out of the way.
        probe_every: Duration::from_secs(3600),
        settings_refresh: Duration::from_millis(100),
        webhooks: WebhookSettings {
            timeout: Duration::from_secs(2),
            schedule: RetrySchedule::new(vec![Duration::from_millis(100); 4]),
            allow_private: true,
            ..WebhookSettings::default()
        },
        images: test_image_limits(),
        ..WorkerSettings::default()
    }
}

/// Quick retries and no circuit breaking unless a test asks for them: the test's own settings
/// change is applied on top.
fn test_settings() -> SettingsChange {
    SettingsChange {
        provider_attempts: Some(2),
        retry_min_delay_ms: Some(10),
        retry_max_delay_ms: Some(50),
        max_job_attempts: Some(3),
        circuit_failure_threshold: Some(1000),
        circuit_cooldown_ms: Some(1000),
        ..SettingsChange::default()
    }
}

/// Adds the fleet's Ollama host `name` at `url` with `slots`, or changes it to that, straight in
/// the database (the admin API's own tests go through the API), and makes every process reload it.
pub async fn put_host(pool: &PgPool, name: &str, url: &str, slots: u32) {
    put_host_of(pool, HostKind::Ollama, name, url, slots).await;
}

/// [`put_host`] for a host of `kind` (an OpenAI-compatible server's `url` ends in `/v1`).
pub async fn put_host_of(pool: &PgPool, kind: HostKind, name: &str, url: &str, slots: u32) {
    let slots = i32::try_from(slots).expect("slots fit");
    let bulk =
        i32::try_from(tollgate_core::domain::bulk_slots(slots.unsigned_abs())).expect("fits");
    sqlx::query(
        "with host as (
            insert into hosts (id, name, kind, base_url, slots, bulk_slots)
            values (gen_random_uuid(), $1, $5, $2, $3, $4)
            on conflict (name) do update
               set base_url = excluded.base_url, slots = excluded.slots,
                   bulk_slots = excluded.bulk_slots, enabled = true
            returning id
         ), slots as (
            insert into host_slots (host_id, slot)
            select id, generate_series(1, $3) from host
            on conflict do nothing
         )
         update settings set version = version + 1",
    )
    .bind(name)
    .bind(url)
    .bind(slots)
    .bind(bulk)
    .bind(kind.as_str())
    .execute(pool)
    .await
    .expect("put a host");
}

/// Applies `change` to the stored settings, panicking on a refused value.
pub async fn change_settings(pool: &PgPool, change: SettingsChange) {
    tollgate_core::db::settings::update(pool, change, |_, _| None)
        .await
        .expect("settings update")
        .expect("valid settings");
}

async fn start_sim() -> (Sim, String, CancellationToken) {
    serve_sim(Sim::new(Knobs::default(), Some(OPENAI_KEY.into()))).await
}

async fn serve_sim(sim: Sim) -> (Sim, String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
    let url = format!("http://{}", listener.local_addr().expect("sim addr"));
    let stop = CancellationToken::new();
    tokio::spawn(provider_sim::serve(listener, sim.clone(), stop.clone()));
    (sim, url, stop)
}

impl Stack {
    pub async fn start() -> Self {
        Self::with(Options::default()).await
    }

    pub async fn with(options: Options) -> Self {
        let (pool, db_name) = empty_database().await;
        tollgate_core::db::migrate(&pool).await.expect("migrate");

        let (ollama, ollama_url, stop) = start_sim().await;
        let (openai, openai_url, openai_stop) = start_sim().await;
        let stop_openai = stop.clone();
        tokio::spawn(async move {
            stop_openai.cancelled().await;
            openai_stop.cancel();
        });
        let secret_key = SecretKey::parse(&SecretString::from(SecretKey::generate()))
            .expect("a generated key parses");
        let upstream_settings = SettingsChange {
            ai_provider: Some(Strategy::Provider(match options.upstream {
                Upstream::OpenAi => ProviderName::OPENAI,
                Upstream::Ollama | Upstream::Nothing => ProviderName::LOCAL,
            })),
            ai_fallback_provider: Some(None),
            ai_local_enabled: Some(options.upstream != Upstream::Nothing),
            openai: CloudChange {
                api_key: Some(Some(SealedKey {
                    sealed: secret_key.seal(OPENAI_KEY),
                    last4: last4(OPENAI_KEY),
                })),
                base_url: Some(format!("{openai_url}/v1")),
                max_concurrency: Some(64),
                ..CloudChange::default()
            },
            ..test_settings()
        };
        change_settings(&pool, upstream_settings).await;
        put_host(&pool, "default", &ollama_url, options.host_slots).await;
        change_settings(&pool, options.settings.clone()).await;

        let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
        let topology = Topology::new(&prefix);
        let amqp_url = options.amqp_url.clone().unwrap_or_else(amqp_url);
        // The test's own connection goes straight to the broker, never through a proxy.
        let broker = Broker::new(self::amqp_url(), topology.clone(), "tollgate-test");
        tokio::spawn(broker.clone().supervise(stop.clone()));
        broker
            .connected(WAIT)
            .await
            .expect("RabbitMQ is reachable at AMQP_URL");

        let mut stack = Self {
            api_url: String::new(),
            pool,
            ollama,
            openai,
            ollama_url: ollama_url.clone(),
            topology,
            token: String::new(),
            admin_token: String::new(),
            secret_key,
            broker,
            amqp_url,
            db_name,
            stop,
            apis: std::sync::Mutex::new(Vec::new()),
            workers: Vec::new(),
            stopped: false,
        };
        stack.api_url = stack.start_api(options.api_settings.clone()).await;
        stack.token = stack.create_token("acme", Role::Client).await;
        stack.admin_token = stack.create_token("ops", Role::Admin).await;
        if options.worker {
            let worker = stack.start_worker(options.worker_settings).await;
            stack.workers.push(worker);
        }
        stack
    }

    /// A pool on the test's database whose connections go through `proxy`.
    pub async fn pool_through(&self, proxy: &Proxy) -> PgPool {
        self.pool_at(proxy.addr).await
    }

    /// A pool of the stack's database whose connections go to `addr` (a proxy), unencrypted so
    /// that the proxy can read what passes.
    pub async fn pool_at(&self, addr: SocketAddr) -> PgPool {
        let mut url = url::Url::parse(&database_url()).expect("DATABASE_URL is a URL");
        url.set_path(&self.db_name);
        url.set_host(Some(&addr.ip().to_string())).expect("a host");
        url.set_port(Some(addr.port())).expect("a port");
        url.query_pairs_mut().append_pair("sslmode", "disable");
        tollgate_core::db::connect(url.as_str(), 8)
            .await
            .expect("connect through the proxy")
    }

    /// Starts an api instance on `pool` (the stack's own is [`Stack::start_api`]'s).
    pub async fn start_api_on(&self, pool: PgPool, settings: ApiSettings) -> String {
        self.spawn_api(pool, settings, self.stop.clone()).await
    }

    /// Starts an api instance on its own broker connection and returns its URL; the first is
    /// [`Stack::api_url`], a test may start more (they share the database and the broker).
    pub async fn start_api(&self, settings: ApiSettings) -> String {
        self.start_api_until(settings, self.stop.clone()).await
    }

    /// [`Stack::start_api`] with its own shutdown signal.
    pub async fn start_api_until(&self, settings: ApiSettings, stop: CancellationToken) -> String {
        self.spawn_api(self.pool.clone(), settings, stop).await
    }

    async fn spawn_api(
        &self,
        pool: PgPool,
        settings: ApiSettings,
        stop: CancellationToken,
    ) -> String {
        let broker = Broker::new(&self.amqp_url, self.topology.clone(), "tollgate-api-test");
        tokio::spawn(broker.clone().supervise(self.stop.clone()));
        broker
            .connected(WAIT)
            .await
            .expect("the api connects to RabbitMQ");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
        let url = format!("http://{}", listener.local_addr().expect("api addr"));
        let settings = ApiSettings {
            secret_key: Some(self.secret_key.clone()),
            ..settings
        };
        let api = tokio::spawn(async move {
            tollgate_api::serve(listener, pool, broker, settings, stop)
                .await
                .expect("api serves");
        });
        self.apis.lock().expect("apis lock").push(api);
        url
    }

    /// Starts a worker the stack owns (stopped with it), e.g. after a stack started without one.
    pub async fn add_worker(&mut self, settings: WorkerSettings) {
        let worker = self.start_worker(settings).await;
        self.workers.push(worker);
    }

    /// Where the stack's first worker serves `/metrics`, `/healthz` and `/readyz`.
    pub fn worker_probe(&self) -> &str {
        &self.workers.first().expect("the stack has a worker").probe
    }

    /// Crashes the stack's own worker, leaving the api (and any worker started apart) running.
    pub async fn without_workers(mut self) -> Self {
        for worker in self.workers.drain(..) {
            worker.crash().await;
        }
        self
    }

    /// One more provider-sim (e.g. a second Ollama host), stopped with the stack; its URL.
    pub async fn extra_sim(&self) -> (Sim, String) {
        let served = start_sim().await;
        self.stopped_with_the_stack(served)
    }

    /// A provider-sim serving as an OpenAI-compatible server (vLLM) that takes `key` (any key
    /// when `None`), stopped with the stack; its base URL, `/v1` included.
    pub async fn compatible_sim(&self, key: Option<&str>) -> (Sim, String) {
        let sim = Sim::compatible_server(Knobs::default(), key.map(str::to_owned));
        let (sim, url) = self.stopped_with_the_stack(serve_sim(sim).await);
        (sim, format!("{url}/v1"))
    }

    fn stopped_with_the_stack(&self, served: (Sim, String, CancellationToken)) -> (Sim, String) {
        let (sim, url, stop) = served;
        let stack_stop = self.stop.clone();
        tokio::spawn(async move {
            stack_stop.cancelled().await;
            stop.cancel();
        });
        (sim, url)
    }

    /// The id of tenant `name`.
    pub async fn tenant_id(&self, name: &str) -> String {
        tollgate_core::db::tenants::find_by_name(&self.pool, name)
            .await
            .expect("find tenant")
            .expect("the tenant exists")
            .to_string()
    }

    /// Starts one more in-process worker on its own broker connection.
    pub async fn start_worker(&self, settings: WorkerSettings) -> WorkerHandle {
        self.start_worker_through(&self.amqp_url.clone(), settings)
            .await
    }

    /// [`Stack::start_worker`] with its broker connection going to `amqp_url` (a [`Proxy`]).
    pub async fn start_worker_through(
        &self,
        amqp_url: &str,
        settings: WorkerSettings,
    ) -> WorkerHandle {
        self.start_worker_with(amqp_url, self.pool.clone(), settings)
            .await
    }

    /// [`Stack::start_worker`] on `pool` (one through a proxy, say).
    pub async fn start_worker_on(&self, pool: PgPool, settings: WorkerSettings) -> WorkerHandle {
        self.start_worker_with(&self.amqp_url, pool, settings).await
    }

    async fn start_worker_with(
        &self,
        amqp_url: &str,
        pool: PgPool,
        settings: WorkerSettings,
    ) -> WorkerHandle {
        let settings = WorkerSettings {
            secret_key: Some(self.secret_key.clone()),
            ..settings
        };
        let shutdown = CancellationToken::new();
        let connection = CancellationToken::new();
        let broker = Broker::new(amqp_url, self.topology.clone(), "tollgate-worker-test");
        tokio::spawn(broker.clone().supervise(connection.clone()));
        broker
            .connected(WAIT)
            .await
            .expect("the worker connects to RabbitMQ");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the worker probe");
        let probe = format!("http://{}", listener.local_addr().expect("probe address"));
        let run = tollgate_worker::run(pool, broker, settings, Some(listener), shutdown.clone());
        let task = tokio::spawn(async move { run.await.expect("the worker reads its settings") });
        WorkerHandle {
            shutdown,
            connection,
            task,
            probe,
        }
    }

    /// A new token for `tenant` (created if missing).
    pub async fn create_token(&self, tenant: &str, role: Role) -> String {
        let tenant_id = match tollgate_core::db::tenants::find_by_name(&self.pool, tenant)
            .await
            .expect("find tenant")
        {
            Some(id) => id,
            None => tollgate_core::db::tenants::create(&self.pool, tenant)
                .await
                .expect("create tenant"),
        };
        let token = tollgate_core::token::generate();
        tollgate_core::db::tokens::create(
            &self.pool,
            tenant_id,
            "test",
            role,
            &token.hash,
            &token.display_prefix,
        )
        .await
        .expect("create token");
        token.secret
    }

    /// Inserts a `generate` job for the stack's token as intake would, without publishing it.
    pub async fn insert_unpublished_job(&self, prompt: &str) -> JobId {
        self.insert_job_as(JobId::new(), prompt).await
    }

    /// Locks job `id`'s row in a transaction of its own, as another statement (a claim, a run's
    /// end) holds it, until the transaction is rolled back or dropped.
    pub async fn hold_job(&self, id: JobId) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut holder = self.pool.begin().await.expect("begin");
        sqlx::query("select 1 from jobs where id = $1 for update")
            .bind(id)
            .execute(&mut *holder)
            .await
            .expect("hold the row");
        holder
    }

    /// [`Self::insert_unpublished_job`] under a given id (a UUIDv7 of another day, say).
    pub async fn insert_job_as(&self, id: JobId, prompt: &str) -> JobId {
        let hash = tollgate_core::token::hash(&self.token);
        let principal = tollgate_core::db::tokens::authenticate(&self.pool, &hash)
            .await
            .expect("query")
            .expect("the stack's token is valid");
        let request = GenerateRequest::parse("llama3", prompt.into(), None).expect("valid request");
        let job = NewJob {
            id,
            tenant_id: principal.tenant_id,
            token_id: Some(principal.token_id),
            request: JobRequest::Generate(request),
            metadata: None,
            origin: None,
            client_ip: None,
            reservation: None,
            webhook_url: None,
            stream_to: None,
            traceparent: None,
            cache: Default::default(),
        };
        tollgate_core::db::jobs::insert(&self.pool, &job)
            .await
            .expect("insert job");
        job.id
    }

    /// How many rows `table` holds.
    pub async fn rows(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_url)
    }

    /// POSTs JSON with the stack's client token.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        client()
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        client()
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET")
    }

    /// Sends `method path` with the admin token and a JSON body (unless `Null`).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.send(&self.admin_token, method, path, body).await
    }

    /// Sends `method path` with `token` and a JSON body (unless `Null`).
    pub async fn send(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> reqwest::Response {
        let request = client().request(method, self.url(path)).bearer_auth(token);
        let request = if body.is_null() {
            request
        } else {
            request.json(body)
        };
        request.send().await.expect("request")
    }

    /// `PATCH /v1/admin/settings`, expecting 200; returns the settings.
    pub async fn patch_settings(&self, body: &Value) -> Value {
        let response = self
            .admin(reqwest::Method::PATCH, "/v1/admin/settings", body)
            .await;
        assert_eq!(response.status(), 200, "PATCH settings {body}");
        response.json().await.expect("settings JSON")
    }

    /// Submits a `generate` job for `model` and waits until it is terminal.
    pub async fn generate(&self, model: &str, prompt: &str) -> Value {
        let job = self
            .submit("/v1/generate", &json!({ "model": model, "prompt": prompt }))
            .await;
        self.wait_until_finished(job["id"].as_str().expect("id"))
            .await
    }

    /// Submits `count` generate jobs for `llama3`, prompted `{tag} {n}`; their ids.
    pub async fn submit_many(&self, count: usize, tag: &str) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        for n in 0..count {
            let body = json!({ "model": "llama3", "prompt": format!("{tag} {n}") });
            let job = self.submit("/v1/generate", &body).await;
            ids.push(job["id"].as_str().expect("id").to_owned());
        }
        ids
    }

    /// Submits and returns the 202's job JSON.
    pub async fn submit(&self, path: &str, body: &Value) -> Value {
        let response = self.post(path, body).await;
        assert_eq!(response.status(), 202, "submit {path}");
        response.json().await.expect("job JSON")
    }

    /// Polls the job until it is terminal; panics after [`WAIT`].
    pub async fn wait_until_finished(&self, id: &str) -> Value {
        self.wait_for_job(id, |job| {
            job["status"]
                .as_str()
                .and_then(JobStatus::parse)
                .is_some_and(JobStatus::is_terminal)
        })
        .await
    }

    pub async fn wait_for_job(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let poll = async {
            loop {
                let job: Value = self
                    .get(&format!("/v1/jobs/{id}"))
                    .await
                    .json()
                    .await
                    .expect("job JSON");
                if done(&job) {
                    return job;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(WAIT, poll)
            .await
            .unwrap_or_else(|_| panic!("job {id} did not get there in {WAIT:?}"))
    }

    /// Tears down the api, workers, the test database and the queues.
    pub async fn stop(mut self) {
        for worker in self.workers.drain(..) {
            worker.shutdown.cancel();
            let _ = worker.task.await;
            worker.connection.cancel();
        }
        if let Some(raw) = self.raw_broker().await {
            raw.delete(&self.topology).await;
        }
        self.stop.cancel();
        let apis = std::mem::take(&mut *self.apis.lock().expect("apis lock"));
        for api in apis {
            let _ = api.await;
        }
        self.pool.close().await;
        drop_database(&self.db_name).await;
        self.stopped = true;
    }
}

/// A stack its test did not stop (it panicked on the way) leaves no queues or database behind:
/// they are removed from a thread of its own, since `Drop` cannot wait on the test's runtime.
impl Drop for Stack {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.stop.cancel();
        let (topology, db_name) = (self.topology.clone(), self.db_name.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    delete_queues(&topology).await;
                    drop_database(&db_name).await;
                });
            }
        });
        let _ = cleanup.join();
    }
}

/// Deletes a stack's queues and exchanges over a connection of its own.
async fn delete_queues(topology: &Topology) {
    if let Some(raw) = RawBroker::connect().await {
        raw.delete(topology).await;
        raw.close().await;
    }
}

/// The one place tests speak AMQP themselves (lapin), for what the broker does on its own or what
/// the gateway never does: a channel on the stack's connection, or on a connection of its own.
pub struct RawBroker {
    channel: lapin::Channel,
    own: Option<lapin::Connection>,
}

impl Stack {
    /// A raw channel on the stack's broker connection; `None` while it is away.
    pub async fn raw_broker(&self) -> Option<RawBroker> {
        let channel = self.broker.session()?.channel().await.ok()?;
        Some(RawBroker { channel, own: None })
    }
}

impl RawBroker {
    /// A channel on a connection of its own (for a stack that is going away).
    async fn connect() -> Option<Self> {
        let properties = lapin::ConnectionProperties::default();
        let connection = lapin::Connection::connect(&amqp_url(), properties)
            .await
            .ok()?;
        let channel = connection.create_channel().await.ok()?;
        Some(Self {
            channel,
            own: Some(connection),
        })
    }

    /// Deletes the queues and exchanges of `topology`.
    async fn delete(&self, topology: &Topology) {
        let _ = topology.delete(&self.channel).await;
    }

    async fn close(self) {
        if let Some(connection) = self.own {
            let _ = connection.close(200, "the test is over".into()).await;
        }
    }

    /// How many messages `queue` holds (ready, not delivered).
    pub async fn message_count(&self, queue: String) -> u32 {
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.channel
            .queue_declare(queue.into(), passive, lapin::types::FieldTable::default())
            .await
            .expect("the queue exists")
            .message_count()
    }

    /// Publishes `body` persistently to `exchange` under `key`, as the broker itself would (a
    /// dead letter, say).
    pub async fn publish(&self, exchange: String, key: &str, body: &[u8]) {
        self.channel
            .basic_publish(
                exchange.into(),
                key.into(),
                lapin::options::BasicPublishOptions::default(),
                body,
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish");
    }
}

/// Drops a stack's database, ending the connections still open to it.
/// A new, empty database of its own on DATABASE_URL's server, and its name (for
/// [`drop_database`]).
pub async fn empty_database() -> (PgPool, String) {
    let name = format!("tollgate_test_{}", uuid::Uuid::now_v7().simple());
    let admin = PgPool::connect(&database_url())
        .await
        .expect("Postgres is reachable at DATABASE_URL");
    sqlx::query(&format!("create database {name}"))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    let mut url = url::Url::parse(&database_url()).expect("DATABASE_URL is a URL");
    url.set_path(&name);
    let pool = tollgate_core::db::connect(url.as_str(), 8)
        .await
        .expect("connect to the test database");
    (pool, name)
}

pub async fn drop_database(name: &str) {
    if let Ok(admin) = PgPool::connect(&database_url()).await {
        let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
            .execute(&admin)
            .await;
        admin.close().await;
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Waits until `check` holds, polling; panics with `what` after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let poll = async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, poll)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

/// A TCP proxy to RabbitMQ (or Postgres) that a test can cut and restore, to make a real
/// connection loss.
pub struct Proxy {
    /// The broker's URL through the proxy (for [`Proxy::start`]).
    pub url: String,
    /// Where the proxy listens.
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    cut: Arc<std::sync::Mutex<CancellationToken>>,
}

pub async fn resolve(url: &str, default_port: u16) -> SocketAddr {
    let url = url::Url::parse(url).expect("a service URL");
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = url.port().unwrap_or(default_port);
    tokio::net::lookup_host((host, port))
        .await
        .expect("resolve the service")
        .next()
        .expect("the service's address")
}

impl Proxy {
    /// A proxy to the broker at `AMQP_URL`.
    pub async fn start() -> Self {
        Self::to(resolve(&amqp_url(), 5672).await).await
    }

    /// A proxy to Postgres at `DATABASE_URL`.
    pub async fn to_postgres() -> Self {
        Self::to(resolve(&database_url(), 5432).await).await
    }

    async fn to(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let url = format!("amqp://guest:guest@{addr}/%2f");
        let open = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let (accept_open, accept_cut) = (open.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !accept_open.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let cut = accept_cut.lock().expect("proxy lock").clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = cut.cancelled() => {}
                    }
                });
            }
        });
        Self {
            url,
            addr,
            open,
            cut,
        }
    }

    /// Drops every proxied connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        let mut cut = self.cut.lock().expect("proxy lock");
        cut.cancel();
        *cut = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}
