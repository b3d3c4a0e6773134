//! The OpenAI API as the sim speaks it: Responses, Chat Completions (with SSE streaming),
//! Embeddings and the model list, with OpenAI's error objects and bearer-key check.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::faults;
use crate::{OPENAI_MODELS, Sim, Streamed, lock, text};

pub fn router() -> Router<Sim> {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/responses", post(responses))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
}

fn error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    message: impl Into<String>,
) -> Response {
    let body = json!({ "error": {
        "message": message.into(), "type": kind, "param": null, "code": code,
    }});
    (status, Json(body)).into_response()
}

/// Checks the key, counts the call, applies the knobs, and checks the model exists.
async fn admit(
    sim: &Sim,
    headers: &HeaderMap,
    path: &str,
    model: Option<&str>,
) -> Result<(), Response> {
    let expected = lock(&sim.inner.openai_key).clone();
    if let Some(expected) = expected {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(expected.as_str()) {
            // Echoes the key it was given, as careless OpenAI-compatible servers do: the gateway
            // must not pass it on.
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
                format!("Incorrect API key provided: {}.", presented.unwrap_or("")),
            ));
        }
    }
    let Some(model) = model else { return Ok(()) };
    sim.count(path);
    let render = |status: StatusCode, message: &str| {
        let (kind, code) = match status {
            StatusCode::TOO_MANY_REQUESTS => ("requests", Some("rate_limit_exceeded")),
            _ => ("server_error", None),
        };
        error(status, kind, code, message)
    };
    if let Some(response) = faults::meet(&sim.knobs()).await.answer(render) {
        return Err(response);
    }
    if !OPENAI_MODELS.contains(&model) {
        return Err(error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            format!("The model `{model}` does not exist or you do not have access to it."),
        ));
    }
    Ok(())
}

async fn body<T: serde::de::DeserializeOwned>(
    request: Request,
) -> Result<(HeaderMap, T), Response> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                e.to_string(),
            )
        })?;
    let value = serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            format!("We could not parse the JSON body: {e}"),
        )
    })?;
    Ok((parts.headers, value))
}

async fn models(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    if let Err(response) = admit(&sim, &headers, "/v1/models", None).await {
        return response;
    }
    let data: Vec<Value> = OPENAI_MODELS
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 1_700_000_000, "owned_by": "provider-sim" }))
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

#[derive(Deserialize)]
struct ResponsesBody {
    model: String,
    input: Value,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    max_output_tokens: Option<u32>,
}

/// Flattens a Responses `input` (a string, or messages with string or part-list content).
fn input_text(input: &Value) -> String {
    match input {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let content = match &item["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => {
                        parts.iter().filter_map(|p| p["text"].as_str()).collect()
                    }
                    _ => String::new(),
                };
                format!("{}: {content}\n", item["role"].as_str().unwrap_or("user"))
            })
            .collect(),
        _ => String::new(),
    }
}

async fn responses(State(sim): State<Sim>, request: Request) -> Response {
    let (headers, body): (_, ResponsesBody) = match body(request).await {
        Ok(parts) => parts,
        Err(response) => return response,
    };
    if let Err(response) = admit(&sim, &headers, "/v1/responses", Some(&body.model)).await {
        return response;
    }
    let input = format!(
        "{}{}",
        body.instructions.unwrap_or_default(),
        input_text(&body.input)
    );
    let words = text::reply(&input, body.max_output_tokens, sim.knobs().reply_words);
    let (input_tokens, output_tokens) = (text::count_tokens(&input), words.len());
    let id = format!("resp_{}", &hex_id(&input));
    Json(json!({
        "id": id, "object": "response", "created_at": Utc::now().timestamp(), "status": "completed",
        "model": body.model,
        "output": [{
            "type": "message", "id": format!("msg_{}", &hex_id(&id)), "status": "completed",
            "role": "assistant",
            "content": [{ "type": "output_text", "text": words.join(" "), "annotations": [] }],
        }],
        "usage": {
            "input_tokens": input_tokens, "input_tokens_details": { "cached_tokens": 0 },
            "output_tokens": output_tokens, "output_tokens_details": { "reasoning_tokens": 0 },
            "total_tokens": input_tokens + output_tokens as i32,
        },
    }))
    .into_response()
}

#[derive(Deserialize)]
struct ChatCompletionsBody {
    model: String,
    messages: Value,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream_options: Option<Value>,
}

async fn chat_completions(State(sim): State<Sim>, request: Request) -> Response {
    let (headers, body): (_, ChatCompletionsBody) = match body(request).await {
        Ok(parts) => parts,
        Err(response) => return response,
    };
    if let Err(response) = admit(&sim, &headers, "/v1/chat/completions", Some(&body.model)).await {
        return response;
    }
    let input = input_text(&body.messages);
    let max_tokens = body.max_completion_tokens.or(body.max_tokens);
    let words = text::reply(&input, max_tokens, sim.knobs().reply_words);
    let (prompt_tokens, completion_tokens) = (text::count_tokens(&input), words.len() as i32);
    let id = format!("chatcmpl-{}", hex_id(&input));
    let created = Utc::now().timestamp();
    let usage = json!({
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    if !body.stream {
        return Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": body.model,
            "choices": [{ "index": 0, "finish_reason": "stop",
                          "message": { "role": "assistant", "content": words.join(" ") } }],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": body.model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
    };
    let event = |e: Value| format!("data: {e}\n\n");
    let pieces = text::pieces(&words)
        .into_iter()
        .map(|piece| event(chunk(json!({ "content": piece }), Value::Null)))
        .collect();
    let mut closing = vec![event(chunk(json!({}), json!("stop")))];
    if body
        .stream_options
        .is_some_and(|o| o["include_usage"] == json!(true))
    {
        closing.push(event(json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": body.model,
            "choices": [], "usage": usage,
        })));
    }
    closing.push("data: [DONE]\n\n".to_owned());
    let failure = json!({ "error": { "message": "simulated failure mid-answer",
                                     "type": "server_error", "code": null } });
    sim.stream(Streamed {
        content_type: "text/event-stream",
        opening: vec![event(chunk(
            json!({ "role": "assistant", "content": "" }),
            Value::Null,
        ))],
        pieces,
        closing,
        failure: event(failure),
    })
}

#[derive(Deserialize)]
struct EmbeddingsBody {
    model: String,
    input: Value,
    dimensions: Option<usize>,
}

async fn embeddings(State(sim): State<Sim>, request: Request) -> Response {
    let (headers, body): (_, EmbeddingsBody) = match body(request).await {
        Ok(parts) => parts,
        Err(response) => return response,
    };
    if let Err(response) = admit(&sim, &headers, "/v1/embeddings", Some(&body.model)).await {
        return response;
    }
    let texts: Vec<String> = match &body.input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    };
    if texts.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "'input' must be a string or an array of strings",
        );
    }
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, t)| json!({ "object": "embedding", "index": index, "embedding": text::embedding(t, body.dimensions) }))
        .collect();
    let prompt_tokens: i32 = texts.iter().map(|t| text::count_tokens(t)).sum();
    Json(json!({
        "object": "list", "data": data, "model": body.model,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    }))
    .into_response()
}

fn hex_id(input: &str) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(input.as_bytes())
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}
