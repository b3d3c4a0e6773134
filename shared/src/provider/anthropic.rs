//! A client for Anthropic's Messages API: generate and chat as `POST /v1/messages`, whole or
//! streamed (its events parsed into the same pieces the relay carries: text, reasoning and the
//! reasoning's signature), and `POST /v1/messages/count_tokens`.
//!
//! `base_url` follows Anthropic's SDKs and has no `/v1` (`https://api.anthropic.com`). The key goes
//! as `x-api-key`, with `anthropic-version: 2023-06-01` and the `anthropic-beta` header a client
//! of Anthropic's dialect sent. Failures are classified as for any provider (429 with its
//! `retry-after`, 529 and 5xx transient; a 400 the request's; 401 and 403 the provider's), and
//! Anthropic's own error body is kept with them, so that a client of the same dialect is answered
//! with it unchanged.

use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

use super::anthropic_messages::{body, counts, reply};
use super::anthropic_wire::{Answer, Block, BlockDelta, StreamEvent, Usage};
use super::error::ProviderError;
use super::{Completion, Delta, OnDelta, http};
use crate::domain::{JobErrorCode, JobRequest, Reasoning};

/// The API version every call names.
const VERSION: &str = "2023-06-01";

/// Where a result keeps an answer's blocks as Anthropic wrote them, when it reasoned or holds
/// blocks of other types: its reasoning may come in several blocks, redacted, or between its
/// text and its tool calls, each with the signature a client must send back with it, and a
/// server tool's call and result have no place in a reply. The Anthropic surface answers with
/// them.
pub const ANTHROPIC_CONTENT: &str = "anthropic_content";

#[derive(Clone)]
pub struct AnthropicClient {
    base_url: String,
    api_key: SecretString,
    http: reqwest::Client,
    /// For streamed answers (see [`http::streaming_client`]).
    streaming: reqwest::Client,
}

impl AnthropicClient {
    pub fn new(base_url: &str, api_key: SecretString, timeout: Duration) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            http: http::client(timeout),
            streaming: http::streaming_client(timeout),
        }
    }

    /// Runs `request` on `model`, the upstream name the job's model routes to.
    pub async fn run(
        &self,
        request: &JobRequest,
        model: &str,
        reasoning: Option<Reasoning>,
    ) -> Result<Completion, ProviderError> {
        let (body, beta) = body(request, model, reasoning)?;
        let call = self.call(&self.http, "/v1/messages", &body, beta.as_deref());
        let (answer, status_code): (Answer, u16) = http::send_json(call, error_message)
            .await
            .map_err(|failure| self.redacted(failure))?;
        Ok(completion(request, answer, status_code))
    }

    /// Runs `request` on `model` with the answer streamed: each piece of text, reasoning or the
    /// reasoning's signature goes to `on_delta` as it arrives.
    pub async fn stream(
        &self,
        request: &JobRequest,
        model: &str,
        reasoning: Option<Reasoning>,
        on_delta: OnDelta<'_>,
    ) -> Result<Completion, ProviderError> {
        let (mut body, beta) = body(request, model, reasoning)?;
        body["stream"] = Value::Bool(true);
        let call = self.call(&self.streaming, "/v1/messages", &body, beta.as_deref());
        let response = http::send(call, error_message)
            .await
            .map_err(|failure| self.redacted(failure))?;
        let status_code = response.status().as_u16();
        let mut events = response.bytes_stream().eventsource();
        let mut answer = Gathered::default();
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| match e {
                eventsource_stream::EventStreamError::Transport(e) => http::transport_error(e),
                other => http::unreadable(&other),
            })?;
            let event: StreamEvent =
                serde_json::from_str(&event.data).map_err(|e| http::unreadable(&e))?;
            if let Some(done) = answer.take(event, on_delta)? {
                return Ok(completion(request, done, status_code));
            }
        }
        Err(http::broken_stream())
    }

    /// The prompt's tokens as Anthropic counts them (`count_tokens`: not billed).
    pub async fn count_tokens(
        &self,
        request: &JobRequest,
        model: &str,
    ) -> Result<i64, ProviderError> {
        let (mut body, beta) = body(request, model, None)?;
        if let Some(body) = body.as_object_mut() {
            body.remove("max_tokens");
        }
        #[derive(serde::Deserialize)]
        struct Counted {
            input_tokens: i64,
        }
        let call = self.call(
            &self.http,
            "/v1/messages/count_tokens",
            &body,
            beta.as_deref(),
        );
        let (counted, _): (Counted, u16) = http::send_json(call, error_message)
            .await
            .map_err(|failure| self.redacted(failure))?;
        Ok(counted.input_tokens)
    }

    fn call(
        &self,
        http: &reqwest::Client,
        path: &str,
        body: &Value,
        beta: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut call = http
            .post(format!("{}{path}", self.base_url))
            .header("x-api-key", self.api_key.expose_secret())
            .header("anthropic-version", VERSION)
            .json(body);
        if let Some(beta) = beta {
            call = call.header("anthropic-beta", beta);
        }
        call
    }

    /// The failure with the key taken out of its message and body, should they echo it.
    fn redacted(&self, failure: ProviderError) -> ProviderError {
        failure.redacted(self.api_key.expose_secret())
    }
}

/// What a call produced: its answer's reply and counts. An answer that reasoned (or holds
/// blocks of other types) keeps its blocks as Anthropic wrote them besides (see
/// [`ANTHROPIC_CONTENT`]).
fn completion(request: &JobRequest, answer: Answer, status_code: u16) -> Completion {
    let (prompt_tokens, completion_tokens, details) = counts(&answer.usage);
    let mut result = super::reply_result(request, &reply(&answer));
    let reasoned = answer.content.iter().any(|block| {
        matches!(
            block,
            Block::Thinking { .. } | Block::RedactedThinking { .. } | Block::Other(_)
        )
    });
    if reasoned
        && let (Value::Object(result), Ok(blocks)) =
            (&mut result, serde_json::to_value(&answer.content))
    {
        result.insert(ANTHROPIC_CONTENT.to_owned(), blocks);
    }
    Completion {
        result,
        upstream_model: answer.model,
        prompt_tokens,
        completion_tokens,
        details,
        status_code,
    }
}

/// Anthropic's `error.message`.
fn error_message(value: &Value) -> Option<&str> {
    value["error"]["message"].as_str()
}

/// A streamed answer gathered from its events.
#[derive(Default)]
struct Gathered {
    answer: Option<Answer>,
    /// A tool call's input, as its `input_json_delta`s come.
    input: String,
    usage: Usage,
}

impl Gathered {
    /// Takes one event: its pieces to `on_delta`; the whole answer once `message_stop` comes.
    fn take(
        &mut self,
        event: StreamEvent,
        on_delta: OnDelta<'_>,
    ) -> Result<Option<Answer>, ProviderError> {
        match event {
            StreamEvent::MessageStart { message } => {
                self.usage = message.usage;
                self.answer = Some(message);
            }
            StreamEvent::ContentBlockStart { content_block, .. } => {
                self.input.clear();
                if let Block::RedactedThinking { .. } = &content_block
                    && let Ok(whole) = serde_json::to_value(&content_block)
                {
                    on_delta(Delta::Block(&whole));
                }
                self.started()?.content.push(content_block);
            }
            StreamEvent::ContentBlockDelta { delta, .. } => self.delta(delta, on_delta)?,
            StreamEvent::ContentBlockStop { .. } => self.stopped(on_delta)?,
            StreamEvent::MessageDelta { delta, usage } => {
                self.usage = self.usage.updated(usage);
                let answer = self.started()?;
                answer.stop_reason = delta.stop_reason;
                answer.stop_sequence = delta.stop_sequence;
            }
            StreamEvent::MessageStop => {
                let mut answer = self.answer.take().ok_or_else(unordered)?;
                answer.usage = self.usage;
                return Ok(Some(answer));
            }
            StreamEvent::Error { error } => {
                let message = format!("Anthropic failed mid-answer: {}", error.message);
                let code = match error.kind.as_str() {
                    "overloaded_error" | "api_error" | "rate_limit_error" | "timeout_error" => {
                        JobErrorCode::ProviderUnavailable
                    }
                    _ => JobErrorCode::ProviderError,
                };
                let body = serde_json::json!({ "type": "error", "error": error });
                let mut failure = ProviderError::new(code, message);
                failure.body = Some(Box::new(body));
                return Err(failure);
            }
            StreamEvent::Other => {}
        }
        Ok(None)
    }

    fn started(&mut self) -> Result<&mut Answer, ProviderError> {
        self.answer.as_mut().ok_or_else(unordered)
    }

    /// The block being written.
    fn block(&mut self) -> Result<&mut Block, ProviderError> {
        self.started()?.content.last_mut().ok_or_else(unordered)
    }

    fn delta(&mut self, delta: BlockDelta, on_delta: OnDelta<'_>) -> Result<(), ProviderError> {
        match (self.block()?, delta) {
            (Block::Text { text, .. }, BlockDelta::TextDelta { text: piece }) => {
                on_delta(Delta::Text(&piece));
                text.push_str(&piece);
            }
            (Block::Thinking { thinking, .. }, BlockDelta::ThinkingDelta { thinking: piece }) => {
                on_delta(Delta::Thinking(&piece));
                thinking.push_str(&piece);
            }
            (
                Block::Thinking { signature, .. },
                BlockDelta::SignatureDelta { signature: piece },
            ) => {
                on_delta(Delta::Signature(&piece));
                signature.push_str(&piece);
            }
            (
                Block::ToolUse { .. } | Block::Other(_),
                BlockDelta::InputJsonDelta { partial_json },
            ) => {
                self.input.push_str(&partial_json);
            }
            _ => {}
        }
        Ok(())
    }

    /// A block ended: a tool call's input is whole; a block of another type (a server tool's
    /// call or result) is passed on whole.
    fn stopped(&mut self, on_delta: OnDelta<'_>) -> Result<(), ProviderError> {
        let input = std::mem::take(&mut self.input);
        let input = match input.trim() {
            "" => None,
            text => Some(serde_json::from_str::<Value>(text).map_err(|e| http::unreadable(&e))?),
        };
        match self.block()? {
            Block::ToolUse { input: whole, .. } => {
                if let Some(input) = input {
                    *whole = input;
                }
            }
            Block::Other(other) => {
                if let Some(input) = input {
                    other.0.insert("input".into(), input);
                }
                on_delta(Delta::Block(&Value::Object(other.0.clone())));
            }
            _ => {}
        }
        Ok(())
    }
}

fn unordered() -> ProviderError {
    http::unreadable(&"Anthropic's events came out of order")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_answer_that_reasoned_keeps_its_blocks_as_anthropic_wrote_them() {
        let request: JobRequest = serde_json::from_value(json!({
            "kind": "chat", "model": "claude", "messages": [{ "role": "user", "content": "Hi" }] }))
        .expect("a request");
        let blocks = json!([
            { "type": "thinking", "thinking": "First.", "signature": "sig-1" },
            { "type": "text", "text": "Checking." },
            { "type": "redacted_thinking", "data": "opaque" },
            { "type": "thinking", "thinking": "Then.", "signature": "sig-2" },
            { "type": "tool_use", "id": "toolu_1", "name": "x", "input": {},
              "caller": { "type": "direct" } }]);
        let answer: Answer = serde_json::from_value(json!({
            "id": "msg_1", "model": "claude", "content": blocks, "stop_reason": "tool_use",
            "usage": { "input_tokens": 3, "output_tokens": 9 } }))
        .expect("an answer");
        let done = completion(&request, answer, 200);
        assert_eq!(
            done.result[ANTHROPIC_CONTENT], blocks,
            "every block, in order, verbatim"
        );
        assert_eq!(done.result["message"]["content"], "Checking.");
        let plain: Answer = serde_json::from_value(json!({
            "id": "msg_2", "model": "claude", "content": [{ "type": "text", "text": "Hi" }],
            "stop_reason": "end_turn", "usage": { "input_tokens": 3, "output_tokens": 1 } }))
        .expect("an answer");
        let done = completion(&request, plain, 200);
        assert!(
            done.result.get(ANTHROPIC_CONTENT).is_none(),
            "a reply holds it all"
        );
    }
    #[test]
    fn a_stream_is_gathered_into_its_answer_with_each_piece_passed_on() {
        let events = [
            json!({ "type": "message_start", "message": { "id": "msg_1", "type": "message",
                    "role": "assistant", "model": "claude", "content": [], "stop_reason": null,
                    "usage": { "input_tokens": 10, "cache_read_input_tokens": 90,
                               "output_tokens": 1 } } }),
            json!({ "type": "content_block_start", "index": 0,
                    "content_block": { "type": "thinking", "thinking": "", "signature": "" } }),
            json!({ "type": "ping" }),
            json!({ "type": "content_block_delta", "index": 0,
                    "delta": { "type": "thinking_delta", "thinking": "Hm." } }),
            json!({ "type": "content_block_delta", "index": 0,
                    "delta": { "type": "signature_delta", "signature": "sig" } }),
            json!({ "type": "content_block_stop", "index": 0 }),
            json!({ "type": "content_block_start", "index": 1,
                    "content_block": { "type": "redacted_thinking", "data": "opaque" } }),
            json!({ "type": "content_block_stop", "index": 1 }),
            json!({ "type": "content_block_start", "index": 2,
                    "content_block": { "type": "text", "text": "" } }),
            json!({ "type": "content_block_delta", "index": 2,
                    "delta": { "type": "text_delta", "text": "Checking." } }),
            json!({ "type": "content_block_stop", "index": 2 }),
            json!({ "type": "content_block_start", "index": 3, "content_block": {
                    "type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
                    "input": {} } }),
            json!({ "type": "content_block_delta", "index": 3,
                    "delta": { "type": "input_json_delta", "partial_json": "{\"query\": \"x\"}" } }),
            json!({ "type": "content_block_stop", "index": 3 }),
            json!({ "type": "content_block_start", "index": 4, "content_block": {
                    "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {} } }),
            json!({ "type": "content_block_delta", "index": 4,
                    "delta": { "type": "input_json_delta", "partial_json": "{\"city\": " } }),
            json!({ "type": "content_block_delta", "index": 4,
                    "delta": { "type": "input_json_delta", "partial_json": "\"Paris\"}" } }),
            json!({ "type": "content_block_stop", "index": 4 }),
            json!({ "type": "message_delta", "delta": { "stop_reason": "tool_use" },
                    "usage": { "output_tokens": 42 } }),
            json!({ "type": "message_stop" }),
        ];
        let mut gathered = Gathered::default();
        let mut pieces = Vec::new();
        let mut on_delta = |delta: Delta<'_>| pieces.push(format!("{delta:?}"));
        let mut done = None;
        for event in events {
            let event: StreamEvent = serde_json::from_value(event).expect("an event");
            done = gathered.take(event, &mut on_delta).expect("in order");
        }
        let whole = |block: Value| format!("{:?}", Delta::Block(&block));
        assert_eq!(
            pieces,
            [
                "Thinking(\"Hm.\")".to_owned(),
                "Signature(\"sig\")".to_owned(),
                whole(json!({ "type": "redacted_thinking", "data": "opaque" })),
                "Text(\"Checking.\")".to_owned(),
                whole(json!({ "type": "server_tool_use", "id": "srvtoolu_1",
                              "name": "web_search", "input": { "query": "x" } })),
            ]
        );
        let answer = done.expect("whole at message_stop");
        assert_eq!(answer.stop_reason.as_deref(), Some("tool_use"));
        let Block::ToolUse { input, .. } = &answer.content[4] else {
            panic!("a tool call: {answer:?}");
        };
        assert_eq!(
            input,
            &json!({ "city": "Paris" }),
            "its input's pieces, joined"
        );
        let usage = answer.usage;
        assert_eq!(
            (
                usage.input_tokens,
                usage.cache_read_input_tokens,
                usage.output_tokens
            ),
            (Some(10), Some(90), Some(42)),
            "message_delta's usage is the latest"
        );
        let error: StreamEvent = serde_json::from_value(json!({ "type": "error",
            "error": { "type": "overloaded_error", "message": "Overloaded" } }))
        .expect("an event");
        let failed = Gathered::default()
            .take(error, &mut |_: Delta<'_>| {})
            .expect_err("an error mid-answer");
        assert!(failed.is_transient(), "{failed}");
        assert_eq!(
            failed.body.as_deref(),
            Some(&json!({ "type": "error",
                          "error": { "type": "overloaded_error", "message": "Overloaded" } })),
            "Anthropic's own words, for its clients"
        );
    }
}
