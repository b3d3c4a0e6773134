//! provider-sim: a stand-in for Ollama, the OpenAI API and Anthropic's Messages API, the three wire
//! protocols on one port — or,
//! started as an OpenAI-compatible server ([`Sim::compatible_server`]), a stand-in for vLLM: Chat
//! Completions, Embeddings and the model list only, under the model names such servers use, and
//! no Ollama API, Responses API or Messages API (404, as FastAPI answers). Such a server can be made "old": it
//! then refuses `stream_options` and `max_completion_tokens` with a 400 naming them. It can be
//! started without tool calling, as vLLM is without `--enable-auto-tool-choice`: a request that
//! offers tools gets vLLM's 400 (counted under `tools_refused`).
//!
//! Output is derived deterministically from the input (same prompt, same answer), token counts are
//! plausible, and knobs inject latency, 500s, 429s with `Retry-After`, and hangs. Tests hold a
//! [`Sim`] and turn the knobs directly; a running sim takes `PUT /_sim/knobs`. It counts the model
//! calls in flight and their peak, which is how a test or a benchmark sees that a gateway kept to
//! a host's slots (`GET /_sim/stats`, `DELETE /_sim/stats` resets the peak).
//!
//! Its modules: `ollama`, `openai` and `anthropic` (the three wire protocols), `answers` (tool calls and JSON,
//! valid or deliberately not), `images` (images as each vendor takes them, and what the sim says
//! it sees), `reasoning` (thinking and reasoning effort as each vendor takes them), `faults` (the
//! knobs' latency and failures), `text` (deterministic answers and token counts).

mod answers;
mod anthropic;
mod faults;
mod images;
mod ollama;
mod openai;
mod reasoning;
mod text;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router, extract::State};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use anthropic::ANTHROPIC_MODELS;
pub use faults::Knobs;

/// Models the sim's Ollama side has installed at start.
pub const OLLAMA_MODELS: [&str; 4] = [
    "llama3:latest",
    "mistral:latest",
    "nomic-embed-text:latest",
    "llava:latest",
];
/// Models the sim's OpenAI side serves.
pub const OPENAI_MODELS: [&str; 5] = [
    "gpt-4.1-mini",
    "gpt-4o-mini",
    "text-embedding-3-small",
    "o4-mini",
    "deepseek-reasoner",
];

/// Models the sim serves as an OpenAI-compatible server.
pub const COMPATIBLE_MODELS: [&str; 3] = [
    "Qwen/Qwen3-32B",
    "meta-llama/Llama-3.1-8B-Instruct",
    "BAAI/bge-m3",
];

/// A handle on a running (or about to run) sim: knobs to turn and calls to count.
#[derive(Clone, Default)]
pub struct Sim {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    knobs: Mutex<Knobs>,
    openai_key: Mutex<Option<String>>,
    ollama_models: Mutex<BTreeMap<String, ollama::InstalledModel>>,
    calls: Mutex<HashMap<String, u64>>,
    /// Model calls (generation, chat, embeddings) being answered now, and the most at once.
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    /// The `traceparent` header of the latest model calls, in arrival order (`None` for a call
    /// without), at most [`KEPT_TRACES`].
    traceparents: Mutex<std::collections::VecDeque<Option<String>>>,
    /// The prompts OpenAI's side has answered (their hashes, at most [`KEPT_PROMPTS`]): one seen
    /// again is read from the "cache", as OpenAI's prompt caching reads a repeated prompt.
    prompts_seen: Mutex<std::collections::HashSet<String>>,
    /// Serves as an OpenAI-compatible server (see the crate's docs).
    compatible: std::sync::atomic::AtomicBool,
    /// As an OpenAI-compatible server, refuses what older ones do not know.
    old_server: std::sync::atomic::AtomicBool,
    /// As an OpenAI-compatible server, refuses requests that offer tools.
    no_tool_calling: std::sync::atomic::AtomicBool,
}

/// Most prompts the sim remembers for its cache; it forgets them all past this.
const KEPT_PROMPTS: usize = 10_000;

impl Sim {
    pub fn new(knobs: Knobs, openai_key: Option<String>) -> Self {
        let sim = Self::default();
        sim.set_knobs(knobs);
        *lock(&sim.inner.openai_key) = openai_key;
        let mut models = lock(&sim.inner.ollama_models);
        for name in OLLAMA_MODELS {
            models.insert(name.to_owned(), ollama::InstalledModel::new(name));
        }
        drop(models);
        sim
    }

    /// A sim serving as an OpenAI-compatible server (vLLM) and nothing else.
    pub fn compatible_server(knobs: Knobs, key: Option<String>) -> Self {
        let sim = Self::new(knobs, key);
        sim.inner.compatible.store(true, Ordering::Release);
        sim
    }

    /// Makes an OpenAI-compatible server one too old for `stream_options` and
    /// `max_completion_tokens` (or new again).
    pub fn set_old_server(&self, old: bool) {
        self.inner.old_server.store(old, Ordering::Release);
    }

    /// Makes an OpenAI-compatible server one started without tool calling (or with it again).
    pub fn set_tool_calling(&self, on: bool) {
        self.inner.no_tool_calling.store(!on, Ordering::Release);
    }

    /// Whether the server refuses requests that offer tools.
    fn refuses_tools(&self) -> bool {
        self.is_compatible() && self.inner.no_tool_calling.load(Ordering::Acquire)
    }

    fn is_compatible(&self) -> bool {
        self.inner.compatible.load(Ordering::Acquire)
    }

    /// Whether the server refuses what older OpenAI-compatible servers do not know.
    fn is_old(&self) -> bool {
        self.is_compatible() && self.inner.old_server.load(Ordering::Acquire)
    }

    /// The models its OpenAI API serves.
    fn openai_models(&self) -> &'static [&'static str] {
        if self.is_compatible() {
            &COMPATIBLE_MODELS
        } else {
            &OPENAI_MODELS
        }
    }

    /// Whether `input` was answered before (its prompt is then read from the cache); remembers
    /// it.
    fn cached(&self, input: &str) -> bool {
        let mut seen = lock(&self.inner.prompts_seen);
        if seen.len() >= KEPT_PROMPTS {
            seen.clear();
        }
        !seen.insert(text::hex_id(input))
    }

    pub fn knobs(&self) -> Knobs {
        lock(&self.inner.knobs).clone()
    }

    pub fn set_knobs(&self, knobs: Knobs) {
        *lock(&self.inner.knobs) = knobs;
    }

    /// Installs an Ollama model able to do what `capabilities` says (`None`: it says nothing, as
    /// a host too old to report them).
    pub fn install(&self, name: &str, capabilities: Option<&[&str]>) {
        let model = ollama::InstalledModel::with(name, capabilities);
        lock(&self.inner.ollama_models).insert(name.to_owned(), model);
    }

    /// Removes an installed Ollama model (as `DELETE /api/delete` does).
    pub fn uninstall(&self, name: &str) {
        lock(&self.inner.ollama_models).remove(name);
    }

    /// How many requests reached `path` (e.g. `/api/generate`), faults included.
    pub fn calls(&self, path: &str) -> u64 {
        lock(&self.inner.calls).get(path).copied().unwrap_or(0)
    }

    /// The `traceparent` the latest model calls came with, in arrival order.
    pub fn traceparents(&self) -> Vec<Option<String>> {
        lock(&self.inner.traceparents).iter().cloned().collect()
    }

    fn keep_trace(&self, traceparent: Option<String>) {
        let mut kept = lock(&self.inner.traceparents);
        if kept.len() == KEPT_TRACES {
            kept.pop_front();
        }
        kept.push_back(traceparent);
    }

    fn count(&self, path: &str) {
        *lock(&self.inner.calls).entry(path.to_owned()).or_default() += 1;
    }

    /// The most model calls this sim answered at once (since start or the last reset).
    pub fn peak_in_flight(&self) -> u64 {
        self.inner.peak_in_flight.load(Ordering::Acquire)
    }

    /// Model calls being answered now.
    pub fn in_flight(&self) -> u64 {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Starts the peak again from the calls in flight now.
    pub fn reset_peak(&self) {
        self.inner
            .peak_in_flight
            .store(self.in_flight(), Ordering::Release);
    }

    fn call_started(&self) -> InFlight {
        let now = self.inner.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.inner.peak_in_flight.fetch_max(now, Ordering::AcqRel);
        InFlight { sim: self.clone() }
    }
}

/// A model call in flight until its answer's body has been sent (or dropped).
struct InFlight {
    sim: Sim,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.sim.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How many model calls' traces a sim keeps (a benchmark makes millions).
const KEPT_TRACES: usize = 1024;

/// The paths whose requests are model calls.
const MODEL_CALLS: [&str; 7] = [
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/api/embeddings",
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/embeddings",
];

/// Counts a model call in flight from its request until the last byte of its answer, and keeps
/// the trace it came with.
async fn track_in_flight(State(sim): State<Sim>, request: Request, next: Next) -> Response {
    if !MODEL_CALLS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    sim.keep_trace(traceparent);
    let call = sim.call_started();
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _held = &call;
        chunk
    });
    Response::from_parts(parts, axum::body::Body::from_stream(body))
}

/// A streamed answer, pre-rendered: NDJSON lines for Ollama, SSE events for OpenAI.
struct Streamed {
    content_type: &'static str,
    /// Lines before the first piece of text (OpenAI's role chunk).
    opening: Vec<String>,
    /// A line per piece of text.
    pieces: Vec<String>,
    /// Lines after the text (the counts, `[DONE]`).
    closing: Vec<String>,
    /// What a stream that breaks (`fail_after_tokens`) sends instead of its closing lines.
    failure: String,
}

impl Sim {
    /// How many streamed answers the client abandoned before their end (it closed the
    /// connection): a gateway that stops a cancelled job's generation shows here.
    pub fn aborted_calls(&self) -> u64 {
        self.calls(ABORTED)
    }

    /// Serves `streamed` at the knobs' token rate, breaking it where they say.
    fn stream(&self, streamed: Streamed) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let knobs = self.knobs();
        let opening = streamed.opening.len();
        let mut lines = streamed.opening;
        let piece_count = match knobs.fail_after_tokens {
            Some(n) => (n as usize).min(streamed.pieces.len()),
            None => streamed.pieces.len(),
        };
        match knobs.fail_after_tokens {
            Some(n) => {
                lines.extend(streamed.pieces.into_iter().take(n as usize));
                lines.push(streamed.failure);
            }
            None => {
                lines.extend(streamed.pieces);
                lines.extend(streamed.closing);
            }
        }
        // The delay comes between pieces of text, as a model's token rate does: not before the
        // first piece, nor around the opening and closing lines.
        let delay = std::time::Duration::from_millis(knobs.token_delay_ms);
        let first_delayed = opening + 1;
        let last_delayed = opening + piece_count;
        let watch = EndWatch {
            sim: self.clone(),
            ended: false,
        };
        let lines = std::collections::VecDeque::from(lines);
        let stream = futures::stream::unfold(
            (lines, watch, 0usize),
            move |(mut lines, mut watch, sent)| async move {
                let line = lines.pop_front()?;
                if (first_delayed..last_delayed).contains(&sent) && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                watch.ended = lines.is_empty();
                Some((
                    Ok::<_, std::convert::Infallible>(line),
                    (lines, watch, sent + 1),
                ))
            },
        );
        let body = axum::body::Body::from_stream(stream);
        (
            [(axum::http::header::CONTENT_TYPE, streamed.content_type)],
            body,
        )
            .into_response()
    }
}

/// The key under which abandoned streams are counted.
const ABORTED: &str = "aborted";

/// Counts a streamed answer dropped before its last line.
struct EndWatch {
    sim: Sim,
    ended: bool,
}

impl Drop for EndWatch {
    fn drop(&mut self) {
        if !self.ended {
            self.sim.count(ABORTED);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn router(sim: Sim) -> Router {
    Router::new()
        .merge(ollama::router())
        .merge(openai::router())
        .merge(anthropic::router())
        .route("/_sim/knobs", get(get_knobs).put(put_knobs))
        .route("/_sim/stats", get(stats).delete(reset_stats))
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            track_in_flight,
        ))
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            only_its_kind,
        ))
        .with_state(sim)
}

/// An OpenAI-compatible server has neither Ollama's API nor the Responses API. Every request's
/// `api-version` (Azure OpenAI's) is counted as `?api-version=<v>` and its key given as Azure's
/// `api-key` header as `api-key`, for tests to see how they were called.
async fn only_its_kind(State(sim): State<Sim>, request: Request, next: Next) -> Response {
    use axum::response::IntoResponse as _;
    let query = request.uri().query().unwrap_or_default();
    if let Some(version) = query
        .split('&')
        .find_map(|p| p.strip_prefix("api-version="))
    {
        sim.count(&format!("?api-version={version}"));
    }
    if request.headers().contains_key("api-key") {
        sim.count("api-key");
    }
    let path = request.uri().path();
    let foreign =
        path.starts_with("/api/") || path == "/v1/responses" || path.starts_with("/v1/messages");
    if sim.is_compatible() && foreign {
        let missing = (
            axum::http::StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "detail": "Not Found" })),
        );
        return missing.into_response();
    }
    next.run(request).await
}

/// Serves the sim on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    sim: Sim,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    // Streams are many small writes: send each at once, as a real server does.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn get_knobs(State(sim): State<Sim>) -> Json<Knobs> {
    Json(sim.knobs())
}

async fn put_knobs(State(sim): State<Sim>, Json(knobs): Json<Knobs>) -> Json<Knobs> {
    sim.set_knobs(knobs.clone());
    Json(knobs)
}

#[derive(Serialize, Deserialize)]
struct Stats {
    calls: HashMap<String, u64>,
    in_flight: u64,
    peak_in_flight: u64,
}

async fn stats(State(sim): State<Sim>) -> Json<Stats> {
    Json(Stats {
        calls: lock(&sim.inner.calls).clone(),
        in_flight: sim.in_flight(),
        peak_in_flight: sim.peak_in_flight(),
    })
}

async fn reset_stats(State(sim): State<Sim>) -> Json<Stats> {
    sim.reset_peak();
    stats(State(sim)).await
}
