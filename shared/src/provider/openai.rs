//! A client for the OpenAI API: the Responses API for generate and chat, `/embeddings` for vectors.
//! A streaming job, one with `stop` texts (which the Responses API does not take), a chat with
//! tools, or a call asking for reasoning goes to Chat Completions instead, streamed as SSE with
//! the usage in its last chunk.
//!
//! Several answers (`n`) and log probabilities (`logprobs`, `top_logprobs`) go to Chat
//! Completions, which gives each choice's.
//!
//! The call's reasoning is `reasoning_effort` (`reasoning.effort` on the Responses API); a model
//! that refuses it (an error naming that parameter) is asked again without it, and the job says
//! its reasoning was dropped. Reasoning comes back as the Responses API's reasoning items (their
//! summary and encrypted content) or, from OpenAI-compatible servers, as `reasoning_content`.
//!
//! `base_url` follows the official SDKs' convention and includes `/v1`
//! (`https://api.openai.com/v1`), so OpenAI-compatible servers configure the same way.
//!
//! An OpenAI-compatible server (vLLM, llama.cpp's server, SGLang, TGI, LM Studio) is not OpenAI:
//! its client ([`Dialect::Compatible`]) writes only the subset they share — Chat Completions for
//! everything (no Responses API), `max_tokens` rather than `max_completion_tokens`, a key only if
//! it has one — and learns from its first refusal that a server takes no `stream_options` (older
//! servers), streaming without usage from then on (the tokens are then estimated). A server
//! started without tool calling refuses a request that offers tools: its error is marked as the
//! model lacking `tools` there ([`ProviderError::lacks`]), so the worker takes the job elsewhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;

use super::error::ProviderError;
use super::openai_answers::{ChatCompletion, ChatUsage, Choice, EmbeddingsAnswer, ResponsesAnswer};
use super::openai_messages::CallsGathered;
use super::openai_requests::{Dialect, add_reasoning, chat_completions_body, responses_body};
use super::{Completion, Delta, OnDelta, TokenDetails, http, openai_messages};
use crate::domain::conversation::Reply;
use crate::domain::{
    Capability, ChatRequest, EmbeddingRequest, GenerateRequest, JobErrorCode, JobRequest,
    KeyHeader, Reasoning,
};

#[derive(Clone)]
pub struct OpenAiClient {
    base_url: String,
    api_key: Option<SecretString>,
    /// How the key is sent (Azure OpenAI takes it as `api-key`).
    key_header: KeyHeader,
    /// Sent as `?api-version=` on every call (Azure OpenAI).
    api_version: Option<String>,
    dialect: Dialect,
    /// Whether the server takes `stream_options` (until it refuses them once).
    stream_usage: Arc<AtomicBool>,
    http: reqwest::Client,
    /// For streamed answers (see [`http::streaming_client`]).
    streaming: reqwest::Client,
}

impl OpenAiClient {
    /// A client for OpenAI itself.
    pub fn new(base_url: &str, api_key: SecretString, timeout: Duration) -> Self {
        Self::of(Dialect::OpenAi, base_url, Some(api_key), timeout)
    }

    /// A client for an OpenAI-compatible server, with its key if it has one.
    pub fn compatible(base_url: &str, api_key: Option<SecretString>, timeout: Duration) -> Self {
        Self::of(Dialect::Compatible, base_url, api_key, timeout)
    }

    fn of(
        dialect: Dialect,
        base_url: &str,
        api_key: Option<SecretString>,
        timeout: Duration,
    ) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            key_header: KeyHeader::Authorization,
            api_version: None,
            dialect,
            stream_usage: Arc::new(AtomicBool::new(true)),
            http: http::client(timeout),
            streaming: http::streaming_client(timeout),
        }
    }

    /// The client for an Azure OpenAI deployment (or any server that wants them): its key sent
    /// as `key_header`, `api_version` on every call.
    pub fn addressed(mut self, key_header: KeyHeader, api_version: Option<String>) -> Self {
        self.key_header = key_header;
        self.api_version = api_version;
        self
    }

    /// Who answers, in messages.
    fn label(&self) -> &'static str {
        match self.dialect {
            Dialect::OpenAi => "OpenAI",
            Dialect::Compatible => "the OpenAI-compatible server",
        }
    }

    /// Runs `request` on `model`, the upstream name the job's model routes to, asking for
    /// `reasoning` (and without it, should the model refuse it).
    pub async fn run(
        &self,
        request: &JobRequest,
        model: &str,
        reasoning: Option<Reasoning>,
    ) -> Result<Completion, ProviderError> {
        self.run_as_asked(request, model, reasoning)
            .await
            .map_err(|failure| self.understood(failure, request))
    }

    async fn run_as_asked(
        &self,
        request: &JobRequest,
        model: &str,
        reasoning: Option<Reasoning>,
    ) -> Result<Completion, ProviderError> {
        let answer = self.run_once(request, model, reasoning).await;
        let again = self.run_once(request, model, None);
        unless_reasoning_refused(answer, reasoning, again).await
    }

    async fn run_once(
        &self,
        request: &JobRequest,
        model: &str,
        reasoning: Option<Reasoning>,
    ) -> Result<Completion, ProviderError> {
        // Reasoning goes to Chat Completions too: OpenAI-compatible servers write reasoning out
        // only there (`reasoning_content`), and OpenAI's Responses API gives none unasked; as do
        // several answers and log probabilities, which only it gives.
        let options = match request {
            JobRequest::Generate(r) => &r.options,
            JobRequest::Chat(r) => &r.options,
            JobRequest::Embedding(r) => return self.embed(r, model).await,
        };
        let reasons =
            reasoning.is_some() || options.n.is_some_and(|n| n > 1) || options.logprobs.is_some();
        if self.dialect == Dialect::Compatible {
            return self.complete(request, model, reasoning).await;
        }
        match request {
            JobRequest::Generate(GenerateRequest {
                options, images, ..
            }) if options.stop.is_some() || !images.is_empty() || reasons => {
                self.complete(request, model, reasoning).await
            }
            JobRequest::Chat(r)
                if r.options.stop.is_some()
                    || openai_messages::has_tools(&r.conversation)
                    || reasons =>
            {
                self.complete(request, model, reasoning).await
            }
            JobRequest::Generate(r) => self.generate(r, model, reasoning).await,
            JobRequest::Chat(r) => self.chat(r, model, reasoning).await,
            JobRequest::Embedding(r) => self.embed(r, model).await,
        }
    }

    /// Runs `request` on `model` through Chat Completions with the answer streamed: each piece of
    /// text or reasoning goes to `on_delta` as it arrives. Embeddings do not stream; they run as
    /// [`Self::run`] does.
    pub async fn stream(
        &self,
        request: &JobRequest,
        model: &str,
        reasoning: Option<Reasoning>,
        on_delta: OnDelta<'_>,
    ) -> Result<Completion, ProviderError> {
        self.stream_as_asked(request, model, reasoning, on_delta)
            .await
            .map_err(|failure| self.understood(failure, request))
    }

    async fn stream_as_asked(
        &self,
        request: &JobRequest,
        model: &str,
        reasoning: Option<Reasoning>,
        on_delta: OnDelta<'_>,
    ) -> Result<Completion, ProviderError> {
        // A refusal comes before any piece, so the call can be made again without what was
        // refused.
        let answer = match self.stream_once(request, model, reasoning, on_delta).await {
            Err(failure) if self.refuses_stream_options(&failure) => {
                tracing::info!(
                    base_url = self.base_url,
                    "the server takes no stream_options: streaming without usage from now on"
                );
                self.stream_usage.store(false, Ordering::Relaxed);
                self.stream_once(request, model, reasoning, on_delta).await
            }
            answer => answer,
        };
        let again = self.stream_once(request, model, None, on_delta);
        unless_reasoning_refused(answer, reasoning, again).await
    }

    async fn stream_once(
        &self,
        request: &JobRequest,
        model: &str,
        reasoning: Option<Reasoning>,
        on_delta: OnDelta<'_>,
    ) -> Result<Completion, ProviderError> {
        let mut body = match request {
            JobRequest::Embedding(r) => return self.embed(r, model).await,
            _ => chat_completions_body(request, model, reasoning, self.dialect)?,
        };
        body["stream"] = json!(true);
        if self.stream_usage.load(Ordering::Relaxed) {
            body["stream_options"] = json!({ "include_usage": true });
        }
        let call = self.authorized(&self.streaming, "/chat/completions", &body);
        let response = http::send(call, error_message)
            .await
            .map_err(|failure| self.redacted(failure))?;
        let status_code = response.status().as_u16();
        let mut events = response.bytes_stream().eventsource();
        let (mut text, mut upstream_model, mut usage) = (String::new(), String::new(), None);
        let (mut calls, mut refusal, mut finish) = (CallsGathered::default(), None, None);
        let mut thinking = String::new();
        let mut logprobs: Option<Vec<Value>> = None;
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| match e {
                eventsource_stream::EventStreamError::Transport(e) => http::transport_error(e),
                other => http::unreadable(&other),
            })?;
            if event.data == "[DONE]" {
                let calls = calls.into_calls()?;
                let mut reply = Reply::answered(text, calls, refusal, finish.as_deref())
                    .with_thinking(thinking, None);
                reply.logprobs = logprobs.map(Value::Array);
                return Ok(Completion {
                    result: super::reply_result(request, &reply),
                    upstream_model,
                    prompt_tokens: usage.as_ref().map(|u: &ChatUsage| u.prompt_tokens),
                    completion_tokens: usage.as_ref().map(|u| u.completion_tokens),
                    details: usage.as_ref().map(ChatUsage::details).unwrap_or_default(),
                    status_code,
                });
            }
            let value: Value =
                serde_json::from_str(&event.data).map_err(|e| http::unreadable(&e))?;
            if let Some(message) = error_message(&value) {
                let message = format!("{} failed mid-answer: {message}", self.label());
                return Err(self.redacted(ProviderError::new(JobErrorCode::ProviderError, message)));
            }
            let chunk: ChatCompletion =
                serde_json::from_value(value).map_err(|e| http::unreadable(&e))?;
            if !chunk.model.is_empty() {
                upstream_model = chunk.model;
            }
            usage = chunk.usage.or(usage);
            let Some(choice) = chunk.choices.into_iter().next() else {
                continue;
            };
            finish = choice.finish_reason.or(finish);
            if let Some(more) = choice.logprobs.and_then(|l| l.content) {
                logprobs.get_or_insert_with(Vec::new).extend(more);
            }
            let Some(delta) = choice.delta else {
                continue;
            };
            calls.add(delta.tool_calls);
            if let Some(piece) = delta.refusal {
                refusal.get_or_insert_with(String::new).push_str(&piece);
            }
            if let Some(thought) = delta.reasoning_content.or(delta.reasoning) {
                on_delta(Delta::Thinking(&thought));
                thinking.push_str(&thought);
            }
            if let Some(piece) = delta.content.filter(|p| !p.is_empty()) {
                on_delta(Delta::Text(&piece));
                text.push_str(&piece);
            }
        }
        Err(http::broken_stream())
    }

    /// A whole Chat Completion: what a job with `stop` texts or tools runs.
    async fn complete(
        &self,
        request: &JobRequest,
        model: &str,
        reasoning: Option<Reasoning>,
    ) -> Result<Completion, ProviderError> {
        let body = chat_completions_body(request, model, reasoning, self.dialect)?;
        let (mut answer, status): (ChatCompletion, _) =
            self.post("/chat/completions", &body).await?;
        answer.choices.sort_by_key(|choice| choice.index);
        let replies = std::mem::take(&mut answer.choices)
            .into_iter()
            .map(Choice::into_reply)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Completion {
            result: super::replies_result(request, &replies),
            upstream_model: answer.model,
            prompt_tokens: answer.usage.as_ref().map(|u| u.prompt_tokens),
            completion_tokens: answer.usage.as_ref().map(|u| u.completion_tokens),
            details: answer
                .usage
                .as_ref()
                .map(ChatUsage::details)
                .unwrap_or_default(),
            status_code: status,
        })
    }

    async fn generate(
        &self,
        r: &GenerateRequest,
        model: &str,
        reasoning: Option<Reasoning>,
    ) -> Result<Completion, ProviderError> {
        let mut body = responses_body(model, json!(r.prompt), &r.options, &r.output);
        add_reasoning(&mut body, reasoning);
        if let Some(system) = &r.options.system {
            body["instructions"] = json!(system);
        }
        let (reply, completion) = self.respond(&body).await?;
        Ok(Completion {
            result: reply.generated_result(),
            ..completion
        })
    }

    async fn chat(
        &self,
        r: &ChatRequest,
        model: &str,
        reasoning: Option<Reasoning>,
    ) -> Result<Completion, ProviderError> {
        let input = openai_messages::messages(&r.conversation)?;
        let mut body = responses_body(model, json!(input), &r.options, &r.conversation.output);
        add_reasoning(&mut body, reasoning);
        let (reply, completion) = self.respond(&body).await?;
        Ok(Completion {
            result: reply.to_result(),
            ..completion
        })
    }

    /// Calls `/responses` and reads its answer (see [`ResponsesAnswer::read`]).
    async fn respond(&self, body: &Value) -> Result<(Reply, Completion), ProviderError> {
        let (answer, status): (ResponsesAnswer, _) = self.post("/responses", body).await?;
        Ok(answer.read(status))
    }

    async fn embed(&self, r: &EmbeddingRequest, model: &str) -> Result<Completion, ProviderError> {
        let mut body = json!({ "model": model, "input": r.input });
        if let Some(dimensions) = r.dimensions {
            body["dimensions"] = json!(dimensions);
        }
        let (mut answer, status): (EmbeddingsAnswer, _) = self.post("/embeddings", &body).await?;
        super::check_embedding_count(self.label(), r.input.texts().len(), answer.data.len())?;
        answer.data.sort_by_key(|item| item.index);
        let embeddings: Vec<Vec<f32>> =
            answer.data.into_iter().map(|item| item.embedding).collect();
        Ok(Completion {
            result: json!({ "embeddings": embeddings }),
            upstream_model: answer.model,
            prompt_tokens: answer.usage.map(|u| u.prompt_tokens),
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
        http::send_json(self.authorized(&self.http, path, body), error_message)
            .await
            .map_err(|failure| self.redacted(failure))
    }

    fn authorized(
        &self,
        http: &reqwest::Client,
        path: &str,
        body: &Value,
    ) -> reqwest::RequestBuilder {
        let mut call = http.post(format!("{}{path}", self.base_url)).json(body);
        if let Some(version) = &self.api_version {
            call = call.query(&[("api-version", version)]);
        }
        match (&self.api_key, self.key_header) {
            (Some(key), KeyHeader::Authorization) => call.bearer_auth(key.expose_secret()),
            (Some(key), KeyHeader::ApiKey) => call.header("api-key", key.expose_secret()),
            (None, _) => call,
        }
    }

    /// Some compatible servers echo the key in their errors; it must not reach a job.
    fn redacted(&self, failure: ProviderError) -> ProviderError {
        match &self.api_key {
            Some(key) => failure.redacted(key.expose_secret()),
            None => failure,
        }
    }

    /// A compatible server's refusal read for what it says the model lacks there.
    fn understood(&self, failure: ProviderError, request: &JobRequest) -> ProviderError {
        match self.dialect {
            Dialect::OpenAi => failure,
            Dialect::Compatible => lacking_tools(failure, request),
        }
    }

    /// Whether `failure` is an OpenAI-compatible server refusing `stream_options`, which older
    /// ones do not know, while this client still sends them.
    fn refuses_stream_options(&self, failure: &ProviderError) -> bool {
        self.dialect == Dialect::Compatible
            && self.stream_usage.load(Ordering::Relaxed)
            && failure.status_code == Some(400)
            && (failure.param.as_deref() == Some("stream_options")
                || failure.message.contains("stream_options"))
    }
}

/// OpenAI's `error.message`, or a compatible server's top-level `message` (vLLM's) or `detail`
/// (FastAPI's).
fn error_message(value: &Value) -> Option<&str> {
    value["error"]["message"]
        .as_str()
        .or_else(|| value["message"].as_str())
        .or_else(|| value["detail"].as_str())
}

/// What OpenAI-compatible servers say when they were started without tool calling (vLLM without
/// `--enable-auto-tool-choice`, llama.cpp's server without `--jinja`, and the like).
const NO_TOOL_CALLING: [&str; 5] = [
    "enable-auto-tool-choice",
    "tool-call-parser",
    "--jinja",
    "does not support tools",
    "tools are not supported",
];

/// Marks a compatible server's refusal of the tools a request offers as the model lacking them
/// there, so the job is taken elsewhere rather than failed.
fn lacking_tools(mut failure: ProviderError, request: &JobRequest) -> ProviderError {
    let offers_tools = match request {
        JobRequest::Chat(r) => openai_messages::has_tools(&r.conversation),
        _ => false,
    };
    let message = failure.message.to_lowercase();
    if offers_tools
        && failure.status_code == Some(400)
        && NO_TOOL_CALLING.iter().any(|said| message.contains(said))
    {
        failure.lacks = Some(Capability::Tools);
    }
    failure
}

/// `answer`, or — when it is the model refusing the reasoning asked — `again` (the same call
/// without it; a future does nothing until awaited), the job then saying that reasoning asked on
/// was dropped.
async fn unless_reasoning_refused(
    answer: Result<Completion, ProviderError>,
    reasoning: Option<Reasoning>,
    again: impl Future<Output = Result<Completion, ProviderError>>,
) -> Result<Completion, ProviderError> {
    match answer {
        Err(failure) if refuses_reasoning(&failure, reasoning) => {
            let mut completion = again.await?;
            if reasoning.is_some_and(Reasoning::is_on) {
                super::mark_reasoning_dropped(&mut completion.result);
            }
            Ok(completion)
        }
        answer => answer,
    }
}

/// Whether `failure` is the model refusing the reasoning the call asked for (on, or off: not
/// every model takes `none`). Only reasoning asked on is then said to be dropped.
fn refuses_reasoning(failure: &ProviderError, reasoning: Option<Reasoning>) -> bool {
    reasoning.is_some()
        && failure.status_code == Some(400)
        && matches!(
            failure.param.as_deref(),
            Some("reasoning_effort" | "reasoning.effort" | "reasoning")
        )
}
