//! Anthropic's Messages API as the sim speaks it, so the gateway's Anthropic upstream and surface
//! are tested against the shapes Anthropic documents: `POST /v1/messages` (streamed or not) with a
//! system prompt as a string or blocks, text, image, `tool_use` and `tool_result` blocks, tools
//! with `input_schema`, `tool_choice`, `thinking` (a budget of at least 1,024 below `max_tokens`),
//! `output_config.format`; `POST /v1/messages/count_tokens`; Anthropic's error objects and key
//! check (`x-api-key`, or a bearer token). A prompt marked with `cache_control` and seen before is
//! reported read from the cache (`cache_read_input_tokens`), the first time written to it; what
//! reaches it is counted for tests (`cache_control`, `anthropic-beta`, `context_management`).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::answers::{self, Answer, Asked, Format};
use crate::{Sim, Streamed, faults, lock, text};

/// The models the sim serves on its Messages API.
pub const ANTHROPIC_MODELS: [&str; 3] =
    ["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6"];

pub fn router() -> Router<Sim> {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
}

/// Anthropic's error body for `status`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    let body = json!({ "type": "error", "error": { "type": kind, "message": message.into() },
                       "request_id": "req_sim" });
    (status, Json(body)).into_response()
}

/// A request refused: its status and message, answered in Anthropic's shape.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

fn invalid(message: impl Into<String>) -> Refused {
    Refused(StatusCode::BAD_REQUEST, message.into())
}

/// The request's headers and body, or Anthropic's 400.
async fn read(request: Request) -> Result<(HeaderMap, Value), Refused> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .map_err(|e| invalid(e.to_string()))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("The request body is not valid JSON: {e}")))?;
    Ok((parts.headers, value))
}

/// Checks the key (`x-api-key` or a bearer token), notes what reached it, and checks the model.
fn admit(sim: &Sim, headers: &HeaderMap, body: &Value) -> Result<String, Refused> {
    let expected = lock(&sim.inner.openai_key).clone();
    if let Some(expected) = expected {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let bearer = header(header::AUTHORIZATION.as_str()).and_then(|v| v.strip_prefix("Bearer "));
        if header("x-api-key").or(bearer) != Some(expected.as_str()) {
            return Err(Refused(
                StatusCode::UNAUTHORIZED,
                "invalid x-api-key".into(),
            ));
        }
    }
    if headers.contains_key("anthropic-beta") {
        sim.count("anthropic-beta");
    }
    if body.get("context_management").is_some() {
        sim.count("context_management");
    }
    let model = body["model"].as_str().unwrap_or_default();
    if !ANTHROPIC_MODELS.contains(&model) {
        return Err(Refused(StatusCode::NOT_FOUND, format!("model: {model}")));
    }
    Ok(model.to_owned())
}

/// The text of a block list or string (`system`, a message's `content`, a tool result's).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|block| match block["type"].as_str() {
                Some("text") => block["text"].as_str().map(str::to_owned),
                Some("tool_result") => Some(text_of(&block["content"])),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn blocks(content: &Value) -> impl Iterator<Item = &Value> {
    content.as_array().into_iter().flatten()
}

/// The prompt as one text (what the answer and the counts are made from).
fn input_of(body: &Value) -> String {
    let system = text_of(&body["system"]);
    let turns = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|message| {
            format!(
                "{}: {}\n",
                message["role"].as_str().unwrap_or_default(),
                text_of(&message["content"])
            )
        });
    std::iter::once(system).chain(turns).collect()
}

/// Whether anything in the request asks for prompt caching.
fn marked_for_cache(body: &Value) -> bool {
    let marked = |blocks: &Value| {
        blocks
            .as_array()
            .into_iter()
            .flatten()
            .any(|b| b.get("cache_control").is_some())
    };
    body.get("cache_control").is_some()
        || marked(&body["system"])
        || marked(&body["tools"])
        || body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| marked(&m["content"]))
}

/// The images' bytes (base64 sources; a URL source is refused, as a server that cannot fetch).
fn images(body: &Value) -> Result<Vec<Vec<u8>>, Refused> {
    let mut given = Vec::new();
    for message in body["messages"].as_array().into_iter().flatten() {
        for block in blocks(&message["content"]).filter(|b| b["type"] == "image") {
            match block["source"]["type"].as_str() {
                Some("base64") => given.push(
                    block["source"]["data"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                ),
                _ => return Err(invalid("the sim takes only base64 image sources")),
            }
        }
    }
    crate::images::bare(&given).map_err(invalid)
}

/// The request as far as the answer depends on it.
fn asked(body: &Value, seen: Option<String>) -> Asked {
    let tools = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|tool| {
            Some((
                tool["name"].as_str()?.to_owned(),
                tool["input_schema"].clone(),
            ))
        })
        .collect();
    let choice = &body["tool_choice"];
    let choice = match choice["type"].as_str() {
        Some("none") => Some(String::new()),
        Some("tool") => choice["name"].as_str().map(str::to_owned),
        _ => None,
    };
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    let answers_a_tool = blocks(&last["content"]).any(|b| b["type"] == "tool_result");
    let format = match &body["output_config"]["format"] {
        format if format["type"] == "json_schema" => Format::Schema(format["schema"].clone()),
        _ => Format::Text,
    };
    Asked {
        tools,
        choice,
        parallel: body["tool_choice"]["disable_parallel_tool_use"] != json!(true),
        last_role: if answers_a_tool {
            "tool".into()
        } else {
            last["role"].as_str().unwrap_or_default().into()
        },
        last_text: text_of(&last["content"]),
        format,
        seen,
    }
}

/// What the model thinks first, when `thinking` asks for it; an error when its budget is out of
/// Anthropic's bounds.
fn thinking(body: &Value, input: &str) -> Result<Option<String>, Refused> {
    let thinking = &body["thinking"];
    match thinking["type"].as_str() {
        Some("enabled") => {
            let budget = thinking["budget_tokens"].as_u64().unwrap_or(0);
            let max_tokens = body["max_tokens"].as_u64().unwrap_or(0);
            if budget < 1024 || budget >= max_tokens {
                return Err(invalid(
                    "thinking.budget_tokens: must be at least 1024 and less than max_tokens",
                ));
            }
            Ok(Some(crate::reasoning::thought(input, "high")))
        }
        Some("adaptive") => Ok(Some(crate::reasoning::thought(input, "medium"))),
        _ => Ok(None),
    }
}

/// The signature the sim gives a thinking block it wrote.
fn signature(thought: &str) -> String {
    format!("sim-signature-{}", text::hex_id(thought))
}

/// One block of the answer.
enum Block {
    Thinking(String),
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

impl Block {
    fn whole(&self) -> Value {
        match self {
            Self::Thinking(thought) => {
                json!({ "type": "thinking", "thinking": thought, "signature": signature(thought) })
            }
            Self::Text(text) => json!({ "type": "text", "text": text }),
            Self::ToolUse { id, name, input } => {
                json!({ "type": "tool_use", "id": id, "name": name, "input": input })
            }
        }
    }

    /// Its `content_block_start`, deltas and `content_block_stop` at `index`.
    fn events(&self, index: usize) -> (Value, Vec<Value>) {
        let delta =
            |delta: Value| json!({ "type": "content_block_delta", "index": index, "delta": delta });
        let (start, deltas) = match self {
            Self::Thinking(thought) => {
                let mut deltas: Vec<Value> = answers::pieces_of(thought)
                    .into_iter()
                    .map(|piece| delta(json!({ "type": "thinking_delta", "thinking": piece })))
                    .collect();
                deltas.push(delta(
                    json!({ "type": "signature_delta", "signature": signature(thought) }),
                ));
                (
                    json!({ "type": "thinking", "thinking": "", "signature": "" }),
                    deltas,
                )
            }
            Self::Text(text) => {
                let deltas = answers::pieces_of(text)
                    .into_iter()
                    .map(|piece| delta(json!({ "type": "text_delta", "text": piece })))
                    .collect();
                (json!({ "type": "text", "text": "" }), deltas)
            }
            Self::ToolUse { id, name, input } => {
                let deltas = answers::pieces_of(&input.to_string())
                    .into_iter()
                    .map(|piece| {
                        delta(json!({ "type": "input_json_delta", "partial_json": piece }))
                    })
                    .collect();
                (
                    json!({ "type": "tool_use", "id": id, "name": name, "input": {} }),
                    deltas,
                )
            }
        };
        let start =
            json!({ "type": "content_block_start", "index": index, "content_block": start });
        (start, deltas)
    }
}

fn sse(event: &Value) -> String {
    let name = event["type"].as_str().unwrap_or("message");
    format!("event: {name}\ndata: {event}\n\n")
}

async fn messages(State(sim): State<Sim>, request: Request) -> Response {
    answer(&sim, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The answer to a `POST /v1/messages`, whole or streamed.
async fn answer(sim: &Sim, request: Request) -> Result<Response, Refused> {
    let (headers, body) = read(request).await?;
    let model = admit(sim, &headers, &body)?;
    sim.count("/v1/messages");
    if let Some(response) = faults::meet(&sim.knobs()).await.answer(|s, m| error(s, m)) {
        return Ok(response);
    }
    let Some(max_tokens) = body["max_tokens"].as_u64() else {
        return Err(invalid("max_tokens: Field required"));
    };
    let shown = images(&body)?;
    let input = input_of(&body);
    let thought = thinking(&body, &input)?;
    let asked = asked(&body, crate::images::seen(&shown));
    let (mut content, stop_reason) = blocks_of(sim, &asked, &input, max_tokens);
    if let Some(thought) = thought {
        content.insert(0, Block::Thinking(thought));
    }
    let usage = usage(sim, &body, &input, &content);
    let message = json!({ "id": format!("msg_{}", text::hex_id(&input)), "type": "message",
                          "role": "assistant", "model": model, "stop_sequence": null });
    if body["stream"] == json!(true) {
        return Ok(streamed(sim, message, &content, stop_reason, usage));
    }
    let mut message = message;
    message["content"] = content.iter().map(Block::whole).collect();
    message["stop_reason"] = json!(stop_reason);
    message["usage"] = usage;
    Ok(Json(message).into_response())
}

/// The answer's blocks and why it stopped: the sim's words (cut at `max_tokens`), a text, or
/// tool calls.
fn blocks_of(sim: &Sim, asked: &Asked, input: &str, max_tokens: u64) -> (Vec<Block>, &'static str) {
    let limit = u32::try_from(max_tokens).ok();
    match Answer::to(sim, asked, input) {
        None => {
            let words = text::reply(input, limit, sim.knobs().reply_words);
            let stop = match text::stop_reason(words.len(), limit) {
                "length" => "max_tokens",
                _ => "end_turn",
            };
            (vec![Block::Text(words.join(" "))], stop)
        }
        Some(Answer::Text(text)) => (vec![Block::Text(text)], "end_turn"),
        Some(Answer::Calls(calls)) => {
            let uses = calls
                .into_iter()
                .enumerate()
                .map(|(i, call)| Block::ToolUse {
                    id: answers::call_id(input, i).replace("call_", "toolu_"),
                    name: call.name,
                    input: call.arguments,
                });
            (uses.collect(), "tool_use")
        }
    }
}

/// The answer's usage: a prompt marked for caching is written to the cache the first time and
/// read from it after.
fn usage(sim: &Sim, body: &Value, input: &str, content: &[Block]) -> Value {
    let input_tokens = text::count_tokens(input);
    let marked = marked_for_cache(body);
    if marked {
        sim.count("cache_control");
    }
    let (read, created) = match (marked, marked && sim.cached(input)) {
        (true, true) => (input_tokens, 0),
        (true, false) => (0, input_tokens),
        (false, _) => (0, 0),
    };
    let written: String = content.iter().map(|b| b.whole().to_string()).collect();
    json!({ "input_tokens": input_tokens - read - created,
            "cache_creation_input_tokens": created, "cache_read_input_tokens": read,
            "output_tokens": text::count_tokens(&written), "service_tier": "standard" })
}

/// The answer as Anthropic streams it: `message_start`, a `ping`, each block's start, deltas and
/// stop, `message_delta` and `message_stop` (an `error` event where the knobs break it).
fn streamed(
    sim: &Sim,
    mut message: Value,
    content: &[Block],
    stop_reason: &str,
    usage: Value,
) -> Response {
    let output_tokens = usage["output_tokens"].clone();
    message["content"] = json!([]);
    message["stop_reason"] = Value::Null;
    message["usage"] = usage;
    message["usage"]["output_tokens"] = json!(1);
    let opening = vec![
        sse(&json!({ "type": "message_start", "message": message })),
        sse(&json!({ "type": "ping" })),
    ];
    let mut pieces = Vec::new();
    for (index, block) in content.iter().enumerate() {
        let (start, deltas) = block.events(index);
        pieces.push(sse(&start));
        pieces.extend(deltas.iter().map(sse));
        pieces.push(sse(
            &json!({ "type": "content_block_stop", "index": index }),
        ));
    }
    let closing = vec![
        sse(&json!({ "type": "message_delta",
                     "delta": { "stop_reason": stop_reason, "stop_sequence": null },
                     "usage": { "output_tokens": output_tokens } })),
        sse(&json!({ "type": "message_stop" })),
    ];
    let failure = json!({ "type": "error",
                          "error": { "type": "overloaded_error", "message": "Overloaded" } });
    sim.stream(Streamed {
        content_type: "text/event-stream",
        opening,
        pieces,
        closing,
        failure: sse(&failure),
    })
}

async fn count_tokens(State(sim): State<Sim>, request: Request) -> Response {
    let counted = async {
        let (headers, body) = read(request).await?;
        admit(&sim, &headers, &body)?;
        sim.count("/v1/messages/count_tokens");
        let tokens = text::count_tokens(&input_of(&body));
        Ok::<_, Refused>(Json(json!({ "input_tokens": tokens })).into_response())
    };
    counted.await.unwrap_or_else(IntoResponse::into_response)
}
