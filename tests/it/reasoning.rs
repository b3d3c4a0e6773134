//! Reasoning through every surface: `reasoning_effort` (Chat Completions), `reasoning`
//! (Responses) and Ollama's `think` asked of a thinking model on Ollama, of OpenAI's reasoning
//! model, of an OpenAI model that cannot reason and of an OpenAI-compatible reasoner; the
//! reasoning comes back where each dialect puts it, whole and streamed, with its tokens counted
//! (`completion_tokens_details.reasoning_tokens`);
//! a model that cannot reason answers without it (the job says so, never a 400); and a thinking
//! model is told `think: false` when nothing was asked.

use serde_json::{Value, json};

use tollgate_core::domain::SettingsChange;

use crate::harness::{Stack, eventually, with_openai_fallback};
use crate::images::submit;

/// A thinking model on Ollama, OpenAI's reasoning model, an OpenAI model that cannot reason, an
/// OpenAI-compatible reasoner.
const OPENAI_MODELS: [&str; 4] = ["qwen3", "o4-mini", "gpt-4.1-mini", "deepseek-reasoner"];
/// A thinking model and one that cannot think, both on Ollama.
const OLLAMA_MODELS: [&str; 2] = ["qwen3", "llama3"];

/// A stack whose Ollama host has a thinking `qwen3`, listed, and which falls back to OpenAI.
async fn stack() -> Stack {
    let stack = Stack::with(with_openai_fallback(SettingsChange::default())).await;
    stack
        .ollama
        .install("qwen3:latest", Some(&["completion", "tools", "thinking"]));
    for (alias, routes) in [
        ("qwen3", json!({ "ollama": "qwen3" })),
        ("o4-mini", json!({ "openai": "o4-mini" })),
        (
            "deepseek-reasoner",
            json!({ "openai": "deepseek-reasoner" }),
        ),
    ] {
        let path = format!("/v1/admin/aliases/{alias}");
        let body = json!({ "routes": routes });
        let response = stack.admin(reqwest::Method::PUT, &path, &body).await;
        assert_eq!(response.status(), 200, "{alias}");
    }
    eventually("qwen3 is served by the fleet", || async {
        let body = json!({ "model": "qwen3", "messages": [{ "role": "user", "content": "Hi" }] });
        // Answered within the wait it prefers; until the fleet has listed qwen3, the job falls
        // back to OpenAI, which has no such model.
        let (_, job) = submit(&stack, &body).await;
        job["status"] == "succeeded"
    })
    .await;
    stack
}

fn text<'a>(seen: &'a Value, field: &str) -> &'a str {
    seen[field].as_str().unwrap_or_default()
}

/// Whether the job ran without the reasoning it asked for, as its result says.
async fn dropped(stack: &Stack, id: &str) -> bool {
    let job: Value = stack
        .get(&format!("/v1/jobs/{id}"))
        .await
        .json()
        .await
        .expect("job");
    job["result"]["reasoning_dropped"] == json!(true)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_package_asks_for_reasoning() {
    let stack = stack().await;
    let summary =
        crate::openai_batches::run_sdk_script_for(&stack, "openai/reasoning.py", &OPENAI_MODELS)
            .await;
    let seen = |model: &str| summary["seen"][model].clone();
    // A thinking model on Ollama: each level arrives as Ollama's `think` and its reasoning comes
    // back as `reasoning_content` and a Responses reasoning item; asked nothing, it is told not
    // to think.
    let qwen3 = seen("qwen3");
    assert!(text(&qwen3, "whole").contains("at high effort"), "{qwen3}");
    assert!(
        text(&qwen3, "streamed").contains("at low effort"),
        "{qwen3}"
    );
    assert_eq!(qwen3["output"], json!(["reasoning", "message"]), "{qwen3}");
    assert!(
        text(&qwen3, "summary").contains("at medium effort"),
        "{qwen3}"
    );
    assert_eq!(
        qwen3["plain"],
        Value::Null,
        "think: false was sent: {qwen3}"
    );
    // Ollama counts no reasoning tokens apart: they are estimated from the thinking's text.
    assert!(qwen3["reasoning_tokens"].as_i64() > Some(0), "{qwen3}");
    assert!(!dropped(&stack, text(&qwen3, "minimal_job")).await);
    // OpenAI's reasoning model counts its reasoning and shows none (its reasoning item, with
    // neither summary nor encrypted content, says nothing).
    let o4 = seen("o4-mini");
    assert_eq!(
        (o4["whole"].clone(), text(&o4, "streamed")),
        (Value::Null, "")
    );
    assert_eq!(o4["output"], json!(["message"]), "{o4}");
    for counted in ["reasoning_tokens", "responses_reasoning_tokens"] {
        assert!(o4[counted].as_i64() > Some(0), "{counted}: {o4}");
    }
    // An OpenAI model that cannot reason answers without it, and its job says so.
    let plain = seen("gpt-4.1-mini");
    assert_eq!(plain["whole"], Value::Null, "{plain}");
    assert_eq!(plain["output"], json!(["message"]), "{plain}");
    assert_eq!(plain["reasoning_tokens"], 0, "{plain}");
    assert!(
        dropped(&stack, text(&plain, "minimal_job")).await,
        "{plain}"
    );
    // An OpenAI-compatible reasoner writes its reasoning out, whole and streamed.
    let reasoner = seen("deepseek-reasoner");
    assert!(
        text(&reasoner, "whole").contains("at high effort"),
        "{reasoner}"
    );
    assert!(
        text(&reasoner, "streamed").contains("at low effort"),
        "{reasoner}"
    );
    assert_eq!(
        reasoner["output"],
        json!(["reasoning", "message"]),
        "{reasoner}"
    );
    assert!(
        text(&reasoner, "summary").contains("at medium effort"),
        "{reasoner}"
    );
    // An effort that does not exist is refused by name.
    assert_eq!(summary["refused"]["param"], "reasoning_effort", "{summary}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ollama_python_package_thinks() {
    let stack = stack().await;
    let summary =
        crate::openai_batches::run_sdk_script_for(&stack, "ollama/reasoning.py", &OLLAMA_MODELS)
            .await;
    let qwen3 = summary["seen"]["qwen3"].clone();
    assert!(
        text(&qwen3, "whole").contains("at default effort"),
        "{qwen3}"
    );
    assert!(
        text(&qwen3, "streamed").contains("at high effort"),
        "{qwen3}"
    );
    assert!(
        text(&qwen3, "generated").contains("at default effort"),
        "{qwen3}"
    );
    // Asked nothing, the thinking model was told not to think: no thinking, and none billed.
    assert_eq!(qwen3["plain"], Value::Null, "{qwen3}");
    assert!(
        qwen3["plain_tokens"].as_i64() < qwen3["whole_tokens"].as_i64(),
        "{qwen3}"
    );
    assert!(
        !text(&qwen3, "again").is_empty(),
        "the thinking sent back was taken"
    );
    // A model that cannot think answers without thinking, never a 400, and its jobs say so.
    let llama3 = summary["seen"]["llama3"].clone();
    for way in ["whole", "generated", "plain"] {
        assert_eq!(llama3[way], Value::Null, "{way}: {llama3}");
    }
    assert_eq!(text(&llama3, "streamed"), "", "{llama3}");
    let said: Vec<bool> = sqlx::query_scalar(
        "select coalesce((result->>'reasoning_dropped')::boolean, false) from jobs
          where model = 'llama3' and request->'options' ? 'reasoning' order by id",
    )
    .fetch_all(&stack.pool)
    .await
    .expect("llama3's jobs");
    assert_eq!(
        said, [true; 4],
        "each job that asked for thinking says it was dropped"
    );
    stack.stop().await;
}

/// A surface's dialect, as the reasoning table drives it.
#[derive(Clone, Copy, Debug)]
enum Surface {
    Chat,
    Responses,
    Ollama,
    Native,
}

impl Surface {
    /// A request asking for `high` reasoning in the surface's words.
    fn request(self, model: &str, stream: bool) -> (&'static str, Value) {
        let ask = json!([{ "role": "user", "content": "Why is the sea salty?" }]);
        match self {
            Self::Chat => (
                "/openai/v1/chat/completions",
                json!({ "model": model, "messages": ask, "reasoning_effort": "high",
                        "stream": stream }),
            ),
            Self::Responses => (
                "/openai/v1/responses",
                json!({ "model": model, "input": ask, "reasoning": { "effort": "high" },
                        "stream": stream }),
            ),
            Self::Ollama => (
                "/ollama/api/chat",
                json!({ "model": model, "messages": ask, "think": "high", "stream": stream }),
            ),
            Self::Native => (
                "/v1/chat",
                json!({ "model": model, "messages": ask, "options": { "reasoning": "high" },
                        "stream": stream }),
            ),
        }
    }

    /// The reasoning and the text an answer holds, where the dialect puts them.
    fn read(self, body: &str, stream: bool) -> (String, String) {
        let whole = || serde_json::from_str::<Value>(body).expect("JSON");
        let events = || crate::streaming::sse_events(body);
        let owned = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        match (self, stream) {
            (Self::Chat, false) => {
                let message = &whole()["choices"][0]["message"];
                (
                    owned(&message["reasoning_content"]),
                    owned(&message["content"]),
                )
            }
            (Self::Chat, true) => events().iter().fold(Default::default(), |(r, t), (_, c)| {
                let delta = &c["choices"][0]["delta"];
                (
                    r + delta["reasoning_content"].as_str().unwrap_or_default(),
                    t + delta["content"].as_str().unwrap_or_default(),
                )
            }),
            (Self::Responses, false) => response_output(&whole()["output"]),
            (Self::Responses, true) => {
                let streamed =
                    events()
                        .iter()
                        .fold(String::new(), |r, (name, e)| match name.as_str() {
                            "response.reasoning_summary_text.delta" => {
                                r + e["delta"].as_str().unwrap_or_default()
                            }
                            _ => r,
                        });
                let completed = events()
                    .into_iter()
                    .find(|(name, _)| name == "response.completed")
                    .expect("completed");
                let (summary, text) = response_output(&completed.1["response"]["output"]);
                assert_eq!(streamed, summary, "the deltas add up to the item");
                (summary, text)
            }
            (Self::Ollama, false) => {
                let message = &whole()["message"];
                (owned(&message["thinking"]), owned(&message["content"]))
            }
            (Self::Ollama, true) => body.lines().fold(Default::default(), |(r, t), line| {
                let line: Value = serde_json::from_str(line).expect("an NDJSON line");
                (
                    r + line["message"]["thinking"].as_str().unwrap_or_default(),
                    t + line["message"]["content"].as_str().unwrap_or_default(),
                )
            }),
            (Self::Native, false) => {
                let message = &whole()["result"]["message"];
                (
                    owned(&message["thinking"]["text"]),
                    owned(&message["content"]),
                )
            }
            (Self::Native, true) => {
                events()
                    .iter()
                    .fold(Default::default(), |(r, t), (name, e)| {
                        match name.as_str() {
                            "thinking" => (r + e["text"].as_str().unwrap_or_default(), t),
                            "delta" => (r, t + e["text"].as_str().unwrap_or_default()),
                            _ => (r, t),
                        }
                    })
            }
        }
    }
}

/// A Responses output's reasoning summary (its item first) and message text.
fn response_output(output: &Value) -> (String, String) {
    let items = output.as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["type"].as_str()).collect();
    assert_eq!(kinds, ["reasoning", "message"], "{output}");
    let summary = items[0]["summary"][0]["text"].as_str().unwrap_or_default();
    let text = items[1]["content"][0]["text"].as_str().unwrap_or_default();
    (summary.to_owned(), text.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn reasoning_translates_between_every_surface_and_provider_streamed_or_not() {
    let stack = stack().await;
    let surfaces = [
        Surface::Chat,
        Surface::Responses,
        Surface::Ollama,
        Surface::Native,
    ];
    // A thinking model on Ollama, and an OpenAI-compatible reasoner.
    for model in ["qwen3", "deepseek-reasoner"] {
        for surface in surfaces {
            for stream in [false, true] {
                let case = format!("{surface:?} {model} stream={stream}");
                let (path, body) = surface.request(model, stream);
                let mut request = crate::harness::client()
                    .post(stack.url(path))
                    .bearer_auth(&stack.token)
                    .json(&body);
                if matches!(surface, Surface::Native) && !stream {
                    request = request.header("prefer", "wait=20");
                }
                let response = request.send().await.expect("a call");
                let status = response.status();
                let text = crate::streaming::body_of(response).await;
                assert_eq!(status, 200, "{case}: {text}");
                let (reasoning, answer) = surface.read(&text, stream);
                assert!(reasoning.contains("at high effort"), "{case}: {text}");
                assert!(!answer.is_empty(), "{case}: {text}");
            }
        }
    }
    stack.stop().await;
}
