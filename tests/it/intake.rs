//! Intake: every bad input gets problem+json with a stable code and nothing written; tenants see
//! only their own jobs; listing and cancelling.

use serde_json::{Value, json};
use tollgate_core::domain::Role;

use crate::harness::{Stack, client, idle};

/// Asserts a problem+json answer and returns its body.
async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("content type")
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert!(body["detail"].is_string());
    body
}

#[tokio::test]
async fn every_bad_body_is_refused_with_problem_json_and_nothing_is_written() {
    let stack = Stack::with(idle()).await;
    let post_raw = |body: &'static str, content_type: &'static str| {
        client()
            .post(stack.url("/v1/generate"))
            .bearer_auth(&stack.token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    assert_problem(
        post_raw("{\"model\": \"llama3\", ", "application/json")
            .await
            .expect("send"),
        400,
        "malformed_request",
    )
    .await;
    assert_problem(
        post_raw("{\"model\": \"llama3\"}", "text/plain")
            .await
            .expect("send"),
        415,
        "unsupported_media_type",
    )
    .await;

    let missing = assert_problem(
        stack
            .post("/v1/generate", &json!({ "model": "llama3" }))
            .await,
        422,
        "invalid_field",
    )
    .await;
    assert_eq!(missing["field"], "prompt");
    let unknown = json!({ "model": "llama3", "prompt": "hi", "colour": "red" });
    assert_eq!(
        assert_problem(
            stack.post("/v1/generate", &unknown).await,
            422,
            "invalid_field"
        )
        .await["field"],
        "colour"
    );
    let hot = json!({ "model": "llama3", "prompt": "hi", "options": { "temperature": 7 } });
    assert_eq!(
        assert_problem(stack.post("/v1/generate", &hot).await, 422, "invalid_field").await["field"],
        "options.temperature"
    );
    let bad_role =
        json!({ "model": "llama3", "messages": [{ "role": "wizard", "content": "hi" }] });
    assert_eq!(
        assert_problem(
            stack.post("/v1/chat", &bad_role).await,
            422,
            "invalid_field"
        )
        .await["field"],
        "messages[0].role"
    );
    let no_messages = json!({ "model": "llama3", "messages": [] });
    assert_eq!(
        assert_problem(
            stack.post("/v1/chat", &no_messages).await,
            422,
            "invalid_field"
        )
        .await["field"],
        "messages"
    );
    let bad_model = json!({ "model": "llama 3", "input": "hi" });
    assert_eq!(
        assert_problem(
            stack.post("/v1/embedding", &bad_model).await,
            422,
            "invalid_field"
        )
        .await["field"],
        "model"
    );
    let unserved = json!({ "model": "no-such-model", "prompt": "hi" });
    let problem = assert_problem(
        stack.post("/v1/generate", &unserved).await,
        422,
        "model_not_served",
    )
    .await;
    assert_eq!(problem["field"], "model");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("(no_route)"),
        "{problem}"
    );
    let bad_metadata = json!({ "model": "llama3", "prompt": "hi", "metadata": [1] });
    assert_eq!(
        assert_problem(
            stack.post("/v1/generate", &bad_metadata).await,
            422,
            "invalid_field"
        )
        .await["field"],
        "metadata"
    );

    let huge = json!({ "model": "llama3", "prompt": "x".repeat(2 * 1024 * 1024) });
    assert_problem(
        stack.post("/v1/generate", &huge).await,
        413,
        "body_too_large",
    )
    .await;

    assert_eq!(stack.rows("jobs").await, 0);
    stack.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problem_json() {
    let stack = Stack::with(idle()).await;

    assert_problem(stack.get("/v1/nothing-here").await, 404, "not_found").await;
    let wrong_method = client()
        .delete(stack.url("/v1/generate"))
        .bearer_auth(&stack.token)
        .send()
        .await
        .expect("send");
    assert_problem(wrong_method, 405, "method_not_allowed").await;
    stack.stop().await;
}

#[tokio::test]
async fn missing_unknown_and_revoked_tokens_are_refused() {
    let stack = Stack::with(idle()).await;
    let body = json!({ "model": "llama3", "prompt": "hi" });
    let revoked = stack.create_token("acme", Role::Client).await;
    let hash = tollgate_core::token::hash(&revoked);
    sqlx::query("update api_tokens set revoked_at = now() where token_hash = $1")
        .bind(hash.as_slice())
        .execute(&stack.pool)
        .await
        .expect("revoke");

    let none = client()
        .post(stack.url("/v1/generate"))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_problem(none, 401, "missing_token").await;
    for token in ["tg_not-a-real-token", revoked.as_str()] {
        let response = client()
            .post(stack.url("/v1/generate"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_problem(response, 401, "invalid_token").await;
    }
    assert_eq!(stack.rows("jobs").await, 0);
    stack.stop().await;
}

#[tokio::test]
async fn another_tenants_job_is_not_found() {
    let stack = Stack::with(idle()).await;
    let job = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "mine" }),
        )
        .await;
    let id = job["id"].as_str().expect("id");
    let other = stack.create_token("globex", Role::Client).await;

    let theirs = client()
        .get(stack.url(&format!("/v1/jobs/{id}")))
        .bearer_auth(&other)
        .send()
        .await
        .expect("send");
    assert_problem(theirs, 404, "not_found").await;
    let cancel = client()
        .post(stack.url(&format!("/v1/jobs/{id}/cancel")))
        .bearer_auth(&other)
        .send()
        .await
        .expect("send");
    assert_problem(cancel, 404, "not_found").await;
    let list: Value = client()
        .get(stack.url("/v1/jobs"))
        .bearer_auth(&other)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("list");
    assert_eq!(list["data"], json!([]));
    assert_eq!(stack.get(&format!("/v1/jobs/{id}")).await.status(), 200);
    stack.stop().await;
}

#[tokio::test]
async fn an_accepted_job_has_a_location_and_can_be_listed_and_cancelled() {
    let stack = Stack::with(idle()).await;
    let body = json!({ "model": "llama3", "prompt": "hi", "metadata": { "sku": "A-1" } });

    let response = stack.post("/v1/generate", &body).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let job: Value = response.json().await.expect("job");
    assert_eq!(
        location,
        format!("/v1/jobs/{}", job["id"].as_str().expect("id"))
    );
    assert_eq!(job["kind"], "generate");
    assert_eq!(job["metadata"], json!({ "sku": "A-1" }));
    let second = stack.submit("/v1/generate", &body).await;

    let page: Value = stack
        .get("/v1/jobs?limit=1")
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(page["data"][0]["id"], second["id"], "newest first");
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let next: Value = stack
        .get(&format!("/v1/jobs?limit=1&cursor={cursor}"))
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(next["data"][0]["id"], job["id"]);
    assert_problem(
        stack.get("/v1/jobs?status=done").await,
        422,
        "invalid_field",
    )
    .await;

    let cancel = format!("/v1/jobs/{}/cancel", job["id"].as_str().expect("id"));
    let cancelled: Value = stack
        .post(&cancel, &json!({}))
        .await
        .json()
        .await
        .expect("job");
    assert_eq!(cancelled["status"], "cancelled");
    assert_problem(
        stack.post(&cancel, &json!({})).await,
        409,
        "job_not_cancellable",
    )
    .await;
    let cancelled_page: Value = stack
        .get("/v1/jobs?status=cancelled")
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(cancelled_page["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(cancelled_page["data"][0]["id"], job["id"]);
    let queued_page: Value = stack
        .get("/v1/jobs?status=queued")
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(queued_page["data"][0]["id"], second["id"]);
    stack.stop().await;
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let stack = Stack::with(idle()).await;

    assert_eq!(stack.get("/healthz").await.status(), 200);
    let ready: Value = stack.get("/readyz").await.json().await.expect("ready");
    assert_eq!(
        ready["checks"],
        json!({ "postgres": "ok", "rabbitmq": "ok" })
    );
    stack.stop().await;
}
