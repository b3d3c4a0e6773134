//! A client for Ollama's native API (`/api/generate`, `/api/chat`, `/api/embed`): one JSON answer,
//! or for a streaming job the NDJSON stream, a line per piece of text or reasoning (or per whole
//! tool call) and a last `done` line with the counts and why it stopped. The call's reasoning is
//! `think`, Ollama's thinking read back from `thinking`; log probabilities are asked for with
//! `logprobs` and read back from each line's. A request for several answers is as many calls.

use std::time::Duration;

use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ProviderError;
use super::ollama_messages::AnsweredCall;
use super::{Completion, Delta, OnDelta, TokenDetails, http, ollama_messages};
use crate::domain::JobErrorCode;
use crate::domain::conversation::{Reply, ToolCall};
use crate::domain::{
    ChatRequest, EmbeddingRequest, GenerateRequest, GenerationOptions, JobRequest, Reasoning,
};

#[derive(Clone)]
pub struct OllamaClient {
    base_url: String,
    http: reqwest::Client,
    /// For streamed answers (see [`http::streaming_client`]).
    streaming: reqwest::Client,
}

/// A whole answer, or one line of a streamed one: a piece of text (generate's `response`, chat's
/// `message`) or a whole tool call, the last one `done` with the counts and why it stopped, or an
/// error.
#[derive(Deserialize)]
struct AnswerLine {
    #[serde(default)]
    model: String,
    response: Option<String>,
    /// A generate's reasoning.
    thinking: Option<String>,
    message: Option<AnswerMessage>,
    #[serde(default)]
    done: bool,
    done_reason: Option<String>,
    prompt_eval_count: Option<i32>,
    eval_count: Option<i32>,
    /// The tokens' log probabilities, when asked for (a line's own, when streamed).
    logprobs: Option<Vec<Value>>,
    error: Option<String>,
}

impl AnswerLine {
    /// A whole answer's reply.
    fn into_reply(self) -> Result<Reply, ProviderError> {
        let (text, thinking, calls) = match self.message {
            Some(m) => (m.content, m.thinking, m.tool_calls),
            None => (
                self.response.unwrap_or_default(),
                self.thinking.unwrap_or_default(),
                Vec::new(),
            ),
        };
        let calls = answered_calls(calls)?;
        let mut reply = Reply::answered(text, calls, None, self.done_reason.as_deref())
            .with_thinking(thinking, None);
        reply.logprobs = self.logprobs.map(Value::Array);
        Ok(reply)
    }
}

/// Counts of several calls added up; `None` while none was reported.
fn add(sum: Option<i32>, count: Option<i32>) -> Option<i32> {
    match (sum, count) {
        (Some(sum), Some(count)) => Some(sum.saturating_add(count)),
        (sum, count) => sum.or(count),
    }
}

/// The seed of each call of a request asking for `choices` answers: one call with the request's
/// own seed (`None`: the body's as it is); for several, consecutive seeds from the request's, or
/// from a random one, so that the answers differ and each is reproducible.
fn choice_seeds(body: &Value, choices: u8) -> Vec<Option<i64>> {
    if choices <= 1 {
        return vec![None];
    }
    let first = body["options"]["seed"]
        .as_i64()
        .unwrap_or_else(|| i64::from(rand::random::<u32>()));
    (0..i64::from(choices))
        .map(|i| Some(first.wrapping_add(i)))
        .collect()
}

#[derive(Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: String,
    #[serde(default)]
    thinking: String,
    #[serde(default)]
    tool_calls: Vec<AnsweredCall>,
}

#[derive(Deserialize)]
struct EmbedAnswer {
    model: String,
    embeddings: Vec<Vec<f32>>,
    prompt_eval_count: Option<i32>,
}

impl OllamaClient {
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http: http::client(timeout),
            streaming: http::streaming_client(timeout),
        }
    }

    /// Runs `request` on `model`, the upstream name the job's model routes to: once for each
    /// answer it asks for (Ollama gives one a call), each with a seed of its own so the answers
    /// differ, billed as called.
    pub async fn run(
        &self,
        request: &JobRequest,
        model: &str,
        reasoning: Option<Reasoning>,
    ) -> Result<Completion, ProviderError> {
        let (path, mut body) = match request {
            JobRequest::Generate(r) => ("/api/generate", generate_body(r, model, reasoning)?),
            JobRequest::Chat(r) => ("/api/chat", chat_body(r, model, reasoning)?),
            JobRequest::Embedding(r) => return self.embed(r, model).await,
        };
        let mut replies = Vec::new();
        let (mut prompt, mut eval) = (None, None);
        let (mut upstream_model, mut status_code) = (String::new(), 200);
        for seed in choice_seeds(&body, request.choices()) {
            if let Some(seed) = seed {
                body["options"]["seed"] = json!(seed);
            }
            let (answer, status): (AnswerLine, _) = self.post(path, &body).await?;
            prompt = add(prompt, answer.prompt_eval_count);
            eval = add(eval, answer.eval_count);
            (upstream_model, status_code) = (answer.model.clone(), status);
            replies.push(answer.into_reply()?);
        }
        Ok(Completion {
            result: super::replies_result(request, &replies),
            upstream_model,
            prompt_tokens: prompt,
            completion_tokens: eval,
            details: TokenDetails::default(),
            status_code,
        })
    }

    /// Runs `request` on `model` with the answer streamed: each piece of text goes to `on_delta`
    /// as it arrives. Embeddings do not stream; they run as [`Self::run`] does.
    pub async fn stream(
        &self,
        request: &JobRequest,
        model: &str,
        reasoning: Option<Reasoning>,
        on_delta: OnDelta<'_>,
    ) -> Result<Completion, ProviderError> {
        let (path, mut body) = match request {
            JobRequest::Generate(r) => ("/api/generate", generate_body(r, model, reasoning)?),
            JobRequest::Chat(r) => ("/api/chat", chat_body(r, model, reasoning)?),
            JobRequest::Embedding(r) => return self.embed(r, model).await,
        };
        body["stream"] = json!(true);
        let response = http::send(self.streaming.post(self.url(path)).json(&body), |v| {
            v["error"].as_str()
        })
        .await?;
        let status_code = response.status().as_u16();
        let mut lines = std::pin::pin!(http::ndjson_lines(response.bytes_stream()));
        let (mut text, mut thinking, mut calls) = (String::new(), String::new(), Vec::new());
        let mut logprobs: Option<Vec<Value>> = None;
        while let Some(line) = lines.next().await {
            let line: AnswerLine =
                serde_json::from_value(line?).map_err(|e| http::unreadable(&e))?;
            if let Some(error) = line.error {
                return Err(ProviderError::new(
                    JobErrorCode::ProviderError,
                    format!("Ollama failed mid-answer: {error}"),
                ));
            }
            if let Some(more) = line.logprobs {
                logprobs.get_or_insert_with(Vec::new).extend(more);
            }
            let (piece, thought) = match line.message {
                Some(message) => {
                    calls.extend(answered_calls(message.tool_calls)?);
                    (Some(message.content), Some(message.thinking))
                }
                None => (line.response, line.thinking),
            };
            if let Some(thought) = thought.filter(|t| !t.is_empty()) {
                on_delta(Delta::Thinking(&thought));
                thinking.push_str(&thought);
            }
            if let Some(piece) = piece.filter(|p| !p.is_empty()) {
                on_delta(Delta::Text(&piece));
                text.push_str(&piece);
            }
            if line.done {
                let mut reply = Reply::answered(text, calls, None, line.done_reason.as_deref())
                    .with_thinking(thinking, None);
                reply.logprobs = logprobs.map(Value::Array);
                return Ok(Completion {
                    result: super::reply_result(request, &reply),
                    upstream_model: line.model,
                    prompt_tokens: line.prompt_eval_count,
                    completion_tokens: line.eval_count,
                    details: TokenDetails::default(),
                    status_code,
                });
            }
        }
        Err(http::broken_stream())
    }

    async fn embed(&self, r: &EmbeddingRequest, model: &str) -> Result<Completion, ProviderError> {
        let mut body = json!({ "model": model, "input": r.input });
        if let Some(dimensions) = r.dimensions {
            body["dimensions"] = json!(dimensions);
        }
        let (answer, status): (EmbedAnswer, _) = self.post("/api/embed", &body).await?;
        super::check_embedding_count("Ollama", r.input.texts().len(), answer.embeddings.len())?;
        Ok(Completion {
            result: json!({ "embeddings": answer.embeddings }),
            upstream_model: answer.model,
            prompt_tokens: answer.prompt_eval_count,
            completion_tokens: Some(0),
            details: TokenDetails::default(),
            status_code: status,
        })
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<(T, u16), ProviderError> {
        let request = self.http.post(self.url(path)).json(body);
        http::send_json(request, |v| v["error"].as_str()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

/// `/api/generate`'s body, without `stream`'s choice.
fn generate_body(
    r: &GenerateRequest,
    model: &str,
    reasoning: Option<Reasoning>,
) -> Result<Value, ProviderError> {
    let mut body = json!({
        "model": model,
        "prompt": r.prompt,
        "stream": false,
        "options": options(&r.options),
    });
    if let Some(reasoning) = reasoning {
        body["think"] = reasoning.to_ollama();
    }
    add_logprobs(&mut body, &r.options);
    if let Some(system) = &r.options.system {
        body["system"] = json!(system);
    }
    if let Some(format) = ollama_messages::format(&r.output) {
        body["format"] = format;
    }
    if !r.images.is_empty() {
        body["images"] = Value::Array(ollama_messages::images(r.images.iter())?);
    }
    Ok(body)
}

/// `/api/chat`'s body, without `stream`'s choice.
fn chat_body(
    r: &ChatRequest,
    model: &str,
    reasoning: Option<Reasoning>,
) -> Result<Value, ProviderError> {
    let mut body = json!({
        "model": model,
        "messages": ollama_messages::messages(&r.conversation)?,
        "stream": false,
        "options": options(&r.options),
    });
    if let Some(reasoning) = reasoning {
        body["think"] = reasoning.to_ollama();
    }
    add_logprobs(&mut body, &r.options);
    if let Some(tools) = ollama_messages::tools(&r.conversation) {
        body["tools"] = tools;
    }
    if let Some(format) = ollama_messages::format(&r.conversation.output) {
        body["format"] = format;
    }
    Ok(body)
}

fn answered_calls(calls: Vec<AnsweredCall>) -> Result<Vec<ToolCall>, ProviderError> {
    calls.into_iter().map(AnsweredCall::into_call).collect()
}

/// Ollama's names for the shared options (`max_tokens` is `num_predict`).
fn options(o: &GenerationOptions) -> Value {
    let mut options = serde_json::Map::new();
    if let Some(t) = o.temperature {
        options.insert("temperature".into(), json!(t));
    }
    if let Some(p) = o.top_p {
        options.insert("top_p".into(), json!(p));
    }
    if let Some(m) = o.max_tokens {
        options.insert("num_predict".into(), json!(m));
    }
    if let Some(s) = o.seed {
        options.insert("seed".into(), json!(s));
    }
    if let Some(stop) = &o.stop {
        options.insert("stop".into(), json!(stop));
    }
    Value::Object(options)
}

/// Asks for the tokens' log probabilities, with `top` alternatives each, when the request does.
fn add_logprobs(body: &mut Value, o: &GenerationOptions) {
    if let Some(top) = o.logprobs {
        body["logprobs"] = json!(true);
        body["top_logprobs"] = json!(top);
    }
}
