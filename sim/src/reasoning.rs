//! Reasoning as the vendors do it: a thinking Ollama model thinks unless told `think: false`
//! (and refuses `think` when it cannot), OpenAI's reasoning models count reasoning tokens in the
//! completion (`completion_tokens_details.reasoning_tokens`) and refuse nothing, its other models
//! refuse `reasoning_effort` with a 400 naming the parameter, and an OpenAI-compatible reasoner
//! (`deepseek-reasoner`) writes its reasoning as `reasoning_content`.
//!
//! What the sim "thinks" names the level it was asked for, so a test sees which level arrived.

use serde_json::Value;

/// The level an Ollama `think` asks for: `None` when it switches thinking off; `default` when
/// left out or `true` (a thinking model thinks by default).
pub fn ollama_level(think: Option<&Value>) -> Option<String> {
    match think {
        None | Some(Value::Null | Value::Bool(true)) => Some("default".to_owned()),
        Some(Value::Bool(false)) => None,
        Some(Value::String(level)) => Some(level.clone()),
        Some(other) => Some(other.to_string()),
    }
}

/// Whether an Ollama `think` asks for thinking in so many words (`true` or a level).
pub fn ollama_asked(think: Option<&Value>) -> bool {
    matches!(think, Some(Value::Bool(true) | Value::String(_)))
}

/// Whether an OpenAI model reasons.
pub fn openai_reasons(model: &str) -> bool {
    model.starts_with("o4") || model.starts_with("gpt-5") || model.ends_with("-reasoner")
}

/// Whether an OpenAI-compatible model writes its reasoning out (`reasoning_content`).
pub fn openai_writes_reasoning(model: &str) -> bool {
    model.ends_with("-reasoner")
}

/// The level an OpenAI `reasoning_effort` asks for: `None` for `none`; `medium` (the default)
/// when left out.
pub fn openai_level(effort: Option<&str>) -> Option<String> {
    match effort {
        Some("none") => None,
        Some(level) => Some(level.to_owned()),
        None => Some("medium".to_owned()),
    }
}

/// What the model thinks about `input` at `level`.
pub fn thought(input: &str, level: &str) -> String {
    let words = input.split_whitespace().count();
    format!("Reasoning at {level} effort about {words} words before answering.")
}
