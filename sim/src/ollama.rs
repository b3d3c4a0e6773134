//! Ollama's native API as the sim speaks it: generate and chat (streaming by default, as Ollama
//! does), embed, tags, version, pull (NDJSON progress) and delete.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::answers::{Answer, Asked, Format};
use crate::faults;
use crate::{Sim, Streamed, lock, text};

pub fn router() -> Router<Sim> {
    Router::new()
        .route(
            "/api/version",
            get(|| async { Json(json!({ "version": "0.12.0-sim" })) }),
        )
        .route("/api/tags", get(tags))
        .route("/api/show", post(show))
        .route("/api/ps", get(running))
        .route("/api/generate", post(generate))
        .route("/api/chat", post(chat))
        .route("/api/embed", post(embed))
        .route("/api/pull", post(pull))
        .route("/api/delete", delete(delete_model))
}

#[derive(Clone)]
pub struct InstalledModel {
    name: String,
    digest: String,
    modified_at: String,
    /// What `/api/show` says it can do; `None`: it says nothing, as Ollama before 0.6.4.
    capabilities: Option<Vec<String>>,
}

impl InstalledModel {
    /// A model able to do what its name says, as Ollama reports it: an embedding model embeds;
    /// others complete and call tools, and see (llava, gemma3, `-vision`, `-vl`) or think (qwen3,
    /// deepseek-r1, gpt-oss) when their family does.
    pub fn new(name: &str) -> Self {
        let has = |words: &[&str]| words.iter().any(|w| name.contains(w));
        let mut capabilities = vec!["completion", "tools"];
        if has(&["embed"]) {
            capabilities = vec!["embedding"];
        }
        if has(&["llava", "vision", "-vl", "gemma3"]) {
            capabilities.push("vision");
        }
        if has(&["qwen3", "deepseek-r1", "gpt-oss", "think"]) {
            capabilities.push("thinking");
        }
        Self::with(name, Some(&capabilities))
    }

    /// A model able to do what `capabilities` says (`None`: a host too old to say).
    pub fn with(name: &str, capabilities: Option<&[&str]>) -> Self {
        Self {
            name: name.to_owned(),
            digest: hex(&Sha256::digest(name.as_bytes())),
            modified_at: Utc::now().to_rfc3339(),
            capabilities: capabilities.map(|c| c.iter().map(|&c| c.to_owned()).collect()),
        }
    }

    /// Whether it says it cannot do `capability` (a model that says nothing is tried).
    fn lacks(&self, capability: &str) -> bool {
        self.capabilities
            .as_ref()
            .is_some_and(|c| !c.iter().any(|had| had == capability))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `llama3` means `llama3:latest`, as in Ollama.
fn full_name(model: &str) -> String {
    if model.contains(':') {
        model.to_owned()
    } else {
        format!("{model}:latest")
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Counts the call, applies the knobs, and checks the model is installed.
async fn admit(sim: &Sim, path: &str, model: &str) -> Result<(), Response> {
    sim.count(path);
    if let Some(response) = faults::meet(&sim.knobs())
        .await
        .answer(|status, message| error(status, message))
    {
        return Err(response);
    }
    if !lock(&sim.inner.ollama_models).contains_key(&full_name(model)) {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("model '{model}' not found, try pulling it first"),
        ));
    }
    Ok(())
}

/// Reads a JSON body, answering Ollama-style 400s for bad ones.
async fn body<T: serde::de::DeserializeOwned>(request: Request) -> Result<T, Response> {
    let bytes = axum::body::to_bytes(request.into_body(), 64 * 1024 * 1024)
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
}

#[derive(Deserialize)]
struct GenerateBody {
    model: String,
    prompt: String,
    #[serde(default)]
    system: Option<String>,
    stream: Option<bool>,
    #[serde(default)]
    options: Value,
    format: Option<Value>,
    #[serde(default)]
    images: Vec<String>,
    think: Option<Value>,
    logprobs: Option<bool>,
    top_logprobs: Option<usize>,
}

#[derive(Deserialize)]
struct ChatBody {
    model: String,
    messages: Vec<Message>,
    stream: Option<bool>,
    #[serde(default)]
    options: Value,
    #[serde(default)]
    tools: Vec<Value>,
    format: Option<Value>,
    think: Option<Value>,
    logprobs: Option<bool>,
    top_logprobs: Option<usize>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: String,
    /// Ollama parses arguments as an object: a string here is Ollama's 400.
    #[serde(default, rename = "tool_calls")]
    _tool_calls: Vec<HistoryCall>,
    /// Bare base64 each, as Ollama takes them.
    #[serde(default)]
    images: Vec<String>,
}

#[derive(Deserialize)]
struct HistoryCall {
    #[serde(rename = "function")]
    _function: HistoryFunction,
}

#[derive(Deserialize)]
struct HistoryFunction {
    #[serde(rename = "name")]
    _name: String,
    #[serde(rename = "arguments")]
    _arguments: Map<String, Value>,
}

impl ChatBody {
    fn asked(&self, seen: Option<String>) -> Asked {
        let last = self.messages.last();
        Asked {
            seen,
            tools: crate::answers::offered(&self.tools),
            choice: None,
            parallel: true,
            last_role: last.map(|m| m.role.clone()).unwrap_or_default(),
            last_text: last.map(|m| m.content.clone()).unwrap_or_default(),
            format: format(self.format.as_ref()),
        }
    }
}

/// Ollama's `format`: `"json"` or a schema.
fn format(given: Option<&Value>) -> Format {
    match given {
        Some(Value::String(f)) if f == "json" => Format::JsonObject,
        Some(schema @ Value::Object(_)) => Format::Schema(schema.clone()),
        _ => Format::Text,
    }
}

async fn tags(State(sim): State<Sim>) -> Json<Value> {
    let models: Vec<Value> = lock(&sim.inner.ollama_models)
        .values()
        .map(|m| {
            json!({
                "name": m.name, "model": m.name, "modified_at": m.modified_at,
                "size": 4_661_224_676_u64, "digest": m.digest,
                "details": { "format": "gguf", "family": "llama", "parameter_size": "8B",
                             "quantization_level": "Q4_0" },
            })
        })
        .collect();
    Json(json!({ "models": models }))
}

/// Every installed model counts as loaded, for five minutes more.
/// `/api/show`: the model's details and, unless it says nothing, its capabilities.
async fn show(State(sim): State<Sim>, request: Request) -> Response {
    let body: ModelBody = match body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let name = full_name(&body.model);
    let Some(model) = lock(&sim.inner.ollama_models).get(&name).cloned() else {
        let message = format!("model '{}' not found", body.model);
        return error(StatusCode::NOT_FOUND, message);
    };
    let mut shown = json!({
        "modelfile": "", "parameters": "", "template": "{{ .Prompt }}",
        "details": { "format": "gguf", "family": "llama", "parameter_size": "8B",
                     "quantization_level": "Q4_0" },
        "model_info": { "general.architecture": "llama", "llama.context_length": 8192 },
        "modified_at": model.modified_at,
    });
    if let Some(capabilities) = &model.capabilities {
        shown["capabilities"] = json!(capabilities);
    }
    Json(shown).into_response()
}

/// What a request asks of a model beyond completion.
#[derive(Clone, Copy)]
struct Needs<'a> {
    images: bool,
    tools: bool,
    think: Option<&'a Value>,
}

/// Ollama's 400 for a request a model cannot serve (images to a model without vision, tools to
/// one without tools, `think` to one that cannot), if this is one.
fn unable(sim: &Sim, model: &str, needs: Needs<'_>) -> Option<Response> {
    let installed = lock(&sim.inner.ollama_models)
        .get(&full_name(model))
        .cloned()?;
    let thinks = crate::reasoning::ollama_asked(needs.think);
    let (_, capability) = [
        (needs.images, "vision"),
        (needs.tools, "tools"),
        (thinks, "thinking"),
    ]
    .into_iter()
    .find(|&(asked, capability)| asked && installed.lacks(capability))?;
    let message = format!("\"{model}\" does not support {capability}");
    Some(error(StatusCode::BAD_REQUEST, message))
}

/// What a model thinks before answering `input`: nothing when it cannot think or was told not
/// to; otherwise it thinks, at the level asked or by default.
fn thinking(sim: &Sim, model: &str, think: Option<&Value>, input: &str) -> Option<String> {
    let installed = lock(&sim.inner.ollama_models)
        .get(&full_name(model))
        .cloned()?;
    if installed.lacks("thinking") || installed.capabilities.is_none() {
        return None;
    }
    let level = crate::reasoning::ollama_level(think)?;
    Some(crate::reasoning::thought(input, &level))
}

/// How generate or chat writes a piece of text, and a piece of thinking.
struct Shape {
    text: fn(&str) -> Value,
    thinking: fn(&str) -> Value,
}

const GENERATE: Shape = Shape {
    text: |chunk| json!({ "response": chunk }),
    thinking: |chunk| json!({ "response": "", "thinking": chunk }),
};

const CHAT: Shape = Shape {
    text: |chunk| json!({ "message": { "role": "assistant", "content": chunk } }),
    thinking: |chunk| json!({ "message": { "role": "assistant", "content": "", "thinking": chunk } }),
};

/// What the model answers, what it thought first, and how many alternatives each token's log
/// probabilities come with (`None`: not asked for).
struct Reply {
    answered: Option<Answer>,
    thinking: Option<String>,
    logprobs: Option<usize>,
}

/// The log probabilities a request asks for: `logprobs: true`, with `top_logprobs` alternatives.
fn asked_logprobs(logprobs: Option<bool>, top: Option<usize>) -> Option<usize> {
    (logprobs == Some(true)).then(|| top.unwrap_or(0))
}

async fn running(State(sim): State<Sim>) -> Json<Value> {
    let expires_at = (Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
    let models: Vec<Value> = lock(&sim.inner.ollama_models)
        .values()
        .map(|m| {
            json!({ "name": m.name, "model": m.name, "size": 4_661_224_676_u64,
                    "digest": m.digest, "expires_at": expires_at, "size_vram": 4_661_224_676_u64,
                    "details": { "format": "gguf", "family": "llama" } })
        })
        .collect();
    Json(json!({ "models": models }))
}

async fn generate(State(sim): State<Sim>, request: Request) -> Response {
    let body: GenerateBody = match body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Err(response) = admit(&sim, "/api/generate", &body.model).await {
        return response;
    }
    let shown = match crate::images::bare(&body.images) {
        Ok(shown) => shown,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let needs = Needs {
        images: !shown.is_empty(),
        tools: false,
        think: body.think.as_ref(),
    };
    if let Some(refused) = unable(&sim, &body.model, needs) {
        return refused;
    }
    let input = format!("{}{}", body.system.unwrap_or_default(), body.prompt);
    let asked = Asked {
        format: format(body.format.as_ref()),
        seen: crate::images::seen(&shown),
        ..Asked::default()
    };
    let reply = Reply {
        answered: Answer::to(&sim, &asked, &input),
        thinking: thinking(&sim, &body.model, body.think.as_ref(), &input),
        logprobs: asked_logprobs(body.logprobs, body.top_logprobs),
    };
    answer(
        &sim,
        &body.model,
        &input,
        &body.options,
        body.stream,
        reply,
        &GENERATE,
    )
}

async fn chat(State(sim): State<Sim>, request: Request) -> Response {
    let body: ChatBody = match body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Err(response) = admit(&sim, "/api/chat", &body.model).await {
        return response;
    }
    let given: Vec<String> = body
        .messages
        .iter()
        .flat_map(|m| m.images.iter().cloned())
        .collect();
    let shown = match crate::images::bare(&given) {
        Ok(shown) => shown,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let needs = Needs {
        images: !shown.is_empty(),
        tools: !body.tools.is_empty(),
        think: body.think.as_ref(),
    };
    if let Some(refused) = unable(&sim, &body.model, needs) {
        return refused;
    }
    let input: String = body
        .messages
        .iter()
        .map(|m| format!("{}: {}\n", m.role, m.content))
        .collect();
    let reply = Reply {
        answered: Answer::to(&sim, &body.asked(crate::images::seen(&shown)), &input),
        thinking: thinking(&sim, &body.model, body.think.as_ref(), &input),
        logprobs: asked_logprobs(body.logprobs, body.top_logprobs),
    };
    answer(
        &sim,
        &body.model,
        &input,
        &body.options,
        body.stream,
        reply,
        &CHAT,
    )
}

fn max_tokens(options: &Value) -> Option<u32> {
    options["num_predict"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
}

/// One JSON answer, or (Ollama's default) NDJSON: a chunk a word of thinking, then a chunk a
/// word (or a few characters of JSON), or a chunk holding the whole tool calls, then a final
/// `done` line with the counts (thinking among them). `shape` writes a piece as generate or chat
/// does. Tool calls carry no id, as before Ollama 0.12.10.
fn answer(
    sim: &Sim,
    model: &str,
    input: &str,
    options: &Value,
    stream: Option<bool>,
    reply: Reply,
    shape: &Shape,
) -> Response {
    let content = shape.text;
    let limit = max_tokens(options);
    // A seed given picks among the answers, as sampling with it would.
    let seeded = match options.get("seed") {
        Some(seed) => format!("{input}\u{0}{seed}"),
        None => input.to_owned(),
    };
    let (pieces, whole, calls, eval_count) = match reply.answered {
        None => {
            let words = text::reply(&seeded, limit, sim.knobs().reply_words);
            (text::pieces(&words), words.join(" "), None, words.len())
        }
        Some(Answer::Text(text)) => {
            let tokens = text::count_tokens(&text) as usize;
            (crate::answers::pieces_of(&text), text, None, tokens)
        }
        Some(Answer::Calls(calls)) => {
            let calls: Vec<Value> = calls
                .into_iter()
                .enumerate()
                .map(|(index, call)| {
                    json!({ "function": { "index": index, "name": call.name,
                                          "arguments": call.arguments } })
                })
                .collect();
            let tokens = text::count_tokens(&json!(calls).to_string()) as usize;
            let message = json!({ "message": { "role": "assistant", "content": "",
                                               "tool_calls": calls } });
            (Vec::new(), String::new(), Some(message), tokens)
        }
    };
    let thought_tokens = reply.thinking.as_deref().map_or(0, text::count_tokens);
    let eval_count = eval_count + thought_tokens as usize;
    let prompt_tokens = text::count_tokens(input);
    let stream = stream.unwrap_or(true);
    let created_at = Utc::now().to_rfc3339();
    let calls_made = calls.is_some();
    let mut last = json!({
        "model": model, "created_at": created_at, "done": true,
        "done_reason": if calls_made { "stop" } else { text::stop_reason(eval_count, limit) },
        "total_duration": 1_000_000, "load_duration": 100_000,
        "prompt_eval_count": prompt_tokens, "prompt_eval_duration": 200_000,
        "eval_count": eval_count, "eval_duration": 700_000,
    });
    if sim.knobs().prompt_cached {
        // Ollama leaves the prompt count out when the whole prompt came from its cache.
        if let Some(last) = last.as_object_mut() {
            last.remove("prompt_eval_count");
        }
    }
    let logprobs = reply.logprobs.map(|top| text::logprobs(&pieces, top));
    if !stream {
        if let Some(logprobs) = &logprobs {
            last["logprobs"] = json!(logprobs);
        }
        merge(&mut last, calls.unwrap_or_else(|| content(&whole)));
        if let Some(thought) = &reply.thinking {
            let thought = (shape.thinking)(thought);
            match last.get_mut("message") {
                Some(message) => message["thinking"] = thought["message"]["thinking"].clone(),
                None => last["thinking"] = thought["thinking"].clone(),
            }
        }
        return Json(last).into_response();
    }
    let line = |extra: Value| {
        let mut chunk = json!({ "model": model, "created_at": created_at, "done": false });
        merge(&mut chunk, extra);
        format!("{chunk}\n")
    };
    let thought = reply.thinking.as_deref().map(crate::answers::pieces_of);
    let mut pieces: Vec<String> = thought
        .into_iter()
        .flatten()
        .map(|piece| line((shape.thinking)(&piece)))
        .chain(pieces.iter().enumerate().map(|(i, piece)| {
            let mut chunk = content(piece);
            // Each line carries its own tokens' log probabilities.
            if let Some(logprobs) = &logprobs {
                chunk["logprobs"] = json!([logprobs[i]]);
            }
            line(chunk)
        }))
        .collect();
    pieces.extend(calls.map(line));
    merge(&mut last, content(""));
    sim.stream(Streamed {
        content_type: NDJSON,
        opening: Vec::new(),
        pieces,
        closing: vec![format!("{last}\n")],
        failure: format!("{}\n", json!({ "error": "simulated failure mid-answer" })),
    })
}

fn merge(target: &mut Value, extra: Value) {
    if let (Some(target), Value::Object(extra)) = (target.as_object_mut(), extra) {
        target.extend(extra);
    }
}

const NDJSON: &str = "application/x-ndjson";

fn ndjson(lines: Vec<String>) -> Response {
    use axum::response::IntoResponse as _;
    ([(axum::http::header::CONTENT_TYPE, NDJSON)], lines.concat()).into_response()
}

#[derive(Deserialize)]
struct EmbedBody {
    model: String,
    input: Input,
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

async fn embed(State(sim): State<Sim>, request: Request) -> Response {
    let body: EmbedBody = match body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Err(response) = admit(&sim, "/api/embed", &body.model).await {
        return response;
    }
    let texts = match body.input {
        Input::One(text) => vec![text],
        Input::Many(texts) => texts,
    };
    let embeddings: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| text::embedding(t, body.dimensions))
        .collect();
    let prompt_eval_count: i32 = texts.iter().map(|t| text::count_tokens(t)).sum();
    Json(json!({
        "model": body.model, "embeddings": embeddings,
        "total_duration": 500_000, "load_duration": 50_000, "prompt_eval_count": prompt_eval_count,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct ModelBody {
    model: String,
    stream: Option<bool>,
}

/// Pretends to download: progress lines, then the model is installed.
async fn pull(State(sim): State<Sim>, request: Request) -> Response {
    let body: ModelBody = match body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    sim.count("/api/pull");
    let name = full_name(&body.model);
    let model = InstalledModel::new(&name);
    let digest = format!("sha256:{}", model.digest);
    lock(&sim.inner.ollama_models).insert(name, model);
    if body.stream == Some(false) {
        return Json(json!({ "status": "success" })).into_response();
    }
    let total: u64 = 4_000_000;
    let mut lines = vec![json!({ "status": "pulling manifest" })];
    lines.extend((0..=4).map(|i| {
        json!({ "status": format!("pulling {}", &digest[7..19]), "digest": digest,
                "total": total, "completed": total / 4 * i })
    }));
    lines.extend(
        ["verifying sha256 digest", "writing manifest", "success"].map(|s| json!({ "status": s })),
    );
    ndjson(lines.into_iter().map(|l| format!("{l}\n")).collect())
}

async fn delete_model(State(sim): State<Sim>, request: Request) -> Response {
    let body: ModelBody = match body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    sim.count("/api/delete");
    match lock(&sim.inner.ollama_models).remove(&full_name(&body.model)) {
        Some(_) => StatusCode::OK.into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("model '{}' not found", body.model),
        ),
    }
}
