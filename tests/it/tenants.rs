//! Tenants and tokens through the admin API: a token shown once and never again, listed by prefix
//! with its last use, revoked (refused within a second), a disabled tenant's tokens refused, names
//! unique, admin-only routes, and every action in the audit log with the admin who did it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Stack, client, eventually, test_api_settings};

/// `POST /v1/generate` with `token`; the status code.
async fn submit_with(stack: &Stack, token: &str) -> u16 {
    submit_at(&stack.api_url, token).await
}

/// `POST {api}/v1/generate` with `token`; the status code.
async fn submit_at(api: &str, token: &str) -> u16 {
    client()
        .post(format!("{api}/v1/generate"))
        .bearer_auth(token)
        .json(&json!({ "model": "llama3", "prompt": "hi" }))
        .send()
        .await
        .expect("POST")
        .status()
        .as_u16()
}

async fn admin_json(stack: &Stack, method: Method, path: &str, body: &Value) -> (u16, Value) {
    let response = stack.admin(method, path, body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_admin_creates_a_tenant_and_a_token_that_works_and_is_shown_once() {
    let stack = Stack::start().await;
    let (status, tenant) = admin_json(
        &stack,
        Method::POST,
        "/v1/admin/tenants",
        &json!({ "name": "globex" }),
    )
    .await;
    assert_eq!(status, 201, "{tenant}");
    let tenant_id = tenant["id"].as_str().expect("id").to_owned();
    assert!(tenant["disabled_at"].is_null());

    let tokens_path = format!("/v1/admin/tenants/{tenant_id}/tokens");
    let (status, created) = admin_json(
        &stack,
        Method::POST,
        &tokens_path,
        &json!({ "name": "shop backend", "role": "client" }),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"]
        .as_str()
        .expect("the token, this once")
        .to_owned();
    assert!(token.starts_with(created["prefix"].as_str().expect("prefix")));
    assert_eq!(submit_with(&stack, &token).await, 202);

    let (_, listed) = admin_json(&stack, Method::GET, &tokens_path, &Value::Null).await;
    let listed_text = listed.to_string();
    assert!(!listed_text.contains(&token), "the secret is never listed");
    let entry = &listed["data"][0];
    assert_eq!(entry["name"], "shop backend");
    assert_eq!(entry["role"], "client");
    assert_eq!(entry["prefix"], created["prefix"]);
    assert!(
        entry["last_used_at"].is_string(),
        "its use is noted: {entry}"
    );
    assert!(entry.get("token").is_none() && entry.get("token_hash").is_none());

    let (_, tenants) = admin_json(&stack, Method::GET, "/v1/admin/tenants", &Value::Null).await;
    let names: Vec<_> = tenants["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(names.contains(&"globex".to_owned()) && names.contains(&"acme".to_owned()));

    let (status, problem) = admin_json(
        &stack,
        Method::POST,
        "/v1/admin/tenants",
        &json!({ "name": "globex" }),
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "tenant_exists");
    let (status, problem) = admin_json(
        &stack,
        Method::POST,
        &tokens_path,
        &json!({ "name": "x", "role": "root" }),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(problem["field"], "role");
    stack.stop().await;
}

#[tokio::test]
async fn a_revoked_token_is_refused_within_a_second_on_every_instance() {
    let stack = Stack::start().await;
    let second_api = stack.start_api(test_api_settings()).await;
    assert_eq!(
        submit_with(&stack, &stack.token).await,
        202,
        "cached as valid"
    );
    assert_eq!(
        submit_at(&second_api, &stack.token).await,
        202,
        "cached there too"
    );
    let (_, tenants) = admin_json(&stack, Method::GET, "/v1/admin/tenants", &Value::Null).await;
    let acme = tenants["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|t| t["name"] == "acme")
        .expect("acme")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (_, tokens) = admin_json(
        &stack,
        Method::GET,
        &format!("/v1/admin/tenants/{acme}/tokens"),
        &Value::Null,
    )
    .await;
    let token_id = tokens["data"][0]["id"].as_str().expect("id").to_owned();

    let revoked_at = Instant::now();
    let (status, revoked) = admin_json(
        &stack,
        Method::DELETE,
        &format!("/v1/admin/tokens/{token_id}"),
        &Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    assert!(revoked["revoked_at"].is_string());
    // Each instance is asked until it refuses, then left alone: asking one again while the other's
    // cache still holds the token would count failed authentications from this address and end in
    // the failure throttle's 429 rather than a 401.
    let instances = [stack.api_url.as_str(), second_api.as_str()];
    let refused = [AtomicBool::new(false), AtomicBool::new(false)];
    eventually("the revoked token is refused by both instances", || async {
        for (api, refused) in instances.iter().zip(&refused) {
            if !refused.load(Ordering::Relaxed) && submit_at(api, &stack.token).await == 401 {
                refused.store(true, Ordering::Relaxed);
            }
        }
        refused.iter().all(|r| r.load(Ordering::Relaxed))
    })
    .await;
    // The token cache lives a second; the margin absorbs a loaded machine, not a longer cache.
    assert!(
        revoked_at.elapsed() < Duration::from_secs(2),
        "refused after {:?}",
        revoked_at.elapsed()
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_disabled_tenant_is_locked_out_until_enabled_and_admins_keep_their_own() {
    let stack = Stack::start().await;
    let (_, tenant) = admin_json(
        &stack,
        Method::POST,
        "/v1/admin/tenants",
        &json!({ "name": "initech" }),
    )
    .await;
    let id = tenant["id"].as_str().expect("id").to_owned();
    let (_, created) = admin_json(
        &stack,
        Method::POST,
        &format!("/v1/admin/tenants/{id}/tokens"),
        &json!({ "name": "app", "role": "client" }),
    )
    .await;
    let token = created["token"].as_str().expect("token").to_owned();
    assert_eq!(submit_with(&stack, &token).await, 202);

    let (status, disabled) = admin_json(
        &stack,
        Method::POST,
        &format!("/v1/admin/tenants/{id}/disable"),
        &Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    assert!(disabled["disabled_at"].is_string());
    eventually("the disabled tenant's token is refused", || async {
        submit_with(&stack, &token).await == 401
    })
    .await;
    let (status, _) = admin_json(
        &stack,
        Method::POST,
        &format!("/v1/admin/tenants/{id}/enable"),
        &Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    eventually("the enabled tenant's token works again", || async {
        submit_with(&stack, &token).await == 202
    })
    .await;

    let own = tollgate_core::db::tenants::find_by_name(&stack.pool, "ops")
        .await
        .expect("query")
        .expect("ops");
    let (status, problem) = admin_json(
        &stack,
        Method::POST,
        &format!("/v1/admin/tenants/{own}/disable"),
        &Value::Null,
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    stack.stop().await;
}

#[tokio::test]
async fn admin_actions_are_audited_and_clients_are_kept_out() {
    let stack = Stack::start().await;
    let (_, tenant) = admin_json(
        &stack,
        Method::POST,
        "/v1/admin/tenants",
        &json!({ "name": "umbrella" }),
    )
    .await;
    let id = tenant["id"].as_str().expect("id").to_owned();
    let (_, created) = admin_json(
        &stack,
        Method::POST,
        &format!("/v1/admin/tenants/{id}/tokens"),
        &json!({ "name": "ops bot", "role": "admin" }),
    )
    .await;
    let token_id = created["id"].as_str().expect("id").to_owned();
    admin_json(
        &stack,
        Method::DELETE,
        &format!("/v1/admin/tokens/{token_id}"),
        &Value::Null,
    )
    .await;

    let (status, audit) = admin_json(&stack, Method::GET, "/v1/admin/audit", &Value::Null).await;
    assert_eq!(status, 200);
    let entries = audit["data"].as_array().expect("data");
    let actions: Vec<_> = entries.iter().map(|e| e["action"].clone()).collect();
    assert_eq!(actions, ["token.revoke", "token.create", "tenant.create"]);
    assert_eq!(entries[2]["target"], id);
    assert_eq!(entries[2]["details"]["name"], "umbrella");
    assert_eq!(entries[0]["target"], token_id);
    let ops = tollgate_core::db::tenants::find_by_name(&stack.pool, "ops")
        .await
        .expect("query")
        .expect("ops");
    assert!(
        entries
            .iter()
            .all(|e| e["actor_tenant_id"] == ops.to_string())
    );
    assert!(
        entries
            .iter()
            .all(|e| e["at"].is_string() && e["actor_token_id"].is_string())
    );
    assert!(
        !audit
            .to_string()
            .contains(created["token"].as_str().expect("token"))
    );

    for (method, path) in [
        (Method::GET, "/v1/admin/tenants".to_owned()),
        (Method::POST, "/v1/admin/tenants".to_owned()),
        (Method::GET, format!("/v1/admin/tenants/{id}/tokens")),
        (Method::DELETE, format!("/v1/admin/tokens/{token_id}")),
        (Method::GET, "/v1/admin/audit".to_owned()),
    ] {
        let response = client()
            .request(method.clone(), stack.url(&path))
            .bearer_auth(&stack.token)
            .json(&json!({ "name": "x" }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 403, "{method} {path}");
    }
    stack.stop().await;
}
