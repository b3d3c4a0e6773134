//! The `tollgate` CLI against a running stack: submit a JSONL file, follow it to the end and write
//! its results; status, results and cancel by id; refusals reported with what the api said.

use std::path::PathBuf;

use clap::Parser as _;
use serde_json::Value;
use tollgate_cli::{BatchCommand, Cli, CliError, Command, EXIT_ITEMS_FAILED};

use crate::harness::{Stack, idle};

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(extension: &str) -> Self {
        let name = format!("tollgate-cli-{}.{extension}", uuid::Uuid::now_v7().simple());
        Self(std::env::temp_dir().join(name))
    }

    fn with(content: &str) -> Self {
        let file = Self::new("jsonl");
        std::fs::write(&file.0, content).expect("write the input");
        file
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn items(count: usize) -> String {
    (0..count)
        .map(|i| format!("{{\"custom_id\": \"sku-{i}\", \"prompt\": \"Describe product {i}\"}}\n"))
        .collect()
}

/// Runs `tollgate --url … --token … ARGS`: its exit status and what it wrote to stdout.
async fn tollgate(stack: &Stack, args: &[&str]) -> (Result<u8, CliError>, String) {
    let mut argv = vec!["tollgate", "--url", &stack.api_url, "--token", &stack.token];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("the arguments parse");
    let mut stdout = Vec::new();
    let status = tollgate_cli::run(cli, &mut stdout).await;
    (status, String::from_utf8(stdout).expect("UTF-8 output"))
}

/// The batch id in `batch <id> accepted: …`.
fn accepted_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("batch ")?.split_once(" accepted: "))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("no accepted batch in {stdout:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_submits_a_file_follows_it_and_writes_the_results() {
    let stack = Stack::start().await;
    let input = TempFile::with(&items(40));
    let out = TempFile::new("jsonl");
    let (status, stdout) = tollgate(
        &stack,
        &[
            "batch",
            "submit",
            input.path(),
            "--model",
            "llama3",
            "--wait",
            "--out",
            out.path(),
        ],
    )
    .await;
    assert_eq!(status.expect("submitted"), 0, "{stdout}");
    let id = accepted_id(&stdout);
    assert!(
        stdout.contains(&format!("batch {id} accepted: 40 items")),
        "{stdout}"
    );
    assert!(
        stdout.contains("completed: 40 items · 40 succeeded · 0 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("40 results written to {}", out.path())),
        "{stdout}"
    );
    let results: Vec<Value> = std::fs::read_to_string(&out.0)
        .expect("results file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(results.len(), 40);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["custom_id"], format!("sku-{i}"));
        assert_eq!(result["status"], "succeeded", "{result}");
        assert!(
            result["result"]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        );
    }

    let (status, stdout) = tollgate(&stack, &["batch", "status", &id, "--json"]).await;
    assert_eq!(status.expect("status"), 0);
    let batch: Value = serde_json::from_str(&stdout).expect("batch JSON");
    assert_eq!(batch["counts"]["succeeded"], 40);
    let (status, stdout) = tollgate(&stack, &["batch", "results", &id]).await;
    assert_eq!(status.expect("results"), 0);
    assert_eq!(stdout.lines().count(), 40);
    assert!(stdout.starts_with("{\"custom_id\":\"sku-0\""), "{stdout}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_cancels_and_reports_what_the_api_refused() {
    let stack = Stack::with(idle()).await;
    let input = TempFile::with(&items(5));
    let (status, stdout) = tollgate(
        &stack,
        &[
            "batch",
            "submit",
            input.path(),
            "--model",
            "llama3",
            "--kind",
            "generate",
        ],
    )
    .await;
    assert_eq!(status.expect("submitted"), 0);
    let id = accepted_id(&stdout);
    let (status, stdout) = tollgate(&stack, &["batch", "status", &id]).await;
    assert_eq!(status.expect("status"), 0);
    assert!(stdout.contains("in_progress: 5 items"), "{stdout}");
    assert!(stdout.contains("5 waiting"), "{stdout}");

    let (status, stdout) = tollgate(&stack, &["batch", "cancel", &id]).await;
    assert_eq!(status.expect("cancel"), 0);
    assert!(stdout.contains("cancelled: 5 items"), "{stdout}");
    assert!(stdout.contains("5 cancelled"), "{stdout}");
    // Waiting for a batch that ended with cancelled items says so in its exit status.
    let (status, _) = tollgate(&stack, &["batch", "wait", &id]).await;
    assert_eq!(status.expect("wait"), EXIT_ITEMS_FAILED);

    let broken =
        TempFile::with("{\"custom_id\": \"a\", \"prompt\": \"x\"}\n{\"custom_id\": \"b\"\n");
    let (status, _) = tollgate(
        &stack,
        &["batch", "submit", broken.path(), "--model", "llama3"],
    )
    .await;
    match status {
        Err(CliError::Refused { status, detail, .. }) => {
            assert_eq!(status, 400);
            assert!(detail.contains("line 2, column"), "{detail}");
            assert!(!detail.contains("line 1"), "one line number only: {detail}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let (status, _) = tollgate(
        &stack,
        &[
            "batch",
            "submit",
            "/nonexistent/items.jsonl",
            "--model",
            "llama3",
        ],
    )
    .await;
    assert!(
        matches!(&status, Err(CliError::Usage(m)) if m.contains("/nonexistent/items.jsonl")),
        "{status:?}"
    );
    let (status, _) = tollgate(&stack, &["batch", "status", "not-a-batch"]).await;
    assert!(
        matches!(&status, Err(CliError::Refused { status, detail, .. })
                 if *status == 404 && !detail.contains("address")),
        "{status:?}"
    );
    let tokenless = Cli {
        url: stack.api_url.clone(),
        token: None,
        command: Command::Batch(BatchCommand::Status { id, json: false }),
    };
    let status = tollgate_cli::run(tokenless, &mut Vec::new()).await;
    assert!(matches!(status, Err(CliError::Usage(_))), "{status:?}");
    stack.stop().await;
}

/// Runs the CLI with `argv` as given (no URL or token added).
async fn tollgate_raw(argv: &[&str]) -> Result<u8, CliError> {
    let cli = Cli::try_parse_from(argv).expect("the arguments parse");
    tollgate_cli::run(cli, &mut Vec::new()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_says_what_is_wrong_with_its_file_url_or_token() {
    let stack = Stack::with(idle()).await;
    let submit = |url: &str, token: &str, file: &str| {
        let argv = [
            "tollgate", "--url", url, "--token", token, "batch", "submit", file, "--model",
            "llama3",
        ]
        .map(str::to_owned);
        async move { tollgate_raw(&argv.each_ref().map(String::as_str)).await }
    };
    let input = TempFile::with(&items(2));
    let directory = std::env::temp_dir();
    let directory = directory.to_str().expect("a UTF-8 path");

    let status = submit(&stack.api_url, &stack.token, directory).await;
    assert!(
        matches!(&status, Err(CliError::Usage(m)) if m.contains("directory") && m.contains(directory)),
        "{status:?}"
    );
    // Nothing listens on port 1: the cause is said, not just that it failed.
    let status = submit("http://127.0.0.1:1", &stack.token, input.path()).await;
    assert!(
        matches!(&status, Err(CliError::Unreachable { cause, .. }) if cause.contains("refused")),
        "{status:?}"
    );
    let status = submit(&stack.url("/v1"), &stack.token, input.path()).await;
    assert!(
        matches!(&status, Err(CliError::Refused { status, detail, .. })
                 if *status == 404 && detail.contains("without a path (no /v1)")),
        "{status:?}"
    );
    let status = submit(&stack.api_url, "", input.path()).await;
    assert!(
        matches!(&status, Err(CliError::Usage(m)) if m.contains("no token")),
        "{status:?}"
    );
    assert_eq!(stack.rows("batches").await, 0);
    stack.stop().await;
}
