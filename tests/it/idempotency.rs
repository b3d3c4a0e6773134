//! `Idempotency-Key` on job and batch submissions: a retry gets the first answer (one job, one
//! batch), the same key with another body is 422, a retry while the first is in flight is 409,
//! keys belong to a tenant and are forgotten after a day.

use serde_json::{Value, json};
use tollgate_core::domain::{Role, TenantId};

use crate::harness::{Stack, client, idle};

async fn post(
    stack: &Stack,
    token: &str,
    path: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    client()
        .post(stack.url(path))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("POST")
}

async fn acme(stack: &Stack) -> TenantId {
    tollgate_core::db::tenants::find_by_name(&stack.pool, "acme")
        .await
        .expect("query")
        .expect("acme")
}

#[tokio::test]
async fn a_retried_job_submission_gets_the_first_answer_and_no_second_job() {
    let stack = Stack::with(idle()).await;
    let body = json!({ "model": "llama3", "prompt": "describe a mug" });
    let first = post(&stack, &stack.token, "/v1/generate", "order-17", &body).await;
    assert_eq!(first.status(), 202);
    let location = first.headers()["location"].clone();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.expect("job");

    let retry = post(&stack, &stack.token, "/v1/generate", "order-17", &body).await;
    assert_eq!(retry.status(), 202);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()["location"], location);
    let retry: Value = retry.json().await.expect("job");
    assert_eq!(retry["id"], first["id"]);
    assert_eq!(stack.rows("jobs").await, 1);

    let other_body = json!({ "model": "llama3", "prompt": "describe a cup" });
    let reused = post(
        &stack,
        &stack.token,
        "/v1/generate",
        "order-17",
        &other_body,
    )
    .await;
    assert_eq!(reused.status(), 422);
    let problem: Value = reused.json().await.expect("problem");
    assert_eq!(problem["code"], "idempotency_key_reused");
    // The same key on another endpoint is another request too.
    let chat = json!({ "model": "llama3", "messages": [{ "role": "user", "content": "hi" }] });
    assert_eq!(
        post(&stack, &stack.token, "/v1/chat", "order-17", &chat)
            .await
            .status(),
        422
    );

    // Keys belong to a tenant.
    let stranger = stack.create_token("globex", Role::Client).await;
    let theirs = post(&stack, &stranger, "/v1/generate", "order-17", &body).await;
    assert_eq!(theirs.status(), 202);
    assert!(theirs.headers().get("idempotent-replayed").is_none());
    assert_eq!(stack.rows("jobs").await, 2);

    let too_long = post(
        &stack,
        &stack.token,
        "/v1/generate",
        &"k".repeat(256),
        &body,
    )
    .await;
    assert_eq!(too_long.status(), 400);

    // After a day the key is forgotten and names a new request.
    sqlx::query("update idempotency_keys set created_at = now() - interval '25 hours'")
        .execute(&stack.pool)
        .await
        .expect("age the keys");
    let later: Value = post(
        &stack,
        &stack.token,
        "/v1/generate",
        "order-17",
        &other_body,
    )
    .await
    .json()
    .await
    .expect("job");
    assert_ne!(later["id"], first["id"]);
    assert_eq!(stack.rows("jobs").await, 3);
    stack.stop().await;
}

#[tokio::test]
async fn a_key_in_flight_is_409_and_a_retried_batch_is_the_same_batch() {
    let stack = Stack::with(idle()).await;
    let tenant = acme(&stack).await;
    let body = json!({ "kind": "generate", "model": "llama3",
                       "items": [{ "custom_id": "a", "prompt": "x" }, { "custom_id": "b", "prompt": "y" }] });

    // Another request holding the key (its transaction still open) makes a retry wait its turn.
    let mut holder = stack.pool.begin().await.expect("begin");
    assert!(
        tollgate_core::db::idempotency::try_lock(&mut holder, tenant, "batch-1")
            .await
            .expect("lock")
    );
    let busy = post(&stack, &stack.token, "/v1/batches", "batch-1", &body).await;
    assert_eq!(busy.status(), 409);
    let problem: Value = busy.json().await.expect("problem");
    assert_eq!(problem["code"], "idempotency_key_in_use");
    holder.rollback().await.expect("release");
    assert_eq!(stack.rows("batches").await, 0);

    let first: Value = post(&stack, &stack.token, "/v1/batches", "batch-1", &body)
        .await
        .json()
        .await
        .expect("batch");
    let retry = post(&stack, &stack.token, "/v1/batches", "batch-1", &body).await;
    assert_eq!(retry.status(), 202);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = retry.json().await.expect("batch");
    assert_eq!(retry["id"], first["id"]);
    assert_eq!(stack.rows("batches").await, 1);
    assert_eq!(stack.rows("jobs").await, 2);

    let changed = json!({ "kind": "generate", "model": "llama3",
                          "items": [{ "custom_id": "a", "prompt": "z" }] });
    let reused = post(&stack, &stack.token, "/v1/batches", "batch-1", &changed).await;
    assert_eq!(reused.status(), 422);
    assert_eq!(stack.rows("batches").await, 1);
    stack.stop().await;
}
