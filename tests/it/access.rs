//! Access rules: allowed domains (exact and `*.domain`, from `Origin` or `Referer`, refused
//! without either), allowed networks (IPv4 and IPv6 CIDR) from a token or its tenant's defaults,
//! forwarded addresses believed only from a trusted proxy, and CORS answers for browsers.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Options, Stack, client, eventually, test_api_settings};

/// A new client token of a new tenant, with `rules` (`allowed_domains` / `allowed_ips`).
async fn token_with(stack: &Stack, tenant: &str, rules: Value) -> (String, String) {
    let (_, created) = admin(
        stack,
        Method::POST,
        "/v1/admin/tenants",
        json!({ "name": tenant }),
    )
    .await;
    let tenant_id = created["id"].as_str().expect("tenant id").to_owned();
    let mut body = json!({ "name": "app", "role": "client" });
    body.as_object_mut()
        .expect("object")
        .extend(rules.as_object().expect("rules").clone());
    let (status, token) = admin(
        stack,
        Method::POST,
        &format!("/v1/admin/tenants/{tenant_id}/tokens"),
        body,
    )
    .await;
    assert_eq!(status, 201, "{token}");
    (
        token["token"].as_str().expect("token").to_owned(),
        tenant_id,
    )
}

async fn admin(stack: &Stack, method: Method, path: &str, body: Value) -> (u16, Value) {
    let response = stack.admin(method, path, &body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Submits with `token` and extra headers; the status and the problem code, if any.
async fn submit(stack: &Stack, token: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = client()
        .post(stack.url("/v1/generate"))
        .bearer_auth(token)
        .json(&json!({ "model": "llama3", "prompt": "hi" }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

async fn jobs_of(stack: &Stack, tenant_id: &str) -> i64 {
    sqlx::query_scalar("select count(*) from jobs where tenant_id = $1::uuid")
        .bind(tenant_id)
        .fetch_one(&stack.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn allowed_domains_match_exactly_or_by_wildcard_and_need_an_origin() {
    let stack = Stack::start().await;
    let rules = json!({ "allowed_domains": ["shop.example.com", "*.example.org"] });
    let (token, tenant) = token_with(&stack, "domains", rules).await;

    for origin in [
        "https://shop.example.com",
        "https://a.example.org",
        "http://b.c.example.org:8080",
    ] {
        assert_eq!(
            submit(&stack, &token, &[("origin", origin)]).await.0,
            202,
            "{origin}"
        );
    }
    let referer = [("referer", "https://x.example.org/products/42")];
    assert_eq!(
        submit(&stack, &token, &referer).await.0,
        202,
        "Referer when no Origin"
    );
    for origin in [
        "https://evil.com",
        "https://example.org",
        "https://shop.example.com.evil.io",
    ] {
        assert_eq!(
            submit(&stack, &token, &[("origin", origin)]).await,
            (403, "origin_not_allowed".into()),
            "{origin}"
        );
    }
    assert_eq!(
        submit(&stack, &token, &[]).await,
        (403, "origin_required".into())
    );
    assert_eq!(
        jobs_of(&stack, &tenant).await,
        4,
        "nothing written for a refused request"
    );

    let (status, problem) = admin(
        &stack,
        Method::POST,
        &format!("/v1/admin/tenants/{tenant}/tokens"),
        json!({ "name": "bad", "role": "client", "allowed_domains": ["https://x.com"] }),
    )
    .await;
    assert_eq!(
        (status, problem["field"].clone()),
        (422, json!("allowed_domains"))
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_tenants_default_networks_apply_until_a_token_has_its_own() {
    let stack = Stack::start().await;
    let (token, tenant) = token_with(&stack, "networks", json!({})).await;
    assert_eq!(submit(&stack, &token, &[]).await.0, 202);

    let (status, updated) = admin(
        &stack,
        Method::PATCH,
        &format!("/v1/admin/tenants/{tenant}"),
        json!({ "allowed_ips": ["10.0.0.0/8", "2001:db8::/32"] }),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        updated["allowed_ips"],
        json!(["10.0.0.0/8", "2001:db8::/32"])
    );
    eventually("the tenant's networks refuse 127.0.0.1", || async {
        submit(&stack, &token, &[]).await == (403, "ip_not_allowed".into())
    })
    .await;

    let (_, tokens) = admin(
        &stack,
        Method::GET,
        &format!("/v1/admin/tenants/{tenant}/tokens"),
        Value::Null,
    )
    .await;
    let token_id = tokens["data"][0]["id"].as_str().expect("id").to_owned();
    let (status, _) = admin(
        &stack,
        Method::PATCH,
        &format!("/v1/admin/tokens/{token_id}"),
        json!({ "allowed_ips": ["127.0.0.1"] }),
    )
    .await;
    assert_eq!(status, 200);
    eventually("the token's own network lets it in", || async {
        submit(&stack, &token, &[]).await.0 == 202
    })
    .await;
    stack.stop().await;
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_a_trusted_proxy() {
    let behind_proxy = Stack::with(Options {
        api_settings: tollgate_api::ApiSettings {
            trusted_proxies: vec!["127.0.0.1/32".parse().expect("cidr")],
            ..test_api_settings()
        },
        ..Options::default()
    })
    .await;
    let rules = json!({ "allowed_ips": ["2001:db8::/32", "192.0.2.0/24"] });
    let (token, tenant) = token_with(&behind_proxy, "proxied", rules).await;

    let xff = |value| [("x-forwarded-for", value)];
    assert_eq!(
        submit(&behind_proxy, &token, &xff("2001:db8::5")).await.0,
        202
    );
    assert_eq!(
        submit(&behind_proxy, &token, &xff("198.51.100.1, 192.0.2.7"))
            .await
            .0,
        202
    );
    assert_eq!(
        submit(&behind_proxy, &token, &xff("192.0.2.7, 198.51.100.1")).await,
        (403, "ip_not_allowed".into()),
        "the nearest hop counts, not what the client put first"
    );
    let forwarded = [("forwarded", "for=\"[2001:db8::9]:4711\";proto=https")];
    assert_eq!(submit(&behind_proxy, &token, &forwarded).await.0, 202);
    let recorded: Vec<String> = sqlx::query_scalar(
        "select host(client_ip) from jobs where tenant_id = $1::uuid order by id",
    )
    .bind(&tenant)
    .fetch_all(&behind_proxy.pool)
    .await
    .expect("client addresses");
    assert_eq!(
        recorded,
        ["2001:db8::5", "192.0.2.7", "2001:db8::9"],
        "billed to the client's address"
    );
    behind_proxy.stop().await;

    let direct = Stack::start().await;
    let (token, _) = token_with(
        &direct,
        "spoofer",
        json!({ "allowed_ips": ["192.0.2.0/24"] }),
    )
    .await;
    assert_eq!(
        submit(&direct, &token, &xff("192.0.2.7")).await,
        (403, "ip_not_allowed".into()),
        "an untrusted peer's X-Forwarded-For is ignored"
    );
    direct.stop().await;
}

#[tokio::test]
async fn browsers_get_cors_answers() {
    let stack = Stack::start().await;
    let preflight = client()
        .request(Method::OPTIONS, stack.url("/v1/generate"))
        .header("origin", "https://shop.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, prefer",
        )
        .send()
        .await
        .expect("OPTIONS");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let allowed = |name: &str| {
        preflight.headers()[name]
            .to_str()
            .expect("ascii")
            .to_ascii_lowercase()
    };
    assert_eq!(
        allowed("access-control-allow-origin"),
        "https://shop.example.com"
    );
    assert!(allowed("access-control-allow-headers").contains("authorization"));
    assert!(allowed("access-control-allow-methods").contains("post"));

    let (token, _) = token_with(
        &stack,
        "browser",
        json!({ "allowed_domains": ["shop.example.com"] }),
    )
    .await;
    let response = client()
        .post(stack.url("/v1/generate"))
        .bearer_auth(&token)
        .header("origin", "https://shop.example.com")
        .json(&json!({ "model": "llama3", "prompt": "hi" }))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    assert!(
        response.headers()["access-control-expose-headers"]
            .to_str()
            .expect("ascii")
            .to_ascii_lowercase()
            .contains("location")
    );
    stack.stop().await;
}
