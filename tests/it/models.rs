//! Model management against provider-sim playing the fleet's one Ollama host: the served models
//! with prices and what is installed, a pull with streamed progress (and one that waits), deletes with Ollama's 404
//! passed on, admin-only, and each pull and delete in the audit log.

use futures::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Stack, WAIT, client};

async fn models(stack: &Stack) -> Value {
    let response = stack.get("/v1/models").await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("models JSON")
}

/// What the fleet's one host (the stack's Ollama sim) has installed.
fn installed(models: &Value) -> Vec<String> {
    models["hosts"][0]["installed"]
        .as_array()
        .expect("installed")
        .iter()
        .map(|m| m["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn audit_actions(stack: &Stack) -> Vec<(String, String, Value)> {
    let audit: Value = stack
        .admin(Method::GET, "/v1/admin/audit", &Value::Null)
        .await
        .json()
        .await
        .expect("audit JSON");
    audit["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["target"].as_str().unwrap_or_default().to_owned(),
                e["details"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn clients_see_the_served_models_with_prices_and_what_ollama_has() {
    let stack = Stack::start().await;
    let listed = models(&stack).await;

    assert_eq!(listed["hosts"][0]["name"], "default");
    assert_eq!(listed["hosts"][0]["reachable"], true);
    assert!(
        installed(&listed).contains(&"llama3:latest".to_owned()),
        "{listed}"
    );
    let llama3 = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|m| m["model"] == "llama3")
        .expect("llama3 is served")
        .clone();
    let providers = llama3["providers"].as_array().expect("providers");
    assert_eq!(providers[0]["provider"], "local");
    assert_eq!(providers[0]["upstream_model"], "llama3");
    assert_eq!(providers[0]["installed"], true);
    assert_eq!(providers[0]["hosts"], json!(["default"]));
    assert_eq!(providers[0]["price"]["input_per_1k"], "0.002");
    assert_eq!(providers[1]["provider"], "openai");
    assert_eq!(providers[1]["upstream_model"], "gpt-4.1-mini");
    assert_eq!(providers[1]["price"]["output_per_1k"], "0.0016");
    stack.stop().await;
}

#[tokio::test]
async fn an_admin_pulls_a_model_and_watches_its_progress() {
    let stack = Stack::start().await;
    let response = client()
        .post(stack.url("/v1/models/pull"))
        .bearer_auth(&stack.admin_token)
        .header("accept", "text/event-stream")
        .json(&json!({ "model": "qwen2" }))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the pull ends");

    let events: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert!(events.len() >= 3, "{text}");
    assert!(events[..events.len() - 1].iter().all(|e| *e == "progress"));
    assert_eq!(events.last(), Some(&"done"));
    assert!(
        text.contains("\"completed\""),
        "progress carries byte counts: {text}"
    );
    assert!(installed(&models(&stack).await).contains(&"qwen2:latest".to_owned()));
    assert_eq!(stack.ollama.calls("/api/pull"), 1);

    let waited = stack
        .admin(Method::POST, "/v1/models/pull", &json!({ "model": "phi3" }))
        .await;
    assert_eq!(waited.status(), 200);
    let outcome: Value = waited.json().await.expect("outcome");
    assert_eq!(outcome, json!({ "model": "phi3", "status": "success" }));

    let actions = audit_actions(&stack).await;
    assert_eq!(actions[0].0, "model.pull");
    assert_eq!(actions[0].1, "phi3");
    assert_eq!(
        actions[1],
        (
            "model.pull".into(),
            "qwen2".into(),
            json!({ "stream": true, "hosts": ["default"] })
        )
    );
    stack.stop().await;
}

#[tokio::test]
async fn deleting_passes_ollamas_404_on_and_removes_what_exists() {
    let stack = Stack::start().await;
    let missing = stack
        .admin(Method::DELETE, "/v1/models/no-such-model", &Value::Null)
        .await;
    assert_eq!(missing.status(), 404);
    let problem: Value = missing.json().await.expect("problem");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("not found"),
        "{problem}"
    );

    let deleted = stack
        .admin(Method::DELETE, "/v1/models/llama3", &Value::Null)
        .await;
    assert_eq!(deleted.status(), 200);
    let listed = models(&stack).await;
    assert!(!installed(&listed).contains(&"llama3:latest".to_owned()));
    let llama3 = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|m| m["model"] == "llama3")
        .expect("still routed");
    assert_eq!(llama3["providers"][0]["installed"], false, "{llama3}");

    let actions = audit_actions(&stack).await;
    assert_eq!(
        actions[..2],
        [
            (
                "model.delete".into(),
                "llama3".into(),
                json!({ "hosts": [{ "host": "default", "outcome": "deleted" }] })
            ),
            (
                "model.delete".into(),
                "no-such-model".into(),
                json!({ "hosts": [{ "host": "default", "outcome": "not_found" }] })
            ),
        ]
    );
    stack.stop().await;
}

#[tokio::test]
async fn clients_cannot_pull_or_delete() {
    let stack = Stack::start().await;
    let pull = stack
        .post("/v1/models/pull", &json!({ "model": "qwen2" }))
        .await;
    assert_eq!(pull.status(), 403);
    let remove = client()
        .delete(stack.url("/v1/models/llama3"))
        .bearer_auth(&stack.token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(remove.status(), 403);
    assert_eq!(stack.ollama.calls("/api/pull"), 0);
    assert_eq!(stack.ollama.calls("/api/delete"), 0);
    stack.stop().await;
}
