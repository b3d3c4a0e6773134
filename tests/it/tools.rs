//! Tool calls and structured answers through every surface and provider: the official
//! `openai` and `ollama` Python packages and `langchain-openai` (`tests/openai/tools.py`,
//! `tests/ollama/tools.py`, `tests/openai/langchain_tools.py`), a translation table (Chat
//! Completions, Responses, Ollama, native and Anthropic surfaces × the fleet, OpenAI and an
//! Anthropic account × streamed or not × one or parallel calls, each replayed as history — the
//! sims refuse arguments of the wrong type in a history, as the vendors do), structured answers
//! checked and asked for again, and a batch of structured items.

use serde_json::{Value, json};

use crate::batches::{accepted, ended, post_batch, results, wait_for_batch};
use crate::harness::{Stack, client};
use crate::streaming::{body_of, sse_events};

/// One model on each provider: llama3 on the Ollama sim, gpt-4.1-mini on the OpenAI sim (reached
/// through the fallback), claude-sonnet-4-6 on an Anthropic account.
const MODELS: [&str; 3] = ["llama3", "gpt-4.1-mini", crate::anthropic::CLAUDE];

async fn stack() -> Stack {
    let stack = Stack::start().await;
    stack
        .patch_settings(&json!({ "ai_fallback_provider": "openai" }))
        .await;
    let anthropic = crate::anthropic::anthropic_account(&stack).await;
    // Pieces apart in time, so streamed answers reach the client in more than one piece.
    for sim in [&stack.ollama, &stack.openai, &anthropic] {
        sim.set_knobs(provider_sim::Knobs {
            token_delay_ms: 15,
            ..provider_sim::Knobs::default()
        });
    }
    stack
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_package_calls_tools_and_parses_answers() {
    let stack = stack().await;
    let summary = run_sdk_script_with_models(&stack, "openai/tools.py").await;
    assert_eq!(
        summary["refusals"],
        json!({
            "unoffered_choice": "tool_choice",
            "arguments_not_json": "messages[1].tool_calls[0].function.arguments",
            "unanswered_result": "messages[1].tool_call_id",
            "bad_schema": "response_format.json_schema.schema",
        })
    );
    // Nothing refused was written.
    let refused: i64 = sqlx::query_scalar("select count(*) from jobs where status <> 'succeeded'")
        .fetch_one(&stack.pool)
        .await
        .expect("count");
    assert_eq!(refused, 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ollama_python_package_calls_tools_and_parses_answers() {
    let stack = stack().await;
    let summary = run_sdk_script_with_models(&stack, "ollama/tools.py").await;
    for model in MODELS {
        assert_eq!(summary[model]["call"], "get_weather", "{summary}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn langchain_binds_tools_and_structured_output() {
    let stack = stack().await;
    let summary = run_sdk_script_with_models(&stack, "openai/langchain_tools.py").await;
    for model in MODELS {
        assert_eq!(summary[model]["call"], "get_weather", "{summary}");
        assert!(summary[model]["title"].is_string(), "{summary}");
    }
    stack.stop().await;
}

async fn run_sdk_script_with_models(stack: &Stack, script: &str) -> Value {
    crate::openai_batches::run_sdk_script_for(stack, script, &MODELS).await
}

/// A surface's dialect, as the table drives it.
#[derive(Clone, Copy, Debug)]
enum Surface {
    Chat,
    Responses,
    Ollama,
    Native,
    Anthropic,
}

/// A tool call as a surface answered it: id, name and the arguments' object.
#[derive(Debug)]
struct Called {
    id: String,
    name: String,
    arguments: Value,
}

fn weather() -> Value {
    json!({ "type": "object", "properties": { "city": { "type": "string" },
                                               "units": { "type": "string", "enum": ["c", "f"] } },
            "required": ["city", "units"] })
}

fn clock() -> Value {
    json!({ "type": "object", "properties": { "city": { "type": "string" } },
            "required": ["city"] })
}

impl Surface {
    fn path(self) -> &'static str {
        match self {
            Self::Chat => "/openai/v1/chat/completions",
            Self::Responses => "/openai/v1/responses",
            Self::Ollama => "/ollama/api/chat",
            Self::Native => "/v1/chat",
            Self::Anthropic => "/anthropic/v1/messages",
        }
    }

    fn tools(self) -> Value {
        let tools = [("get_weather", weather()), ("get_time", clock())];
        let tools: Vec<Value> = tools
            .into_iter()
            .map(|(name, parameters)| match self {
                Self::Chat | Self::Ollama => json!({ "type": "function",
                    "function": { "name": name, "parameters": parameters } }),
                Self::Responses => json!({ "type": "function", "name": name,
                                           "parameters": parameters, "strict": false }),
                Self::Native => json!({ "name": name, "parameters": parameters }),
                Self::Anthropic => json!({ "name": name, "input_schema": parameters }),
            })
            .collect();
        json!(tools)
    }

    /// The first turn's messages.
    fn ask(self, text: &str) -> Vec<Value> {
        vec![json!({ "role": "user", "content": text })]
    }

    /// The assistant's calls and their results, appended to the history in the dialect.
    fn replay(self, history: &mut Vec<Value>, calls: &[Called]) {
        match self {
            Self::Chat => {
                let written: Vec<Value> = calls
                    .iter()
                    .map(|c| {
                        json!({ "id": c.id, "type": "function",
                        "function": { "name": c.name, "arguments": c.arguments.to_string() } })
                    })
                    .collect();
                history
                    .push(json!({ "role": "assistant", "content": null, "tool_calls": written }));
                for call in calls {
                    history.push(json!({ "role": "tool", "tool_call_id": call.id,
                                         "content": "18°C" }));
                }
            }
            Self::Responses => {
                for call in calls {
                    history.push(json!({ "type": "function_call", "call_id": call.id,
                        "name": call.name, "arguments": call.arguments.to_string() }));
                }
                for call in calls {
                    history.push(json!({ "type": "function_call_output", "call_id": call.id,
                                         "output": "18°C" }));
                }
            }
            Self::Ollama => {
                let written: Vec<Value> = calls
                    .iter()
                    .map(|c| {
                        json!({ "id": c.id,
                        "function": { "name": c.name, "arguments": c.arguments } })
                    })
                    .collect();
                history.push(json!({ "role": "assistant", "content": "", "tool_calls": written }));
                for call in calls {
                    history.push(json!({ "role": "tool", "tool_name": call.name,
                                         "content": "18°C" }));
                }
            }
            Self::Anthropic => {
                let written: Vec<Value> = calls
                    .iter()
                    .map(|c| {
                        json!({ "type": "tool_use", "id": c.id, "name": c.name,
                                "input": c.arguments })
                    })
                    .collect();
                history.push(json!({ "role": "assistant", "content": written }));
                let results: Vec<Value> = calls
                    .iter()
                    .map(|c| json!({ "type": "tool_result", "tool_use_id": c.id, "content": "18°C" }))
                    .collect();
                history.push(json!({ "role": "user", "content": results }));
            }
            Self::Native => {
                let written: Vec<Value> = calls
                    .iter()
                    .map(|c| {
                        json!({ "type": "tool_call", "id": c.id, "name": c.name,
                                     "arguments": c.arguments.to_string() })
                    })
                    .collect();
                history.push(json!({ "role": "assistant", "content": written }));
                for call in calls {
                    history.push(json!({ "role": "tool", "content": [
                        { "type": "tool_result", "call_id": call.id, "content": "18°C" }] }));
                }
            }
        }
    }

    fn body(self, model: &str, history: &[Value], stream: bool) -> Value {
        let mut body = json!({ "model": model, "tools": self.tools(), "stream": stream });
        match self {
            Self::Responses => body["input"] = json!(history),
            Self::Anthropic => {
                body["messages"] = json!(history);
                body["max_tokens"] = json!(1024);
            }
            _ => body["messages"] = json!(history),
        }
        body
    }

    /// Sends the turn; the calls answered (none for a text) and the text.
    async fn turn(self, stack: &Stack, body: &Value, stream: bool) -> (Vec<Called>, String) {
        let mut request = client()
            .post(stack.url(self.path()))
            .bearer_auth(&stack.token)
            .json(body);
        if matches!(self, Self::Native) && !stream {
            request = request.header("prefer", "wait=20");
        }
        let response = request.send().await.expect("a turn");
        let status = response.status();
        let text = body_of(response).await;
        assert_eq!(status, 200, "{self:?} {body}: {text}");
        match (self, stream) {
            (Self::Chat, false) => chat_answer(&serde_json::from_str(&text).expect("JSON")),
            (Self::Chat, true) => chat_stream(&text),
            (Self::Responses, false) => {
                response_answer(&serde_json::from_str(&text).expect("JSON"))
            }
            (Self::Responses, true) => response_stream(&text),
            (Self::Ollama, _) => ollama_lines(&text),
            (Self::Native, false) => native_job(&serde_json::from_str(&text).expect("JSON")),
            (Self::Native, true) => {
                let (_, job) = sse_events(&text)
                    .into_iter()
                    .rev()
                    .find(|(event, _)| event == "job")
                    .expect("the ended job");
                native_job(&job)
            }
            (Self::Anthropic, false) => {
                anthropic_message(&serde_json::from_str(&text).expect("JSON"))
            }
            (Self::Anthropic, true) => anthropic_stream(&text),
        }
    }
}

fn anthropic_message(body: &Value) -> (Vec<Called>, String) {
    let mut calls = Vec::new();
    let mut text = String::new();
    for block in body["content"].as_array().expect("content") {
        match block["type"].as_str() {
            Some("tool_use") => calls.push(Called {
                id: block["id"].as_str().expect("id").to_owned(),
                name: block["name"].as_str().expect("name").to_owned(),
                arguments: block["input"].clone(),
            }),
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            other => panic!("a block of type {other:?}"),
        }
    }
    let stop = if calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    assert_eq!(body["stop_reason"], stop, "{body}");
    (calls, text)
}

/// Anthropic's events gathered as its SDK does: blocks in order from index 0, never
/// overlapping, each started and stopped, a call's input the concatenation of its
/// `input_json_delta`s.
fn anthropic_stream(body: &str) -> (Vec<Called>, String) {
    let mut blocks: Vec<Value> = Vec::new();
    let mut open: Option<usize> = None;
    let mut stop = Value::Null;
    let mut partial = String::new();
    for (kind, data) in sse_events(body) {
        match kind.as_str() {
            "content_block_start" => {
                assert_eq!(open, None, "blocks do not overlap: {body}");
                let index = usize::try_from(data["index"].as_u64().expect("index")).expect("small");
                assert_eq!(index, blocks.len(), "{body}");
                blocks.push(data["content_block"].clone());
                open = Some(index);
                partial.clear();
            }
            "content_block_delta" => {
                let index = usize::try_from(data["index"].as_u64().expect("index")).expect("small");
                assert_eq!(open, Some(index), "{body}");
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        let more = delta["text"].as_str().unwrap_or_default();
                        let text = format!(
                            "{}{more}",
                            blocks[index]["text"].as_str().unwrap_or_default()
                        );
                        blocks[index]["text"] = json!(text);
                    }
                    Some("input_json_delta") => {
                        partial.push_str(delta["partial_json"].as_str().unwrap_or_default());
                    }
                    other => panic!("a delta of type {other:?}"),
                }
            }
            "content_block_stop" => {
                let index = open.take().expect("a block open");
                if blocks[index]["type"] == "tool_use" {
                    blocks[index]["input"] = object(&partial);
                }
            }
            "message_delta" => stop = data["delta"]["stop_reason"].clone(),
            _ => {}
        }
    }
    assert_eq!(open, None, "every block is stopped: {body}");
    let message = json!({ "content": blocks, "stop_reason": stop });
    anthropic_message(&message)
}

fn object(arguments: &str) -> Value {
    let value: Value = serde_json::from_str(arguments).expect("arguments are JSON");
    assert!(value.is_object(), "{arguments}");
    value
}

fn chat_answer(body: &Value) -> (Vec<Called>, String) {
    let choice = &body["choices"][0];
    let calls: Vec<Called> = choice["message"]["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| Called {
            id: c["id"].as_str().expect("id").to_owned(),
            name: c["function"]["name"].as_str().expect("name").to_owned(),
            arguments: object(c["function"]["arguments"].as_str().expect("a string")),
        })
        .collect();
    let finish = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    assert_eq!(choice["finish_reason"], finish, "{body}");
    let text = choice["message"]["content"].as_str().unwrap_or_default();
    (calls, text.to_owned())
}

/// Chat Completions chunks gathered by index, as the SDKs do: the first fragment of a call has
/// its id and name, and no call is ever written as content.
fn chat_stream(body: &str) -> (Vec<Called>, String) {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let (mut text, mut finish) = (String::new(), Value::Null);
    for (_, chunk) in sse_events(body) {
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        text.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        for piece in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = usize::try_from(piece["index"].as_u64().expect("index")).expect("small");
            if index == calls.len() {
                assert!(
                    piece["id"].is_string() && piece["type"] == "function",
                    "{piece}"
                );
                let name = piece["function"]["name"].as_str().expect("a name first");
                calls.push((
                    piece["id"].as_str().expect("id").to_owned(),
                    name.to_owned(),
                    String::new(),
                ));
            }
            let arguments = piece["function"]["arguments"].as_str().unwrap_or_default();
            calls[index].2.push_str(arguments);
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    let expected = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    assert_eq!(finish, expected, "{body}");
    let calls = calls
        .into_iter()
        .map(|(id, name, arguments)| Called {
            id,
            name,
            arguments: object(&arguments),
        })
        .collect();
    (calls, text)
}

fn response_answer(body: &Value) -> (Vec<Called>, String) {
    let mut calls = Vec::new();
    let mut text = String::new();
    for item in body["output"].as_array().expect("output") {
        match item["type"].as_str() {
            Some("function_call") => calls.push(Called {
                id: item["call_id"].as_str().expect("call_id").to_owned(),
                name: item["name"].as_str().expect("name").to_owned(),
                arguments: object(item["arguments"].as_str().expect("a string")),
            }),
            Some("message") => {
                for part in item["content"].as_array().into_iter().flatten() {
                    text.push_str(part["text"].as_str().unwrap_or_default());
                }
            }
            other => panic!("an output item of type {other:?}"),
        }
    }
    assert_eq!(body["status"], "completed", "{body}");
    (calls, text)
}

/// The Responses stream's events in their order; the answer is the completed response.
fn response_stream(body: &str) -> (Vec<Called>, String) {
    let events = sse_events(body);
    let mut added = 0;
    for (kind, data) in &events {
        if kind == "response.function_call_arguments.delta" {
            assert!(added > 0, "a call's arguments come after its item is added");
        }
        if kind == "response.output_item.added" && data["item"]["type"] == "function_call" {
            added += 1;
        }
    }
    let (last, completed) = events.last().expect("events");
    assert_eq!(last, "response.completed", "{body}");
    response_answer(&completed["response"])
}

fn ollama_lines(body: &str) -> (Vec<Called>, String) {
    let mut calls = Vec::new();
    let mut text = String::new();
    let mut done = None;
    for line in body.lines().filter(|l| !l.is_empty()) {
        let line: Value = serde_json::from_str(line).expect("a JSON line");
        text.push_str(line["message"]["content"].as_str().unwrap_or_default());
        for call in line["message"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let arguments = call["function"]["arguments"].clone();
            assert!(
                arguments.is_object(),
                "Ollama's arguments are an object: {call}"
            );
            calls.push(Called {
                id: call["id"].as_str().expect("an id, made once").to_owned(),
                name: call["function"]["name"].as_str().expect("name").to_owned(),
                arguments,
            });
        }
        if line["done"] == true {
            done = Some(line["done_reason"].clone());
        }
    }
    assert_eq!(done, Some(json!("stop")), "{body}");
    (calls, text)
}

fn native_job(job: &Value) -> (Vec<Called>, String) {
    assert_eq!(job["status"], "succeeded", "{job}");
    let result = &job["result"];
    let calls: Vec<Called> = result["message"]["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| Called {
            id: c["id"].as_str().expect("id").to_owned(),
            name: c["name"].as_str().expect("name").to_owned(),
            arguments: object(c["arguments"].as_str().expect("a string")),
        })
        .collect();
    let finish = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    assert_eq!(result["finish_reason"], finish, "{job}");
    (
        calls,
        result["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_calls_translate_between_every_surface_and_provider_streamed_or_not() {
    let stack = stack().await;
    let surfaces = [
        Surface::Chat,
        Surface::Responses,
        Surface::Ollama,
        Surface::Native,
        Surface::Anthropic,
    ];
    for surface in surfaces {
        for model in MODELS {
            for stream in [false, true] {
                for parallel in [false, true] {
                    let case = format!("{surface:?} {model} stream={stream} parallel={parallel}");
                    let ask = if parallel {
                        "Weather and time in Paris, in parallel please."
                    } else {
                        "What is the weather in Paris?"
                    };
                    let mut history = surface.ask(ask);
                    let body = surface.body(model, &history, stream);
                    let (calls, _) = surface.turn(&stack, &body, stream).await;
                    let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
                    let expected = if parallel {
                        vec!["get_weather", "get_time"]
                    } else {
                        vec!["get_weather"]
                    };
                    assert_eq!(names, expected, "{case}");
                    assert!(calls[0].arguments["city"].is_string(), "{case}: {calls:?}");
                    assert_eq!(calls[0].arguments["units"], "c", "{case}: {calls:?}");
                    let ids: std::collections::HashSet<&str> =
                        calls.iter().map(|c| c.id.as_str()).collect();
                    assert_eq!(ids.len(), calls.len(), "{case}: one id per call");
                    // The history goes back in the dialect; the sims refuse arguments of the
                    // wrong type, so a second turn that answers proves the translation.
                    surface.replay(&mut history, &calls);
                    let body = surface.body(model, &history, stream);
                    let (again, text) = surface.turn(&stack, &body, stream).await;
                    assert!(again.is_empty(), "{case}: {again:?}");
                    assert!(text.contains("18°C"), "{case}: {text}");
                }
            }
        }
    }
    stack.stop().await;
}

/// A native chat asking for a product schema; the job once it ended.
async fn structured_job(stack: &Stack, model: &str, stream: bool) -> reqwest::Response {
    let body = json!({
        "model": model, "stream": stream,
        "messages": [{ "role": "user", "content": "Describe a blue mug." }],
        "output": { "type": "json_schema", "name": "product", "schema": product() },
    });
    let mut request = client()
        .post(stack.url("/v1/chat"))
        .bearer_auth(&stack.token)
        .json(&body);
    if !stream {
        request = request.header("prefer", "wait=20");
    }
    request.send().await.expect("a structured chat")
}

fn product() -> Value {
    json!({ "type": "object",
            "properties": { "title": { "type": "string" },
                            "keywords": { "type": "array", "items": { "type": "string" } } },
            "required": ["title", "keywords"], "additionalProperties": false })
}

/// Both sims spoil their next `answers` structured answers, streaming `delay_ms` apart.
fn spoil(stack: &Stack, answers: u32, delay_ms: u64) {
    for sim in [&stack.ollama, &stack.openai] {
        sim.set_knobs(provider_sim::Knobs {
            invalid_structured: answers,
            token_delay_ms: delay_ms,
            ..provider_sim::Knobs::default()
        });
    }
}

async fn attempts(stack: &Stack, job: &Value) -> Vec<(String, Option<String>, Option<i32>)> {
    let id = uuid::Uuid::parse_str(job["id"].as_str().expect("id")).expect("a uuid");
    sqlx::query_as(
        "select outcome, error_code, completion_tokens from job_attempts
          where job_id = $1 order by started_at",
    )
    .bind(id)
    .fetch_all(&stack.pool)
    .await
    .expect("attempts")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_structured_answer_that_does_not_match_is_asked_for_again_then_fails_by_name() {
    let stack = stack().await;
    // The two sims `spoil` reaches (the Anthropic account's answers are checked the same way).
    for model in [MODELS[0], MODELS[1]] {
        // One bad answer: the second call answers, both recorded and priced.
        spoil(&stack, 1, 0);
        let response = structured_job(&stack, model, false).await;
        assert_eq!(response.status(), 200, "{model}");
        let job: Value = response.json().await.expect("job");
        assert_eq!(job["status"], "succeeded", "{job}");
        let answer: Value =
            serde_json::from_str(job["result"]["message"]["content"].as_str().expect("text"))
                .expect("JSON");
        assert!(
            answer["title"].is_string() && answer["keywords"].is_array(),
            "{answer}"
        );
        let tried = attempts(&stack, &job).await;
        assert_eq!(tried.len(), 2, "{model}: {tried:?}");
        assert_eq!(tried[0].1.as_deref(), Some("invalid_structured_output"));
        assert!(
            tried[0].2 > Some(0),
            "the bad answer's tokens are recorded: {tried:?}"
        );

        // Never a match: three calls (the default bound) on each provider of the chain (llama3's
        // falls back to OpenAI), then the job fails naming the violation.
        spoil(&stack, 100, 0);
        let response = structured_job(&stack, model, false).await;
        let job: Value = response.json().await.expect("job");
        let tried = attempts(&stack, &job).await;
        assert_eq!(job["status"], "failed", "{model}: {job} {tried:?}");
        assert_eq!(job["error"]["code"], "invalid_structured_output", "{job}");
        let message = job["error"]["message"].as_str().expect("a message");
        assert!(
            message.contains("/title"),
            "names the first violation: {message}"
        );
        let tried = attempts(&stack, &job).await;
        assert!(tried.len() >= 3, "{model}: {tried:?}");

        // On the OpenAI surface: a 502 with the code, never a 200 carrying prose.
        let refused = stack
            .post(
                "/openai/v1/chat/completions",
                &json!({ "model": model, "messages": [{ "role": "user", "content": "A mug." }],
                         "response_format": { "type": "json_schema", "json_schema": {
                             "name": "product", "schema": product() } } }),
            )
            .await;
        let status = refused.status();
        let error: Value = refused.json().await.expect("an error");
        assert_eq!(status, 502, "{model}: {error}");
        assert_eq!(
            error["error"]["code"], "invalid_structured_output",
            "{error}"
        );

        // Streamed: checked when it ends; no retry once text went out, the stream ends in error.
        spoil(&stack, 1, 15);
        let response = structured_job(&stack, model, true).await;
        let events = sse_events(&body_of(response).await);
        let (last, data) = events.last().expect("events");
        assert_eq!(last, "job", "{events:?}");
        assert_eq!(data["status"], "failed", "{data}");
        assert_eq!(data["error"]["code"], "invalid_structured_output", "{data}");
        spoil(&stack, 0, 0);
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_structured_items_comes_back_validated_with_the_bad_one_failed_alone() {
    let stack = stack().await;
    let items: Vec<Value> = (0..100)
        .map(|i| {
            // One item's answers never match ("[invalid]" spoils every answer to it).
            let name = if i == 7 {
                "[invalid] mug".to_owned()
            } else {
                format!("mug {i}")
            };
            json!({ "custom_id": format!("sku-{i}"),
                    "messages": [{ "role": "user", "content": format!("Describe {name}.") }] })
        })
        .collect();
    let body = json!({ "kind": "chat", "model": "llama3", "items": items,
                       "output": { "type": "json_schema", "name": "product", "schema": product() } });
    let batch = accepted(post_batch(&stack, &stack.token, &body).await).await;
    let id = batch["id"].as_str().expect("id");
    let done = wait_for_batch(&stack, &stack.token, id, ended).await;
    assert_eq!(done["counts"]["succeeded"], 99, "{done}");
    assert_eq!(done["counts"]["failed"], 1, "{done}");
    for line in results(&stack, &stack.token, id).await {
        if line["custom_id"] == "sku-7" {
            assert_eq!(line["error"]["code"], "invalid_structured_output", "{line}");
            continue;
        }
        let content = line["result"]["message"]["content"].as_str().expect("text");
        let answer: Value = serde_json::from_str(content).expect("JSON");
        assert!(answer["title"].is_string(), "{line}");
    }
    // Each item billed once: one succeeded call per item that answered.
    let billed: i64 = sqlx::query_scalar(
        "select count(*) from job_attempts a join jobs j on j.id = a.job_id
          where j.batch_id is not null and a.outcome = 'succeeded'",
    )
    .fetch_one(&stack.pool)
    .await
    .expect("count");
    assert_eq!(billed, 99);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fallback_carries_the_whole_conversation_tools_and_history_included() {
    let stack = stack().await;
    let alias = stack
        .admin(
            reqwest::Method::PUT,
            "/v1/admin/aliases/assistant",
            &json!({ "routes": { "ollama": "llama3", "openai": "gpt-4.1-mini" } }),
        )
        .await;
    assert_eq!(alias.status(), 200);
    // The first turn runs on Ollama, which gives no call id: Tollgate makes one.
    let surface = Surface::Chat;
    let mut history = surface.ask("What is the weather in Paris?");
    let body = surface.body("assistant", &history, false);
    let (calls, _) = surface.turn(&stack, &body, false).await;
    assert_eq!(stack.openai.calls("/v1/chat/completions"), 0);
    assert!(calls[0].id.starts_with("call_"), "{calls:?}");
    // Ollama fails from now on: the second turn falls back to OpenAI, which is sent the tools
    // and the history in its own form (arguments as a string, the result joined by the made id).
    stack.ollama.set_knobs(provider_sim::Knobs {
        error_rate: 1.0,
        ..provider_sim::Knobs::default()
    });
    surface.replay(&mut history, &calls);
    let body = surface.body("assistant", &history, false);
    let answer = stack.post(surface.path(), &body).await;
    let id = answer.headers()["x-request-id"]
        .to_str()
        .expect("an id")
        .to_owned();
    let (again, text) = chat_answer(&answer.json().await.expect("JSON"));
    assert!(again.is_empty() && text.contains("18°C"), "{text}");
    let job: Value = stack
        .get(&format!("/v1/jobs/{id}"))
        .await
        .json()
        .await
        .expect("job");
    assert_eq!(job["provider"], "openai", "{job}");
    assert_eq!(job["route_reason"], "fallback", "{job}");
    assert_eq!(stack.openai.calls("/v1/chat/completions"), 1);
    stack.stop().await;
}

#[tokio::test]
async fn bad_tools_and_schemas_are_refused_in_each_dialect_and_nothing_is_written() {
    let stack = Stack::start().await;
    let ask = json!([{ "role": "user", "content": "Weather?" }]);
    let native = [
        (
            json!({ "model": "llama3", "messages": ask, "tool_choice": { "tool": "launch" },
                    "tools": [{ "name": "get_weather", "parameters": weather() }] }),
            "tool_choice",
        ),
        (
            json!({ "model": "llama3", "messages": ask,
                    "output": { "type": "json_schema", "name": "p", "schema": { "type": 7 } } }),
            "output.schema",
        ),
        (
            json!({ "model": "llama3", "messages": ask,
                    "tools": [{ "name": "get_weather", "parameters": weather() },
                              { "name": "get_weather", "parameters": clock() }] }),
            "tools[1].name",
        ),
        (
            json!({ "model": "llama3", "messages": [
                { "role": "user", "content": "Weather?" },
                { "role": "tool", "content": [{ "type": "tool_result", "call_id": "c9",
                                                "content": "18°C" }] }] }),
            "messages[1].tool_call_id",
        ),
    ];
    for (body, field) in native {
        let refused = stack.post("/v1/chat", &body).await;
        assert_eq!(refused.status(), 422, "{body}");
        let problem: Value = refused.json().await.expect("a problem");
        assert_eq!(problem["field"], field, "{problem}");
    }
    let generate = json!({ "model": "llama3", "prompt": "A mug",
        "output": { "type": "json_schema", "name": "p", "schema": { "$ref": "https://example.com/s" } } });
    let refused = stack.post("/v1/generate", &generate).await;
    assert_eq!(refused.status(), 422);
    let ollama = [
        json!({ "model": "llama3", "messages": ask, "format": { "type": 7 }, "stream": false }),
        json!({ "model": "llama3", "stream": false, "messages": [
            { "role": "user", "content": "Weather?" },
            { "role": "tool", "tool_name": "get_weather", "content": "18°C" }] }),
    ];
    for body in ollama {
        let refused = stack.post("/ollama/api/chat", &body).await;
        assert_eq!(refused.status(), 400, "{body}");
        let error: Value = refused.json().await.expect("Ollama's error");
        assert!(error["error"].is_string(), "{error}");
    }
    assert_eq!(stack.rows("jobs").await, 0, "nothing was written");
    stack.stop().await;
}
