//! The OpenAI Batch API under `/openai/v1`: the official `openai` Python package runs a batch per
//! endpoint from upload to output file (`tests/openai/batch_flow.py`); errors come in OpenAI's
//! shape; a cancelled batch's items land in its error file; and OpenAI-style batches and plain
//! ones each stay in their own listing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_core::domain::Role;

use crate::harness::{Options, Stack, client};

/// The Python that has the `openai` package: `TOLLGATE_TEST_PYTHON`, else the virtualenv that
/// `scripts/pyenv` makes (the README's test command runs it first).
pub(crate) fn python() -> PathBuf {
    if let Ok(python) = std::env::var("TOLLGATE_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the openai package at {}: run scripts/pyenv (scripts/test does), or set \
         TOLLGATE_TEST_PYTHON",
        venv.display()
    );
    venv
}

/// Runs `tests/{script}` with the stack's OpenAI base URL and client token, and returns the JSON
/// line it prints last; a script that fails (or outlives `limit`) fails the test with its output.
pub(crate) async fn run_sdk_script(stack: &Stack, script: &str, limit: Duration) -> Value {
    run_sdk_script_with(stack, script, limit, &[]).await
}

/// [`run_sdk_script`] with `env` set for the script besides.
pub(crate) async fn run_sdk_script_with(
    stack: &Stack,
    script: &str,
    limit: Duration,
    env: &[(&str, &str)],
) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(script);
    let run = tokio::process::Command::new(python())
        .arg(path)
        .envs(env.iter().copied())
        .env("TOLLGATE_OPENAI_BASE_URL", stack.url("/openai/v1"))
        .env("TOLLGATE_OLLAMA_HOST", stack.url("/ollama"))
        .env("TOLLGATE_ANTHROPIC_BASE_URL", stack.url("/anthropic"))
        .env("TOLLGATE_TOKEN", &stack.token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("{script} finishes within {limit:?}"))
        .expect("Python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let last = stdout.trim().lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| panic!("{script}'s summary: {stdout}"))
}

/// [`run_sdk_script_with`] trying `models` (`TOLLGATE_MODELS`), within three minutes.
pub(crate) async fn run_sdk_script_for(stack: &Stack, script: &str, models: &[&str]) -> Value {
    let models = models.join(",");
    let env = [("TOLLGATE_MODELS", models.as_str())];
    run_sdk_script_with(stack, script, Duration::from_secs(180), &env).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_package_runs_batches() {
    let stack = Stack::start().await;
    let summary = run_sdk_script(&stack, "openai/batch_flow.py", Duration::from_secs(240)).await;
    assert_eq!(summary["chat"], 5, "{summary}");
    assert_eq!(summary["responses"], 3, "{summary}");
    assert_eq!(summary["embeddings"], 3, "{summary}");
    assert!(summary["listed"].as_u64() >= Some(3), "{summary}");
    assert!(summary["uploads"].as_u64() >= Some(3), "{summary}");
    // What the package ran is billed like any batch: one job per line, each with its usage.
    let billed: i64 = sqlx::query_scalar(
        "select count(*) from jobs where batch_id is not null and status = 'succeeded'
            and prompt_tokens > 0",
    )
    .fetch_one(&stack.pool)
    .await
    .expect("count");
    assert_eq!(billed, 11);
    stack.stop().await;
}

fn line(custom_id: &str, url: &str, body: Value) -> String {
    json!({ "custom_id": custom_id, "method": "POST", "url": url, "body": body }).to_string()
}

fn chat_line(custom_id: &str) -> String {
    line(
        custom_id,
        "/v1/chat/completions",
        json!({ "model": "llama3", "messages": [{ "role": "user", "content": custom_id }] }),
    )
}

pub(crate) async fn upload(
    stack: &Stack,
    token: &str,
    purpose: &str,
    content: String,
) -> reqwest::Response {
    upload_named(stack, token, purpose, content, "input.jsonl").await
}

async fn upload_named(
    stack: &Stack,
    token: &str,
    purpose: &str,
    content: String,
    name: &str,
) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .text("purpose", purpose.to_owned())
        .part(
            "file",
            reqwest::multipart::Part::text(content).file_name(name.to_owned()),
        );
    client()
        .post(stack.url("/openai/v1/files"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("upload")
}

async fn ok(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(status, 200, "{body}");
    body
}

/// An OpenAI error answer: its status and `error` object.
async fn openai_error(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().ok(),
        Some("application/json")
    );
    let body: Value = response.json().await.expect("JSON");
    for key in ["message", "type", "param", "code"] {
        assert!(body["error"].get(key).is_some(), "{key} in {body}");
    }
    body["error"].clone()
}

async fn create_batch(stack: &Stack, body: &Value) -> reqwest::Response {
    stack.post("/openai/v1/batches", body).await
}

fn no_worker() -> Options {
    Options {
        worker: false,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_files_and_requests_get_openai_errors_and_write_nothing() {
    let stack = Stack::with(no_worker()).await;
    let error = openai_error(
        upload(&stack, &stack.token, "fine-tune", chat_line("a")).await,
        400,
    )
    .await;
    assert_eq!(error["param"], "purpose");
    assert_eq!(error["type"], "invalid_request_error");
    let long_name = "n".repeat(256);
    let response = upload_named(&stack, &stack.token, "batch", chat_line("a"), &long_name).await;
    assert_eq!(openai_error(response, 400).await["param"], "file");
    // Not a form at all.
    let error = openai_error(stack.post("/openai/v1/files", &json!({})).await, 400).await;
    assert_eq!(error["code"], "malformed_request");
    let get = json!({ "custom_id": "a", "method": "GET", "url": "/v1/embeddings", "body": {} });
    let content = format!("{}\n{}\n", chat_line("a"), get);
    let error = openai_error(upload(&stack, &stack.token, "batch", content).await, 400).await;
    assert_eq!(error["param"], "file");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("line 2: method")),
        "{error}"
    );
    assert_eq!(stack.rows("files").await, 0);

    let file = ok(upload(
        &stack,
        &stack.token,
        "batch",
        format!("{}\n", chat_line("a")),
    )
    .await)
    .await;
    let file_id = file["id"].as_str().expect("file id");
    let create = |endpoint: &str, window: &str| json!({ "input_file_id": file_id, "endpoint": endpoint, "completion_window": window });
    let error = openai_error(
        create_batch(&stack, &create("/v1/completions", "24h")).await,
        400,
    )
    .await;
    assert_eq!(error["param"], "endpoint");
    let error = openai_error(
        create_batch(&stack, &create("/v1/chat/completions", "1h")).await,
        400,
    )
    .await;
    assert_eq!(error["param"], "completion_window");
    // The file's lines call another endpoint than the batch's.
    let error = openai_error(
        create_batch(&stack, &create("/v1/embeddings", "24h")).await,
        400,
    )
    .await;
    assert_eq!(error["param"], "input_file_id");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("line 1: url")),
        "{error}"
    );
    // Another tenant's file, and no token at all.
    let other = stack.create_token("globex", Role::Client).await;
    let response = client()
        .post(stack.url("/openai/v1/batches"))
        .bearer_auth(&other)
        .json(&create("/v1/chat/completions", "24h"))
        .send()
        .await
        .expect("POST");
    assert_eq!(openai_error(response, 404).await["param"], "input_file_id");
    let response = client()
        .get(stack.url(&format!("/openai/v1/files/{file_id}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        openai_error(response, 401).await["type"],
        "authentication_error"
    );
    let response = stack.get("/openai/v1/fine_tuning/jobs").await;
    assert_eq!(openai_error(response, 404).await["code"], "not_found");
    assert_eq!(stack.rows("batches").await, 0);
    assert_eq!(stack.rows("jobs").await, 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_batch_puts_its_items_in_the_error_file() {
    let stack = Stack::with(no_worker()).await;
    let content = (0..4)
        .map(|i| chat_line(&format!("c{i}")))
        .collect::<Vec<_>>()
        .join("\n");
    let file = ok(upload(&stack, &stack.token, "batch", content).await).await;
    let created = ok(create_batch(
        &stack,
        &json!({ "input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                 "completion_window": "24h" }),
    )
    .await)
    .await;
    let id = created["id"].as_str().expect("batch id");
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["request_counts"]["total"], 4);
    assert_eq!(created["output_file_id"], Value::Null);
    // Not yet ended: its files do not exist yet.
    let errors_file = format!("file-{}-errors", &id["batch_".len()..]);
    let response = stack.get(&format!("/openai/v1/files/{errors_file}")).await;
    openai_error(response, 404).await;

    let response = client()
        .post(stack.url(&format!("/openai/v1/batches/{id}/cancel")))
        .bearer_auth(&stack.token)
        .send()
        .await
        .expect("cancel");
    let cancelled = ok(response).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["request_counts"]["failed"], 4);
    assert_eq!(cancelled["output_file_id"], Value::Null);
    assert_eq!(cancelled["error_file_id"], errors_file.as_str());
    assert!(cancelled["cancelled_at"].is_i64(), "{cancelled}");

    let content = stack
        .get(&format!("/openai/v1/files/{errors_file}/content"))
        .await
        .text()
        .await
        .expect("error file");
    let lines: Vec<Value> = content
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["custom_id"], "c0");
    assert_eq!(lines[3]["error"]["code"], "batch_cancelled");
    assert_eq!(lines[3]["response"], Value::Null);
    let described = ok(stack.get(&format!("/openai/v1/files/{errors_file}")).await).await;
    assert_eq!(described["bytes"], content.len());
    assert_eq!(described["purpose"], "batch_output");

    // The same batch under Tollgate's own API, by its UUID.
    let uuid = uuid::Uuid::try_parse(&id["batch_".len()..]).expect("hex id");
    let own = ok(stack.get(&format!("/v1/batches/{uuid}")).await).await;
    assert_eq!(own["counts"]["cancelled"], 4);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_batches_stay_out_of_the_openai_listing() {
    let stack = Stack::with(no_worker()).await;
    let plain = json!({ "kind": "generate", "model": "llama3",
                        "items": [{ "custom_id": "a", "prompt": "x" }] });
    let response = stack.post("/v1/batches", &plain).await;
    assert_eq!(response.status(), 202);
    let plain: Value = response.json().await.expect("batch");
    let file = ok(upload(&stack, &stack.token, "batch", chat_line("a")).await).await;
    let made = ok(create_batch(
        &stack,
        &json!({ "input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                 "completion_window": "24h", "metadata": { "team": "seo" } }),
    )
    .await)
    .await;
    let listed = ok(stack.get("/openai/v1/batches?limit=10").await).await;
    assert_eq!(listed["object"], "list");
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["data"][0]["id"], made["id"]);
    assert_eq!(listed["data"][0]["metadata"]["team"], "seo");
    assert_eq!(listed["has_more"], false);
    assert_eq!(listed["first_id"], made["id"]);
    let plain_hex = plain["id"].as_str().expect("id").replace('-', "");
    let response = stack
        .get(&format!("/openai/v1/batches/batch_{plain_hex}"))
        .await;
    openai_error(response, 404).await;
    let all = ok(stack.get("/v1/batches").await).await;
    assert_eq!(all["data"].as_array().map(Vec::len), Some(2));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn files_are_listed_in_either_order_and_only_uploads_can_be_deleted() {
    let stack = Stack::with(no_worker()).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let file =
            ok(upload(&stack, &stack.token, "batch", chat_line(&format!("f{i}"))).await).await;
        ids.push(file["id"].as_str().expect("id").to_owned());
    }
    let page = ok(stack.get("/openai/v1/files?order=asc&limit=2").await).await;
    let listed: Vec<&str> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert_eq!(listed, [ids[0].as_str(), ids[1].as_str()]);
    assert_eq!(page["has_more"], true);
    let rest = ok(stack
        .get(&format!("/openai/v1/files?order=asc&after={}", ids[1]))
        .await)
    .await;
    assert_eq!(rest["data"][0]["id"], ids[2].as_str());
    assert_eq!(rest["has_more"], false);
    let outputs = ok(stack.get("/openai/v1/files?purpose=batch_output").await).await;
    assert_eq!(outputs["data"].as_array().map(Vec::len), Some(0));

    // Another tenant can neither see nor delete them.
    let other = stack.create_token("globex", Role::Client).await;
    let theirs = client()
        .get(stack.url("/openai/v1/files"))
        .bearer_auth(&other)
        .send()
        .await
        .expect("list");
    assert_eq!(ok(theirs).await["data"].as_array().map(Vec::len), Some(0));
    let delete = |token: String, id: String| {
        let url = stack.url(&format!("/openai/v1/files/{id}"));
        async move {
            client()
                .delete(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("delete")
        }
    };
    openai_error(delete(other, ids[0].clone()).await, 404).await;
    let deleted = ok(delete(stack.token.clone(), ids[0].clone()).await).await;
    assert_eq!(deleted["deleted"], true);
    openai_error(delete(stack.token.clone(), ids[0].clone()).await, 404).await;
    let generated = format!("file-{}-output", &ids[1]["file-".len()..]);
    let error = openai_error(delete(stack.token.clone(), generated).await, 409).await;
    assert_eq!(error["code"], "generated_file");
    assert_eq!(stack.rows("files").await, 2);
    stack.stop().await;
}
