//! The bodies of OpenAI API requests: Chat Completions (for OpenAI itself or, in its
//! [`Dialect::Compatible`] form, an OpenAI-compatible server's) and the Responses API, with the
//! call's reasoning.

use serde_json::{Value, json};

use super::error::ProviderError;
use super::openai_messages;
use crate::domain::conversation::{OutputFormat, Part};
use crate::domain::{GenerationOptions, JobRequest, Reasoning};

/// Which OpenAI API a client writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI's own: the Responses API where it serves best, `max_completion_tokens`.
    OpenAi,
    /// The subset OpenAI-compatible servers share (see `openai`'s docs).
    Compatible,
}

/// The Responses API's `reasoning`, when the call asks for a level (or none).
pub(super) fn add_reasoning(body: &mut Value, reasoning: Option<Reasoning>) {
    if let Some(effort) = reasoning.and_then(Reasoning::to_openai) {
        body["reasoning"] = json!({ "effort": effort });
    }
}

/// A generate or chat job as a Chat Completions body (not streamed).
pub(super) fn chat_completions_body(
    request: &JobRequest,
    model: &str,
    reasoning: Option<Reasoning>,
    dialect: Dialect,
) -> Result<Value, ProviderError> {
    let default = GenerationOptions::default();
    let (messages, o, format) = match request {
        JobRequest::Generate(r) => {
            let mut messages = Vec::new();
            if let Some(system) = &r.options.system {
                messages.push(json!({ "role": "system", "content": system }));
            }
            let mut prompt = json!({ "role": "user", "content": r.prompt });
            if !r.images.is_empty() {
                let mut parts = vec![Part::Text {
                    text: r.prompt.clone(),
                }];
                parts.extend(r.images.iter().cloned().map(Part::Image));
                prompt["content"] = openai_messages::content_parts(&parts)?;
            }
            messages.push(prompt);
            (
                messages,
                &r.options,
                openai_messages::response_format(&r.output),
            )
        }
        JobRequest::Chat(r) => (
            openai_messages::messages(&r.conversation)?,
            &r.options,
            openai_messages::response_format(&r.conversation.output),
        ),
        JobRequest::Embedding(_) => (Vec::new(), &default, None),
    };
    let mut body = json!({ "model": model, "messages": messages });
    if let JobRequest::Chat(r) = request {
        openai_messages::add_tools(&mut body, &r.conversation);
    }
    if let Some(t) = o.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = o.top_p {
        body["top_p"] = json!(p);
    }
    if let Some(m) = o.max_tokens {
        // OpenAI's reasoning models take only the new name; compatible servers know the old one.
        let field = match dialect {
            Dialect::OpenAi => "max_completion_tokens",
            Dialect::Compatible => "max_tokens",
        };
        body[field] = json!(m);
    }
    if let Some(seed) = o.seed {
        body["seed"] = json!(seed);
    }
    if let Some(stop) = &o.stop {
        body["stop"] = json!(stop);
    }
    if let Some(format) = format {
        body["response_format"] = format;
    }
    if let Some(effort) = reasoning.and_then(Reasoning::to_openai) {
        body["reasoning_effort"] = json!(effort);
    }
    if let Some(n) = o.n.filter(|&n| n > 1) {
        body["n"] = json!(n);
    }
    if let Some(top) = o.logprobs {
        body["logprobs"] = json!(true);
        body["top_logprobs"] = json!(top);
    }
    Ok(body)
}

pub(super) fn responses_body(
    model: &str,
    input: Value,
    o: &GenerationOptions,
    output: &OutputFormat,
) -> Value {
    let mut body = json!({ "model": model, "input": input });
    if let Some(t) = o.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = o.top_p {
        body["top_p"] = json!(p);
    }
    if let Some(m) = o.max_tokens {
        body["max_output_tokens"] = json!(m);
    }
    if let Some(format) = openai_messages::text_format(output) {
        body["text"] = json!({ "format": format });
    }
    body
}
