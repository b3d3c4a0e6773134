//! Rate limits: a token's limit with its burst, 429 with `Retry-After` and `RateLimit-*`, and
//! recovery; a tenant's limit over all its tokens; two api instances sharing one limit without
//! admitting twice it; repeated failed authentication from one address throttled.

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_core::domain::Role;

use crate::harness::{Stack, client, eventually, test_api_settings};

/// A new tenant (with `tenant_rules`) and `tokens` client tokens with `token_rules`.
pub(crate) async fn tenant_with(
    stack: &Stack,
    name: &str,
    tenant_rules: Value,
    token_rules: Value,
    tokens: usize,
) -> Vec<String> {
    let created: Value = stack
        .admin(Method::POST, "/v1/admin/tenants", &json!({ "name": name }))
        .await
        .json()
        .await
        .expect("tenant");
    let id = created["id"].as_str().expect("id").to_owned();
    if !tenant_rules.is_null() {
        let response = stack
            .admin(
                Method::PATCH,
                &format!("/v1/admin/tenants/{id}"),
                &tenant_rules,
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    let mut secrets = Vec::new();
    for n in 0..tokens {
        let mut body = json!({ "name": format!("app {n}"), "role": "client" });
        if let Some(rules) = token_rules.as_object() {
            body.as_object_mut().expect("object").extend(rules.clone());
        }
        let token: Value = stack
            .admin(
                Method::POST,
                &format!("/v1/admin/tenants/{id}/tokens"),
                &body,
            )
            .await
            .json()
            .await
            .expect("token");
        secrets.push(token["token"].as_str().expect("secret").to_owned());
    }
    secrets
}

async fn submit_at(api: &str, token: &str) -> reqwest::Response {
    client()
        .post(format!("{api}/v1/generate"))
        .bearer_auth(token)
        .json(&json!({ "model": "llama3", "prompt": "hi" }))
        .send()
        .await
        .expect("POST")
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_token_over_its_limit_gets_429_with_retry_after_and_then_recovers() {
    let stack = Stack::start().await;
    let limit = json!({ "rate_limit": { "per_minute": 60, "burst": 3 } });
    let token = tenant_with(&stack, "limited", Value::Null, limit, 1)
        .await
        .remove(0);

    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = submit_at(&stack.api_url, &token).await;
        assert_eq!(response.status(), 202);
        assert_eq!(header(&response, "ratelimit-limit"), "60");
        remaining.push(header(&response, "ratelimit-remaining"));
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let refused = submit_at(&stack.api_url, &token).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after"), "1");
    assert_eq!(header(&refused, "ratelimit-remaining"), "0");
    let problem: Value = refused.json().await.expect("problem");
    assert_eq!(problem["code"], "rate_limited");

    eventually("the limit lets a request through again", || async {
        submit_at(&stack.api_url, &token).await.status() == 202
    })
    .await;
    stack.stop().await;
}

#[tokio::test]
async fn a_tenants_limit_covers_all_its_tokens_together() {
    let stack = Stack::start().await;
    let limit = json!({ "rate_limit": { "per_minute": 1, "burst": 2 } });
    let tokens = tenant_with(&stack, "shared", limit, Value::Null, 2).await;

    assert_eq!(submit_at(&stack.api_url, &tokens[0]).await.status(), 202);
    assert_eq!(submit_at(&stack.api_url, &tokens[1]).await.status(), 202);
    assert_eq!(submit_at(&stack.api_url, &tokens[0]).await.status(), 429);
    assert_eq!(submit_at(&stack.api_url, &tokens[1]).await.status(), 429);
    stack.stop().await;
}

#[tokio::test]
async fn two_api_instances_do_not_admit_twice_the_limit() {
    let stack = Stack::start().await;
    let second = stack.start_api(test_api_settings()).await;
    for api in [stack.api_url.clone(), second.clone()] {
        eventually("each instance counts two instances", || async {
            let ready: Value = client()
                .get(format!("{api}/readyz"))
                .send()
                .await
                .expect("readyz")
                .json()
                .await
                .expect("JSON");
            ready["api_instances"] == 2
        })
        .await;
    }
    let limit = json!({ "rate_limit": { "per_minute": 6, "burst": 10 } });
    let token = tenant_with(&stack, "spread", Value::Null, limit, 1)
        .await
        .remove(0);

    let mut accepted = 0;
    for n in 0..30 {
        let api = if n % 2 == 0 { &stack.api_url } else { &second };
        if submit_at(api, &token).await.status() == 202 {
            accepted += 1;
        }
    }
    // Each instance admits its half of the burst; at 6 a minute nothing refills meanwhile.
    assert_eq!(
        accepted, 10,
        "the two instances together admitted {accepted}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn repeated_failed_authentication_from_one_address_is_throttled() {
    let stack = Stack::start().await;
    let mut statuses = Vec::new();
    for n in 0..12 {
        let response = submit_at(&stack.api_url, &format!("tg_wrong-{n}")).await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses[..10], [401; 10]);
    assert_eq!(statuses[10..], [429, 429]);
    let throttled = submit_at(&stack.api_url, "tg_wrong-again").await;
    assert!(!header(&throttled, "retry-after").is_empty());
    let problem: Value = throttled.json().await.expect("problem");
    assert_eq!(problem["code"], "too_many_auth_failures");
    stack.stop().await;
}

#[tokio::test]
async fn a_valid_token_is_admitted_from_an_address_under_throttle() {
    let stack = Stack::start().await;
    // Someone behind the same address (a NAT) presents bad tokens until throttled.
    for n in 0..12 {
        submit_at(&stack.api_url, &format!("tg_wrong-{n}")).await;
    }
    assert_eq!(submit_at(&stack.api_url, "tg_wrong-0").await.status(), 429);
    // A colleague's token, never used before, still works from there; bad ones stay refused.
    let fresh = stack.create_token("acme", Role::Client).await;
    assert_eq!(submit_at(&stack.api_url, &fresh).await.status(), 202);
    assert_eq!(submit_at(&stack.api_url, &stack.token).await.status(), 202);
    assert_eq!(submit_at(&stack.api_url, "tg_wrong-13").await.status(), 429);
    stack.stop().await;
}
