//! The assistant's reply to a conversation, as a chat job's `result` holds it: its text, the tool
//! calls it makes (each with the id it keeps through the history), a refusal when the provider
//! reports one, its reasoning when the model gave it, and why it stopped.
//!
//! Stored as `{"message": {"role": "assistant", "content", "tool_calls"?, "refusal"?,
//! "thinking"?}, "logprobs"?, "finish_reason"?}` (a generate's as `{"text", "thinking"?,
//! "logprobs"?, "finish_reason"?}`): a text reply reads as the previous release wrote it, and a
//! result written before `finish_reason` existed reads with the stop reason left to the counts.
//! Several replies (`n` > 1) are stored as the first's result with every reply's under
//! `choices`.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Arguments, Thinking, ToolCall};

/// Why the reply ended, in Chat Completions' words (each dialect writes its own from these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// The model ended its turn (or wrote a stop text).
    Stop,
    /// `max_tokens` cut it short.
    Length,
    /// It ends by calling tools.
    ToolCalls,
    /// The provider's content filter stopped it.
    ContentFilter,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
        }
    }

    /// A provider's own word for it (Ollama's `done_reason`, OpenAI's `finish_reason` or the
    /// Responses API's incomplete reason); anything else is a plain stop.
    pub fn from_provider(reason: &str) -> Self {
        match reason {
            "length" | "max_output_tokens" | "max_tokens" => Self::Length,
            "tool_calls" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            _ => Self::Stop,
        }
    }
}

/// What the assistant answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    /// The provider declined to answer, saying why (OpenAI's `refusal`).
    pub refusal: Option<String>,
    /// The model's reasoning, when it gave it.
    pub thinking: Option<Thinking>,
    /// The answer's tokens with their log probabilities, when asked for and given: a list of
    /// `{token, logprob, bytes, top_logprobs}` (OpenAI's `logprobs.content`, Ollama's
    /// `logprobs`: the same shape).
    pub logprobs: Option<Value>,
    /// `None` in a result written before the reason was kept.
    pub finish: Option<Finish>,
}

impl Reply {
    /// A reply of text alone.
    pub fn text(text: impl Into<String>, finish: Option<Finish>) -> Self {
        Self {
            text: text.into(),
            tool_calls: Vec::new(),
            refusal: None,
            thinking: None,
            logprobs: None,
            finish,
        }
    }

    /// The reply with the model's reasoning: `text` (none when empty) and its signature.
    pub fn with_thinking(mut self, text: String, signature: Option<String>) -> Self {
        if !text.is_empty() || signature.is_some() {
            self.thinking = Some(Thinking::new(text, signature));
        }
        self
    }

    /// The reply a provider gave, its finish made `tool_calls` when it calls tools and stopped
    /// for no other reason (Ollama ends a turn of calls with a plain `stop`).
    pub fn answered(
        text: String,
        tool_calls: Vec<ToolCall>,
        refusal: Option<String>,
        reason: Option<&str>,
    ) -> Self {
        let mut finish = reason.map_or(Finish::Stop, Finish::from_provider);
        if !tool_calls.is_empty() && finish == Finish::Stop {
            finish = Finish::ToolCalls;
        }
        Self {
            text,
            tool_calls,
            refusal,
            thinking: None,
            logprobs: None,
            finish: Some(finish),
        }
    }

    /// Whether the answer is one to check against the conversation's format: a whole answer of
    /// text, not one cut short, refused or calling tools instead.
    pub fn is_checkable(&self) -> bool {
        self.refusal.is_none()
            && self.tool_calls.is_empty()
            && matches!(self.finish, None | Some(Finish::Stop))
    }

    /// The job's `result`.
    pub fn to_result(&self) -> Value {
        let mut message = json!({ "role": "assistant", "content": self.text });
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = json!(self.tool_calls);
        }
        if let Some(refusal) = &self.refusal {
            message["refusal"] = json!(refusal);
        }
        if let Some(thinking) = &self.thinking {
            message["thinking"] = json!(thinking);
        }
        let mut result = json!({ "message": message });
        self.add_end(&mut result);
        result
    }

    /// Its log probabilities and why it stopped, beside its text in a result.
    fn add_end(&self, result: &mut Value) {
        if let Some(logprobs) = &self.logprobs {
            result["logprobs"] = logprobs.clone();
        }
        if let Some(finish) = self.finish {
            result["finish_reason"] = json!(finish);
        }
    }

    /// A generate job's `result`: its text and why it stopped.
    pub fn generated_result(&self) -> Value {
        let mut result = json!({ "text": self.text });
        if let Some(thinking) = &self.thinking {
            result["thinking"] = json!(thinking);
        }
        self.add_end(&mut result);
        result
    }

    /// A generate or chat job's `result` read back; `None` when it is neither.
    pub fn from_any_result(result: &Value) -> Option<Self> {
        if let Some(text) = result.get("text").and_then(Value::as_str) {
            let mut reply = Self::text(text, finish_of(result));
            reply.thinking = thinking_of(result);
            reply.logprobs = result.get("logprobs").cloned();
            return Some(reply);
        }
        Self::from_result(result)
    }

    /// What the reply's tokens are estimated from when the provider counted none: its text and
    /// its calls' names and arguments, and its reasoning.
    pub fn written(&self) -> String {
        let mut written = self.text.clone();
        if let Some(thinking) = &self.thinking {
            written.push_str(&thinking.text);
        }
        for call in &self.tool_calls {
            written.push_str(&call.name);
            written.push_str(call.arguments.as_str());
        }
        written
    }

    /// A chat job's `result` read back; `None` when it is not one.
    pub fn from_result(result: &Value) -> Option<Self> {
        let message = result.get("message")?;
        let tool_calls = match message.get("tool_calls") {
            Some(calls) => serde_json::from_value(calls.clone()).ok()?,
            None => Vec::new(),
        };
        Some(Self {
            text: message["content"].as_str().unwrap_or_default().to_owned(),
            tool_calls,
            refusal: message["refusal"].as_str().map(str::to_owned),
            thinking: thinking_of(message),
            logprobs: result.get("logprobs").cloned(),
            finish: finish_of(result),
        })
    }
}

/// The `result` of several replies (a request for more than one answer): the first's, as a
/// reader of one answer reads it, with every reply's under `choices`, in order. `result` makes
/// each reply's (a chat's or a generate's).
pub fn choices_result(replies: &[Reply], result: impl Fn(&Reply) -> Value) -> Value {
    let mut choices: Vec<Value> = replies.iter().map(result).collect();
    let mut first = choices.first().cloned().unwrap_or(Value::Null);
    if choices.len() > 1 {
        first["choices"] = Value::Array(std::mem::take(&mut choices));
    }
    first
}

/// Every reply a generate or chat `result` holds, in order: its `choices`, or itself.
pub fn replies_of(result: &Value) -> Vec<Reply> {
    match result.get("choices").and_then(Value::as_array) {
        Some(choices) => choices.iter().filter_map(Reply::from_any_result).collect(),
        None => Reply::from_any_result(result).into_iter().collect(),
    }
}

/// A result's (or its message's) `thinking`.
fn thinking_of(holder: &Value) -> Option<Thinking> {
    holder
        .get("thinking")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
}

/// A result's `finish_reason`; `None` in a result written before it was kept.
fn finish_of(result: &Value) -> Option<Finish> {
    result
        .get("finish_reason")
        .and_then(|f| serde_json::from_value(f.clone()).ok())
}

/// A call id for a tool call whose provider gave none: made once, when the answer arrives, and
/// kept through the history from then on.
pub fn new_call_id() -> String {
    use rand::Rng as _;
    let random: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("call_{random}")
}

/// A tool call a provider answered, its id made when it gave none.
pub fn answered_call(id: Option<String>, name: String, arguments: Arguments) -> ToolCall {
    ToolCall {
        id: id.filter(|id| !id.is_empty()).unwrap_or_else(new_call_id),
        name,
        arguments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_reply_is_stored_as_the_previous_release_stored_it_plus_its_reason() {
        let reply = Reply::text("Hi", Some(Finish::Stop));
        let result = reply.to_result();
        assert_eq!(
            result,
            json!({ "message": { "role": "assistant", "content": "Hi" }, "finish_reason": "stop" })
        );
        assert_eq!(Reply::from_result(&result), Some(reply));
        let old = json!({ "message": { "role": "assistant", "content": "Hi" } });
        assert_eq!(Reply::from_result(&old), Some(Reply::text("Hi", None)));
    }

    #[test]
    fn a_turn_of_calls_that_stopped_is_a_tool_calls_finish() {
        let call = answered_call(
            None,
            "get_weather".into(),
            Arguments::parse(r#"{"city":"Paris"}"#).expect("JSON"),
        );
        assert!(call.id.starts_with("call_") && call.id.len() > 20);
        let reply = Reply::answered(String::new(), vec![call.clone()], None, Some("stop"));
        assert_eq!(reply.finish, Some(Finish::ToolCalls));
        assert!(!reply.is_checkable());
        let result = reply.to_result();
        assert_eq!(
            result["message"]["tool_calls"][0]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(Reply::from_result(&result), Some(reply));
        let cut = Reply::answered(String::new(), vec![call], None, Some("length"));
        assert_eq!(cut.finish, Some(Finish::Length), "a cut stays a cut");
    }

    #[test]
    fn reasoning_is_kept_with_its_signature_in_chat_and_generate_results() {
        let reply = Reply::answered("4".into(), vec![], None, Some("stop"))
            .with_thinking("2 + 2 is 4.".into(), Some("sig-1".into()));
        let result = reply.to_result();
        assert_eq!(
            result["message"]["thinking"],
            json!({ "text": "2 + 2 is 4.", "signature": "sig-1" })
        );
        assert_eq!(Reply::from_result(&result), Some(reply.clone()));
        let generated = reply.generated_result();
        assert_eq!(generated["thinking"]["text"], "2 + 2 is 4.");
        assert_eq!(Reply::from_any_result(&generated), Some(reply.clone()));
        assert_eq!(
            reply.written(),
            "42 + 2 is 4.",
            "reasoning counts as written"
        );
        let none = Reply::text("4", None).with_thinking(String::new(), None);
        assert_eq!(none.thinking, None, "no reasoning, no part");
    }

    #[test]
    fn several_replies_read_as_the_first_and_each_in_order() {
        let replies = [
            Reply::text("a", Some(Finish::Stop)),
            Reply::text("b", Some(Finish::Length)),
        ];
        let result = choices_result(&replies, Reply::to_result);
        assert_eq!(
            result["message"]["content"], "a",
            "a reader of one reads the first"
        );
        assert_eq!(replies_of(&result), replies);
        let one = choices_result(&replies[..1], Reply::generated_result);
        assert_eq!(
            one,
            json!({ "text": "a", "finish_reason": "stop" }),
            "one is stored as one"
        );
        assert_eq!(replies_of(&one), replies[..1]);
    }

    #[test]
    fn only_whole_answers_of_text_are_checked() {
        assert!(Reply::answered("{}".into(), vec![], None, Some("stop")).is_checkable());
        assert!(!Reply::answered("{".into(), vec![], None, Some("length")).is_checkable());
        assert!(!Reply::answered(String::new(), vec![], Some("No.".into()), None).is_checkable());
    }
}
