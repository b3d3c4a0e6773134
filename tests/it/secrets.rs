//! Secrets stay secret: the OpenAI key is sealed at rest, shown only by its last four characters,
//! and never appears in a response or a log line, whatever path a job takes; a webhook signing
//! secret is shown once, when made, and never again, nor logged; nor are API tokens, whether they
//! work, are wrong or were revoked.

use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::{Value, json};
use tracing_subscriber::fmt::MakeWriter;

use crate::harness::{OPENAI_KEY, Stack, WAIT};
use crate::webhooks::{Receiver, acme, set_endpoint};

/// Every log line of the test, as text.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
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

/// Captures every log line of the current thread (at DEBUG) while the guard lives.
pub fn capture_logs() -> (CapturedLogs, tracing::subscriber::DefaultGuard) {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (logs, guard)
}

// One thread runs the api, the worker and the test, so the thread's subscriber sees all their logs.
#[tokio::test(flavor = "current_thread")]
async fn the_openai_key_never_appears_in_a_response_or_a_log_line() {
    let (logs, _guard) = capture_logs();
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
    let sealed: Vec<u8> =
        sqlx::query_scalar("select api_key_sealed from providers where name = 'openai'")
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

#[tokio::test(flavor = "current_thread")]
async fn a_webhook_secret_is_shown_once_and_never_logged() {
    let (logs, _guard) = capture_logs();
    let stack = Stack::start().await;
    let receiver = Receiver::start(vec![500, 200]).await;
    let first = set_endpoint(&stack, json!(receiver.url)).await["secret"]
        .as_str()
        .expect("shown when made")
        .to_owned();
    let rotate = format!("/v1/admin/tenants/{}/webhook/rotate", acme(&stack).await);
    let second: Value = stack
        .admin(Method::POST, &rotate, &Value::Null)
        .await
        .json()
        .await
        .expect("rotation");
    let second = second["secret"]
        .as_str()
        .expect("shown when made")
        .to_owned();

    let job = stack.generate("llama3", "hi").await;
    receiver.wait_for(2).await;
    let mut seen = String::new();
    let id = job["id"].as_str().expect("id");
    for path in [
        format!("/v1/admin/tenants/{}/webhook", acme(&stack).await),
        "/v1/admin/webhook-deliveries?status=succeeded".to_owned(),
    ] {
        seen.push_str(
            &stack
                .admin(Method::GET, &path, &Value::Null)
                .await
                .text()
                .await
                .expect("body"),
        );
    }
    seen.push_str(
        &stack
            .get(&format!("/v1/jobs/{id}/deliveries"))
            .await
            .text()
            .await
            .expect("body"),
    );
    let sealed: Vec<Vec<u8>> = sqlx::query_scalar("select sealed from webhook_secrets")
        .fetch_all(&stack.pool)
        .await
        .expect("sealed secrets");
    let received = receiver.received();
    stack.stop().await;

    let logs = logs.text();
    assert!(
        logs.contains("webhook attempt"),
        "the logs were captured: {logs}"
    );
    for secret in [&first, &second] {
        let key = secret.trim_start_matches("whsec_");
        assert!(!seen.contains(key), "a later response shows {secret}");
        assert!(!logs.contains(key), "a log line shows {secret}");
        assert!(
            received
                .iter()
                .all(|r| !format!("{:?}{}", r.headers, r.body).contains(key)),
            "a webhook request carries {secret}"
        );
        assert!(
            sealed
                .iter()
                .all(|s| !String::from_utf8_lossy(s).contains(key)),
            "{secret} is sealed at rest"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn api_tokens_never_appear_in_a_log_line_or_a_later_response() {
    let (logs, _guard) = capture_logs();
    let stack = Stack::start().await;
    let tokens_path = format!("/v1/admin/tenants/{}/tokens", acme(&stack).await);
    let created: Value = stack
        .admin(
            Method::POST,
            &tokens_path,
            &json!({ "name": "shop", "role": "client" }),
        )
        .await
        .json()
        .await
        .expect("created");
    let minted = created["token"].as_str().expect("shown once").to_owned();
    let token_id = created["id"].as_str().expect("id").to_owned();
    let submit = |token: String| {
        let url = stack.url("/v1/generate");
        async move {
            crate::harness::client()
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "model": "llama3", "prompt": "hi" }))
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }
    };
    assert_eq!(submit(minted.clone()).await, 202);
    // A wrong token of the right shape, and one in a malformed header.
    let wrong = format!("tg_{}", "W".repeat(43));
    assert_eq!(submit(wrong.clone()).await, 401);
    let revoked = stack
        .admin(
            Method::DELETE,
            &format!("/v1/admin/tokens/{token_id}"),
            &Value::Null,
        )
        .await;
    assert!(revoked.status().is_success(), "{}", revoked.status());
    tokio::time::timeout(WAIT, async {
        while submit(minted.clone()).await != 401 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the revoked token is refused");
    let listed = stack
        .admin(Method::GET, &tokens_path, &Value::Null)
        .await
        .text()
        .await
        .expect("listing");
    let audit = stack
        .admin(Method::GET, "/v1/admin/audit", &Value::Null)
        .await
        .text()
        .await
        .expect("audit");
    let stored: Vec<String> = sqlx::query_scalar("select to_jsonb(t)::text from api_tokens t")
        .fetch_all(&stack.pool)
        .await
        .expect("token rows");
    let (client_token, admin_token) = (stack.token.clone(), stack.admin_token.clone());
    stack.stop().await;

    let logs = logs.text();
    assert!(
        logs.contains("/v1/generate"),
        "the logs were captured: {logs}"
    );
    let secret_part = minted.trim_start_matches("tg_");
    for token in [secret_part, &client_token, &admin_token, &wrong] {
        let token = token.trim_start_matches("tg_");
        assert!(!logs.contains(token), "a log line shows {token}");
        assert!(!listed.contains(token), "the listing shows {token}");
        assert!(!audit.contains(token), "the audit log shows {token}");
        assert!(
            stored.iter().all(|row| !row.contains(token)),
            "{token} is stored only as its hash"
        );
    }
}
