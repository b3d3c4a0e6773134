//! Several choices and log probabilities: `n` on Chat Completions answered with `n` choices from
//! both providers (Ollama called once a choice, billed as called; OpenAI asked for `n`), and
//! `logprobs` / `top_logprobs` passed through where the upstream gives them, whole and streamed,
//! on the OpenAI and Ollama surfaces; what cannot be honoured refused by name.

use serde_json::{Value, json};

use tollgate_core::domain::SettingsChange;

use crate::harness::{Stack, with_openai_fallback};

/// One model routed to Ollama, one to OpenAI.
const MODELS: [&str; 2] = ["llama3", "gpt-4.1-mini"];

async fn stack() -> Stack {
    Stack::with(with_openai_fallback(SettingsChange::default())).await
}

async fn run_script(stack: &Stack, script: &str) -> Value {
    crate::openai_batches::run_sdk_script_for(stack, script, &MODELS).await
}

fn text<'a>(seen: &'a Value, field: &str) -> &'a str {
    seen[field].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_package_gets_choices_and_log_probabilities() {
    let stack = stack().await;
    let summary = run_script(&stack, "openai/choices.py").await;
    for model in MODELS {
        let seen = &summary["seen"][model];
        let choices = seen["choices"].as_array().expect("choices");
        assert_eq!(choices.len(), 2, "{model}: {seen}");
        assert_ne!(choices[0], choices[1], "each choice its own answer: {seen}");
        // The tokens are the text, each with its alternatives, whole and streamed.
        assert_eq!(text(seen, "tokens"), text(seen, "text"), "{model}: {seen}");
        assert_eq!(seen["alternatives"], json!([2]), "{model}: {seen}");
        assert_eq!(seen["all_negative"], true);
        assert_eq!(
            text(seen, "streamed_tokens"),
            text(seen, "streamed_text"),
            "{model}: {seen}"
        );
        assert!(!text(seen, "streamed_text").is_empty());
        assert_eq!(seen["plain_logprobs"], true, "none unasked: {seen}");
    }
    // Ollama answers one choice a call, each billed; OpenAI reads the prompt once.
    let ollama = &summary["seen"]["llama3"];
    assert_eq!(
        ollama["two_prompt_tokens"].as_i64(),
        ollama["one_prompt_tokens"].as_i64().map(|one| 2 * one),
        "{ollama}"
    );
    let openai = &summary["seen"]["gpt-4.1-mini"];
    assert_eq!(openai["two_prompt_tokens"], openai["one_prompt_tokens"]);
    assert_eq!(
        summary["refusals"],
        json!({ "n_streamed": "n", "n_too_many": "n", "top_alone": "top_logprobs",
                "top_too_many": "top_logprobs" })
    );
    // The native job holds both answers: the first as a reader of one reads it, and both.
    let kept: Value = sqlx::query_scalar(
        "select result from jobs where request->'options'->>'n' = '2' and provider = 'local'",
    )
    .fetch_one(&stack.pool)
    .await
    .expect("the Ollama job asking for two");
    assert_eq!(kept["choices"].as_array().map(Vec::len), Some(2), "{kept}");
    assert_eq!(kept["message"], kept["choices"][0]["message"]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ollama_python_package_gets_log_probabilities() {
    let stack = stack().await;
    let summary = run_script(&stack, "ollama/choices.py").await;
    for model in MODELS {
        let seen = &summary["seen"][model];
        assert!(!text(seen, "text").is_empty(), "{model}: {seen}");
        assert_eq!(text(seen, "tokens"), text(seen, "text"), "{model}: {seen}");
        assert_eq!(seen["alternatives"], json!([3]), "{model}: {seen}");
        assert_eq!(
            text(seen, "streamed_tokens"),
            text(seen, "streamed_text"),
            "{model}: {seen}"
        );
        assert_eq!(
            text(seen, "generated_tokens"),
            text(seen, "generated"),
            "{model}: {seen}"
        );
    }
    stack.stop().await;
}
