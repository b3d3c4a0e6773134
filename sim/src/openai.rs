//! The OpenAI API as the sim speaks it: Responses, Chat Completions (with SSE streaming),
//! Embeddings and the model list, with OpenAI's error objects and bearer-key check. A prompt seen
//! before is reported read from the cache (`cached_tokens`), as OpenAI's prompt caching does.
//! Chat Completions gives `n` choices and log probabilities when asked.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::answers::{self, Answer, Asked, Format};
use crate::faults;
use crate::{Sim, Streamed, lock, text};

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

/// An older OpenAI-compatible server's 400 for a field it does not know.
fn unknown_field(param: &str) -> Response {
    let body = json!({ "error": {
        "message": format!("{param}: Extra inputs are not permitted"),
        "type": "BadRequestError", "param": param, "code": 400,
    }});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// OpenAI's 400 for a reasoning parameter sent to a model that does not reason.
fn unsupported(param: &str) -> Response {
    let body = json!({ "error": {
        "message": format!("Unsupported parameter: '{param}' is not supported with this model."),
        "type": "invalid_request_error", "param": param, "code": "unsupported_parameter",
    }});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// What a reasoning model thinks before answering `input` at the effort asked (`None`: nothing,
/// it does not reason or was told not to); a model that does not reason refuses an effort given
/// (`Err`, for [`unsupported`]).
fn reasoned(model: &str, effort: Option<&str>, input: &str) -> Result<Option<String>, ()> {
    if !crate::reasoning::openai_reasons(model) {
        return match effort {
            Some(_) => Err(()),
            None => Ok(None),
        };
    }
    Ok(
        crate::reasoning::openai_level(effort)
            .map(|level| crate::reasoning::thought(input, &level)),
    )
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
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Azure OpenAI's header, taken as well.
        let azure = headers.get("api-key").and_then(|v| v.to_str().ok());
        let presented = bearer.or(azure);
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
    if !sim.openai_models().contains(&model) {
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
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
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
    let data: Vec<Value> = sim
        .openai_models()
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
    #[serde(default)]
    text: Value,
    #[serde(default)]
    reasoning: Value,
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
    let effort = body.reasoning["effort"].as_str();
    let Ok(thought) = reasoned(&body.model, effort, &input) else {
        return unsupported("reasoning.effort");
    };
    let reasoning_tokens = thought.as_deref().map_or(0, text::count_tokens);
    let asked = Asked {
        format: format(&body.text["format"], &body.text["format"]),
        ..Asked::default()
    };
    let written = match Answer::to(&sim, &asked, &input) {
        Some(Answer::Text(text)) => text,
        _ => text::reply(&input, body.max_output_tokens, sim.knobs().reply_words).join(" "),
    };
    let input_tokens = text::count_tokens(&input);
    let cached_tokens = if sim.cached(&input) { input_tokens } else { 0 };
    let output_tokens = text::count_tokens(&written) + reasoning_tokens;
    let id = format!("resp_{}", &text::hex_id(&input));
    let cut = text::stop_reason(written.split(' ').count(), body.max_output_tokens) == "length";
    let (status, incomplete) = if cut {
        ("incomplete", json!({ "reason": "max_output_tokens" }))
    } else {
        ("completed", Value::Null)
    };
    let mut output = Vec::new();
    if thought.is_some() {
        // OpenAI gives no summary unless asked for one: the item says only that it reasoned.
        output.push(
            json!({ "type": "reasoning", "id": format!("rs_{}", &text::hex_id(&id)),
                            "summary": [] }),
        );
    }
    output.push(json!({
        "type": "message", "id": format!("msg_{}", &text::hex_id(&id)), "status": "completed",
        "role": "assistant",
        "content": [{ "type": "output_text", "text": written, "annotations": [] }],
    }));
    Json(json!({
        "id": id, "object": "response", "created_at": Utc::now().timestamp(), "status": status,
        "incomplete_details": incomplete, "model": body.model, "output": output,
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": { "cached_tokens": cached_tokens },
            "output_tokens": output_tokens,
            "output_tokens_details": { "reasoning_tokens": reasoning_tokens },
            "total_tokens": input_tokens + output_tokens,
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
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    tool_choice: Value,
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    response_format: Value,
    reasoning_effort: Option<String>,
    n: Option<usize>,
    logprobs: Option<bool>,
    top_logprobs: Option<usize>,
}

impl ChatCompletionsBody {
    fn asked(&self, seen: Option<String>) -> Asked {
        let last = self.messages.as_array().and_then(|m| m.last());
        let choice = match &self.tool_choice {
            Value::String(mode) if mode == "none" => Some(String::new()),
            Value::Object(named) => named
                .get("function")
                .and_then(|f| f["name"].as_str())
                .map(str::to_owned),
            _ => None,
        };
        Asked {
            tools: crate::answers::offered(&self.tools),
            choice,
            parallel: self.parallel_tool_calls != Some(false),
            last_role: last
                .and_then(|m| m["role"].as_str())
                .unwrap_or_default()
                .to_owned(),
            last_text: last.map(|m| input_text(&json!([m]))).unwrap_or_default(),
            format: format(&self.response_format, &self.response_format["json_schema"]),
            seen,
        }
    }
}

/// `response_format` (the schema nested in `json_schema`) or `text.format` (flat).
fn format(given: &Value, schema_holder: &Value) -> Format {
    match given["type"].as_str() {
        Some("json_object") => Format::JsonObject,
        Some("json_schema") => Format::Schema(schema_holder["schema"].clone()),
        _ => Format::Text,
    }
}

/// Checks a history's tool calls as OpenAI does: arguments are a JSON string.
fn string_arguments(messages: &Value) -> Result<(), String> {
    for message in messages.as_array().into_iter().flatten() {
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            if !call["function"]["arguments"].is_string() {
                return Err(
                    "Invalid type for 'messages.tool_calls.function.arguments': \
                            expected a string"
                        .to_owned(),
                );
            }
        }
    }
    Ok(())
}

async fn chat_completions(State(sim): State<Sim>, request: Request) -> Response {
    let (headers, body): (_, ChatCompletionsBody) = match body(request).await {
        Ok(parts) => parts,
        Err(response) => return response,
    };
    if let Err(response) = admit(&sim, &headers, "/v1/chat/completions", Some(&body.model)).await {
        return response;
    }
    if sim.is_old() {
        let unknown = [
            ("stream_options", body.stream_options.is_some()),
            (
                "max_completion_tokens",
                body.max_completion_tokens.is_some(),
            ),
        ];
        if let Some((param, _)) = unknown.into_iter().find(|(_, given)| *given) {
            return unknown_field(param);
        }
    }
    if sim.refuses_tools() && !body.tools.is_empty() {
        sim.count("tools_refused");
        // vLLM's error, written at the top level.
        let refusal = json!({
            "object": "error", "type": "BadRequestError", "param": null, "code": 400,
            "message": "\"auto\" tool choice requires --enable-auto-tool-choice and \
                        --tool-call-parser to be set",
        });
        return (StatusCode::BAD_REQUEST, Json(refusal)).into_response();
    }
    if let Err(message) = string_arguments(&body.messages) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            message,
        );
    }
    let shown = match crate::images::in_parts(&body.messages) {
        Ok(shown) => shown,
        Err(message) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                message,
            );
        }
    };
    let input = input_text(&body.messages);
    let effort = body.reasoning_effort.as_deref();
    let Ok(thought) = reasoned(&body.model, effort, &input) else {
        return unsupported("reasoning_effort");
    };
    let reasoning_tokens = thought.as_deref().map_or(0, text::count_tokens);
    // Only an OpenAI-compatible reasoner writes its reasoning out; OpenAI's own only counts it.
    let written_thought =
        thought.filter(|_| crate::reasoning::openai_writes_reasoning(&body.model));
    let max_tokens = body.max_completion_tokens.or(body.max_tokens);
    let asked = body.asked(crate::images::seen(&shown));
    let answered = Answer::to(&sim, &asked, &input);
    let plain = answered.is_none();
    let (pieces, written, calls, ended) = match answered {
        None => {
            let words = text::reply(&input, max_tokens, sim.knobs().reply_words);
            let ended = text::stop_reason(words.len(), max_tokens);
            (text::pieces(&words), words.join(" "), Vec::new(), ended)
        }
        Some(Answer::Text(text)) => (answers::pieces_of(&text), text, Vec::new(), "stop"),
        Some(Answer::Calls(calls)) => (Vec::new(), String::new(), calls, "tool_calls"),
    };
    // The further choices asked for (`n`): a plain answer samples another each time.
    let others: Vec<(Vec<String>, String, &str)> = (1..body.n.unwrap_or(1))
        .map(|i| match plain {
            true => {
                let words = text::reply(&format!("{input}#{i}"), max_tokens, None);
                let ended = text::stop_reason(words.len(), max_tokens);
                (text::pieces(&words), words.join(" "), ended)
            }
            false => (pieces.clone(), written.clone(), ended),
        })
        .collect();
    let top = (body.logprobs == Some(true)).then(|| body.top_logprobs.unwrap_or(0));
    let logprobs_of = |pieces: &[String]| {
        top.map_or(
            Value::Null,
            |top| json!({ "content": text::logprobs(pieces, top), "refusal": null }),
        )
    };
    let calls: Vec<(String, String, String)> = calls
        .into_iter()
        .enumerate()
        .map(|(i, call)| {
            (
                answers::call_id(&input, i),
                call.name,
                call.arguments.to_string(),
            )
        })
        .collect();
    let finish = ended;
    let spent: String = calls
        .iter()
        .map(|(_, _, arguments)| arguments.as_str())
        .collect();
    let others_written: String = others.iter().map(|(_, text, _)| text.as_str()).collect();
    let completion_tokens =
        text::count_tokens(&format!("{written}{spent}{others_written}")) + reasoning_tokens;
    let prompt_tokens = text::count_tokens(&input);
    let cached_tokens = if sim.cached(&input) { prompt_tokens } else { 0 };
    let id = format!("chatcmpl-{}", text::hex_id(&input));
    let created = Utc::now().timestamp();
    let usage = json!({
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": { "cached_tokens": cached_tokens },
        "completion_tokens_details": { "reasoning_tokens": reasoning_tokens },
    });
    if !body.stream {
        let mut message = json!({ "role": "assistant", "content": written, "refusal": null });
        if let Some(thought) = &written_thought {
            message["reasoning_content"] = json!(thought);
        }
        if !calls.is_empty() {
            message["content"] = Value::Null;
            message["tool_calls"] = calls
                .iter()
                .map(|(id, name, arguments)| {
                    json!({ "id": id, "type": "function",
                            "function": { "name": name, "arguments": arguments } })
                })
                .collect();
        }
        let mut choices = vec![
            json!({ "index": 0, "finish_reason": finish, "message": message,
                                       "logprobs": logprobs_of(&pieces) }),
        ];
        for (i, (pieces, text, ended)) in others.iter().enumerate() {
            let mut message = message.clone();
            message["content"] = json!(text);
            choices.push(
                json!({ "index": i + 1, "finish_reason": ended, "message": message,
                                 "logprobs": logprobs_of(pieces) }),
            );
        }
        return Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": body.model,
            "choices": choices, "usage": usage,
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": body.model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
    };
    let event = |e: Value| format!("data: {e}\n\n");
    let thought_pieces = written_thought.as_deref().map(answers::pieces_of);
    let mut pieces: Vec<String> = thought_pieces
        .into_iter()
        .flatten()
        .map(|piece| event(chunk(json!({ "reasoning_content": piece }), Value::Null)))
        .chain(pieces.iter().map(|piece| {
            let mut piece_chunk = chunk(json!({ "content": piece }), Value::Null);
            // Each chunk carries its own tokens' log probabilities.
            piece_chunk["choices"][0]["logprobs"] = logprobs_of(std::slice::from_ref(piece));
            event(piece_chunk)
        }))
        .collect();
    // A call opens with its id and name, then its arguments come in fragments.
    for (index, (call_id, name, arguments)) in calls.iter().enumerate() {
        let opening = json!({ "index": index, "id": call_id, "type": "function",
                              "function": { "name": name, "arguments": "" } });
        pieces.push(event(chunk(
            json!({ "tool_calls": [opening] }),
            Value::Null,
        )));
        for fragment in answers::pieces_of(arguments) {
            let fragment = json!({ "index": index, "function": { "arguments": fragment } });
            pieces.push(event(chunk(
                json!({ "tool_calls": [fragment] }),
                Value::Null,
            )));
        }
    }
    let mut closing = vec![event(chunk(json!({}), json!(finish)))];
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
