//! Secrets stay secret: the OpenAI key is sealed at rest, shown only by its last four characters,
//! and never appears in a response or a log line, whatever path a job takes.

use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::{Value, json};
use tracing_subscriber::fmt::MakeWriter;

use crate::harness::{OPENAI_KEY, Stack, WAIT};

/// Every log line of the test, as text.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Runs jobs until one ends as `done` says, which happens once the worker followed the settings
/// change (within its refresh period); gives up after the harness's wait.
async fn until(stack: &Stack, prompt: &str, done: fn(&Value) -> bool) -> Value {
    let until = async {
        loop {
            let job = stack.generate("llama3", prompt).await;
            if done(&job) {
                return job;
            }
        }
    };
    tokio::time::timeout(WAIT, until)
        .await
        .expect("the worker follows the settings")
}

// One thread runs the api, the worker and the test, so the thread's subscriber sees all their logs.
#[tokio::test(flavor = "current_thread")]
async fn the_openai_key_never_appears_in_a_response_or_a_log_line() {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let stack = Stack::start().await;
    let wrong_key = "sk-wrong-NEVER-SHOW-THIS-7f3a";
    let mut seen = String::new();

    let settings = stack
        .patch_settings(&json!({ "ai_provider": "openai", "ai_openai_api_key": wrong_key }))
        .await;
    assert_eq!(
        settings["ai_openai_api_key"],
        json!({ "set": true, "last4": "7f3a" })
    );
    seen.push_str(&settings.to_string());
    let refused = until(&stack, "with the wrong key", |job| {
        job["provider"] == "openai"
    })
    .await;
    assert_eq!(
        refused["error"]["code"], "provider_unauthorized",
        "{refused}"
    );
    seen.push_str(&refused.to_string());

    let settings = stack
        .patch_settings(&json!({ "ai_openai_api_key": OPENAI_KEY }))
        .await;
    seen.push_str(&settings.to_string());
    let answered = until(&stack, "with the right key", |job| {
        job["status"] == "succeeded"
    })
    .await;
    assert_eq!(answered["status"], "succeeded", "{answered}");
    assert_eq!(answered["provider"], "openai");
    seen.push_str(&answered.to_string());
    for path in ["/v1/admin/settings", "/v1/jobs?limit=100"] {
        let body = stack.admin(Method::GET, path, &Value::Null).await;
        seen.push_str(&body.text().await.expect("body"));
    }
    let sealed: Vec<u8> = sqlx::query_scalar("select openai_api_key_sealed from settings")
        .fetch_one(&stack.pool)
        .await
        .expect("sealed key");
    stack.stop().await;

    let logs = logs.text();
    assert!(
        logs.contains("runtime settings changed") && logs.contains("provider call failed"),
        "the logs were captured: {logs}"
    );
    for key in [wrong_key, OPENAI_KEY] {
        assert!(!seen.contains(key), "a response shows {key}");
        assert!(!logs.contains(key), "a log line shows {key}");
    }
    assert!(
        !String::from_utf8_lossy(&sealed).contains(OPENAI_KEY),
        "the key is sealed at rest"
    );
}
