//! Signed webhooks: the same message until a 2xx, redirects not followed, 410 disabling the
//! tenant's endpoint, the SSRF guard at submission and at delivery, secret rotation, and an
//! admin's redelivery. Receivers are real HTTP servers on port 0, signatures are checked by a
//! verifier written here from the specification, not with the gateway's code.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::harness::{Options, Stack, eventually, test_api_settings, test_worker_settings};

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
    pub at: std::time::Instant,
}

/// A webhook receiver answering from a script (its last answer repeats) and keeping what it got.
/// Every answer carries `Location: /elsewhere` (followed only if redirects were) and
/// `Retry-After: 1` (honoured only on 429 and 503).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start(script: Vec<u16>) -> Self {
        let received = Arc::new(Mutex::new(Vec::<Received>::new()));
        let log = received.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: String| {
                let (log, script) = (log.clone(), script.clone());
                async move {
                    let mut log = log.lock().expect("receiver log");
                    let status = script[log.len().min(script.len() - 1)];
                    log.push(Received {
                        path: uri.path().to_owned(),
                        headers,
                        body,
                        at: std::time::Instant::now(),
                    });
                    let status = StatusCode::from_u16(status).expect("a status code");
                    (status, [("location", "/elsewhere"), ("retry-after", "1")])
                }
            },
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, received }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("receiver log").clone()
    }

    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        let what = format!("the receiver got {count} requests");
        eventually(&what, || async { self.received().len() >= count }).await;
        self.received()
    }
}

/// Standard Webhooks verification, from the specification: the signed content is
/// `{id}.{timestamp}.{body}`, the key the base64 part of `whsec_…`, and the header may carry
/// several space-separated `v1,` signatures. Returns how many of them `secret` produced.
pub fn signatures_by(secret: &str, received: &Received) -> usize {
    let header = |name: &str| {
        received
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{name} header"))
            .to_owned()
    };
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 key");
    let signed = format!(
        "{}.{}.{}",
        header("webhook-id"),
        header("webhook-timestamp"),
        received.body
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(signed.as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    header("webhook-signature")
        .split(' ')
        .filter(|signature| *signature == expected)
        .count()
}

/// The acme tenant's id.
pub async fn acme(stack: &Stack) -> String {
    tollgate_core::db::tenants::find_by_name(&stack.pool, "acme")
        .await
        .expect("query")
        .expect("acme exists")
        .0
        .to_string()
}

/// Sets acme's endpoint (`url` may be null) and returns the body, which holds the secret the first
/// time.
pub async fn set_endpoint(stack: &Stack, url: Value) -> Value {
    let path = format!("/v1/admin/tenants/{}/webhook", acme(stack).await);
    let response = stack
        .admin(Method::PUT, &path, &json!({ "url": url }))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("endpoint JSON")
}

async fn deliveries(stack: &Stack, job_id: &str) -> Vec<Value> {
    let response = stack.get(&format!("/v1/jobs/{job_id}/deliveries")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("deliveries JSON");
    body["data"].as_array().expect("data").clone()
}

/// Waits until the job's one delivery is no longer pending and returns it.
async fn settled_delivery(stack: &Stack, job_id: &str) -> Value {
    eventually("the delivery settles", || async {
        deliveries(stack, job_id)
            .await
            .first()
            .is_some_and(|d| d["status"] != "pending")
    })
    .await;
    deliveries(stack, job_id).await.remove(0)
}

fn status_codes(delivery: &Value) -> Vec<i64> {
    delivery["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap_or(0))
        .collect()
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_signed_message_until_it_answers_2xx() {
    let stack = Stack::start().await;
    let secret = set_endpoint(&stack, Value::Null).await["secret"]
        .as_str()
        .expect("the secret is shown when created")
        .to_owned();
    let receiver = Receiver::start(vec![500, 500, 200]).await;

    let job = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "hi", "webhook_url": receiver.url }),
        )
        .await;
    let id = job["id"].as_str().expect("id");

    let received = receiver.wait_for(3).await;
    let ids: Vec<_> = received
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().expect("ascii").to_owned())
        .collect();
    assert!(ids[0].starts_with("msg_"));
    assert_eq!(ids, [ids[0].clone(), ids[0].clone(), ids[0].clone()]);
    for request in &received {
        assert_eq!(signatures_by(&secret, request), 1, "signed with the secret");
        assert_eq!(request.body, received[0].body, "the same body every time");
        let timestamp: i64 = request.headers["webhook-timestamp"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("unix seconds");
        assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 60);
    }
    let body: Value = serde_json::from_str(&received[0].body).expect("JSON body");
    assert_eq!(body["type"], "job.succeeded");
    assert!(body["timestamp"].is_string());
    assert_eq!(body["data"]["id"], id);
    assert_eq!(body["data"]["status"], "succeeded");
    assert!(body["data"]["result"]["text"].is_string());

    let delivery = settled_delivery(&stack, id).await;
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(delivery["id"].as_str(), Some(ids[0].as_str()));
    assert_eq!(delivery["event_type"], "job.succeeded");
    assert_eq!(status_codes(&delivery), [500, 500, 200]);
    assert!(
        delivery["attempts"][0]["latency_ms"].as_i64().is_some(),
        "each attempt records its latency"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_redirect_is_a_failed_attempt_and_is_never_followed() {
    let stack = Stack::start().await;
    set_endpoint(&stack, Value::Null).await;
    let receiver = Receiver::start(vec![302, 204]).await;

    let job = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "hi", "webhook_url": receiver.url }),
        )
        .await;
    let delivery = settled_delivery(&stack, job["id"].as_str().expect("id")).await;

    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(status_codes(&delivery), [302, 204]);
    let error = delivery["attempts"][0]["error"].as_str().expect("an error");
    assert!(error.contains("redirects are not followed"), "{error}");
    let paths: Vec<_> = receiver.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hook", "/hook"], "/elsewhere was never requested");
    stack.stop().await;
}

#[tokio::test]
async fn a_410_disables_the_tenant_endpoint_until_an_admin_sets_it_again() {
    let stack = Stack::start().await;
    let receiver = Receiver::start(vec![410]).await;
    set_endpoint(&stack, json!(receiver.url)).await;

    let first = stack.generate("llama3", "one").await;
    let delivery = settled_delivery(&stack, first["id"].as_str().expect("id")).await;
    assert_eq!(delivery["status"], "failed");
    assert_eq!(status_codes(&delivery), [410], "no retry after 410");
    let failed: Value = stack
        .admin(
            Method::GET,
            "/v1/admin/webhook-deliveries?status=failed",
            &Value::Null,
        )
        .await
        .json()
        .await
        .expect("deliveries JSON");
    assert_eq!(failed["data"][0]["id"], delivery["id"]);
    assert_eq!(failed["data"][0]["job_id"], first["id"]);
    assert_eq!(failed["data"][0]["attempts"], 1);

    let path = format!("/v1/admin/tenants/{}/webhook", acme(&stack).await);
    let endpoint: Value = stack
        .admin(Method::GET, &path, &Value::Null)
        .await
        .json()
        .await
        .expect("endpoint JSON");
    assert!(endpoint["disabled_at"].is_string(), "{endpoint}");
    assert!(
        endpoint.get("secret").is_none(),
        "the secret is never shown again"
    );
    assert_eq!(endpoint["secrets"].as_array().map(Vec::len), Some(1));

    let second = stack.generate("llama3", "two").await;
    assert!(
        deliveries(&stack, second["id"].as_str().expect("id"))
            .await
            .is_empty()
    );
    assert_eq!(receiver.received().len(), 1);

    let again = set_endpoint(&stack, json!(receiver.url)).await;
    assert!(again["disabled_at"].is_null());
    assert!(again.get("secret").is_none(), "the existing secret is kept");
    stack.stop().await;
}

#[tokio::test]
async fn webhook_urls_reaching_internal_addresses_are_refused_at_submission() {
    let stack = Stack::with(Options {
        api_settings: tollgate_api::ApiSettings {
            webhook_allow_private: false,
            ..test_api_settings()
        },
        ..Options::default()
    })
    .await;
    set_endpoint(&stack, Value::Null).await;
    for (url, reason) in [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://[::ffff:0:7f00:1]/hook", "loopback"),
        ("http://[64:ff9b:1::7f00:1]/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
        ("http://10.0.0.7/hook", "private"),
        ("http://100.64.0.1/hook", "carrier-grade NAT"),
        ("http://[fe80::1]/hook", "link-local"),
        ("ftp://example.com/hook", "http or https"),
    ] {
        let response = stack
            .post(
                "/v1/generate",
                &json!({ "model": "llama3", "prompt": "hi", "webhook_url": url }),
            )
            .await;
        assert_eq!(response.status(), 422, "{url}");
        let problem: Value = response.json().await.expect("problem JSON");
        assert_eq!(problem["field"], "webhook_url", "{url}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(reason), "{url}: {detail}");
    }
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&stack.pool)
        .await
        .expect("count");
    assert_eq!(jobs, 0, "nothing was written for a refused URL");
    stack.stop().await;
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_again_at_delivery() {
    // The api lets it through (as if the name resolved elsewhere at submission); the worker's
    // guard checks the addresses it would connect to.
    let mut worker = test_worker_settings();
    worker.webhooks.allow_private = false;
    let stack = Stack::with(Options {
        worker_settings: worker,
        ..Options::default()
    })
    .await;
    set_endpoint(&stack, Value::Null).await;
    let receiver = Receiver::start(vec![200]).await;
    let url = receiver.url.replace("127.0.0.1", "localhost");

    let job = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "hi", "webhook_url": url }),
        )
        .await;
    let delivery = settled_delivery(&stack, job["id"].as_str().expect("id")).await;

    assert_eq!(delivery["status"], "failed");
    let error = delivery["attempts"][0]["error"].as_str().expect("an error");
    assert!(
        error.contains("refused") && error.contains("loopback"),
        "{error}"
    );
    assert_eq!(
        delivery["attempts"].as_array().map(Vec::len),
        Some(1),
        "not retried"
    );
    assert!(receiver.received().is_empty());
    stack.stop().await;
}

#[tokio::test]
async fn during_a_rotation_messages_carry_a_signature_under_each_secret() {
    let stack = Stack::start().await;
    let old = set_endpoint(&stack, Value::Null).await["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let path = format!("/v1/admin/tenants/{}/webhook/rotate", acme(&stack).await);
    let rotated: Value = stack
        .admin(Method::POST, &path, &Value::Null)
        .await
        .json()
        .await
        .expect("rotation JSON");
    let new = rotated["secret"].as_str().expect("new secret").to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_expires_at"].is_string());
    let receiver = Receiver::start(vec![200]).await;

    stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "hi", "webhook_url": receiver.url }),
        )
        .await;
    let received = receiver.wait_for(1).await;

    let signatures = received[0].headers["webhook-signature"]
        .to_str()
        .expect("ascii");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert_eq!(signatures_by(&old, &received[0]), 1);
    assert_eq!(signatures_by(&new, &received[0]), 1);
    stack.stop().await;
}

#[tokio::test]
async fn a_cancelled_job_is_announced_and_an_admin_can_redeliver_it() {
    let stack = Stack::start().await;
    let receiver = Receiver::start(vec![200]).await;
    set_endpoint(&stack, json!(receiver.url)).await;
    let id = stack.insert_unpublished_job("never runs").await;

    let response = stack
        .post(&format!("/v1/jobs/{id}/cancel"), &Value::Null)
        .await;
    assert_eq!(response.status(), 200);
    let first = receiver.wait_for(1).await;
    let body: Value = serde_json::from_str(&first[0].body).expect("JSON");
    assert_eq!(body["type"], "job.cancelled");
    assert_eq!(body["data"]["status"], "cancelled");
    let delivery = settled_delivery(&stack, &id.to_string()).await;
    assert_eq!(delivery["status"], "succeeded");

    let path = format!(
        "/v1/admin/webhook-deliveries/{}/redeliver",
        delivery["id"].as_str().expect("id")
    );
    let response = stack.admin(Method::POST, &path, &Value::Null).await;
    assert_eq!(response.status(), 202);
    let both = receiver.wait_for(2).await;
    assert_eq!(both[1].headers["webhook-id"], both[0].headers["webhook-id"]);
    assert_eq!(both[1].body, both[0].body);
    let client = stack.post(&path, &Value::Null).await;
    assert_eq!(client.status(), 403, "only admins redeliver");
    stack.stop().await;
}

#[tokio::test]
async fn a_job_url_needs_a_tenant_secret_and_only_admins_manage_endpoints() {
    let stack = Stack::start().await;
    let response = stack
        .post(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "hi", "webhook_url": "http://127.0.0.1:9/x" }),
        )
        .await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.expect("problem");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("no webhook secret")
    );

    let path = format!("/v1/admin/tenants/{}/webhook", acme(&stack).await);
    let client = reqwest::Client::new()
        .put(stack.url(&path))
        .bearer_auth(&stack.token)
        .json(&json!({ "url": null }))
        .send()
        .await
        .expect("PUT");
    assert_eq!(client.status(), 403);
    let unknown = stack
        .admin(
            Method::GET,
            "/v1/admin/tenants/0190b7a4-7a0e-7000-8000-000000000000/webhook",
            &Value::Null,
        )
        .await;
    assert_eq!(unknown.status(), 404);
    stack.stop().await;
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_no_sooner_than_asked() {
    let stack = Stack::start().await;
    set_endpoint(&stack, Value::Null).await;
    let receiver = Receiver::start(vec![429, 200]).await;

    stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "hi", "webhook_url": receiver.url }),
        )
        .await;
    let received = receiver.wait_for(2).await;

    // The schedule alone would retry after ~100 ms; the receiver asked for a second.
    let gap = received[1].at - received[0].at;
    assert!(
        gap >= std::time::Duration::from_millis(950),
        "retried after {gap:?}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_delivery_whose_message_was_lost_is_sent_by_the_sweeper() {
    let stack = Stack::start().await;
    let receiver = Receiver::start(vec![200]).await;
    set_endpoint(&stack, json!(receiver.url)).await;
    let id = stack.insert_unpublished_job("lost").await;
    // A terminal statement committed its delivery, and the process died before publishing it.
    sqlx::query(
        "with done as (update jobs set status = 'failed', finished_at = now(),
                                       error_code = 'internal_error', error_message = 'lost'
                        where id = $1 returning tenant_id)
         insert into webhook_deliveries (id, tenant_id, job_id, event_type, url, tenant_endpoint,
                                         next_attempt_at)
         select gen_random_uuid(), tenant_id, $1, 'job.failed', $2, true, now() - interval '1 minute'
           from done",
    )
    .bind(id)
    .bind(&receiver.url)
    .execute(&stack.pool)
    .await
    .expect("insert a delivery");

    let received = receiver.wait_for(1).await;
    let body: Value = serde_json::from_str(&received[0].body).expect("JSON");
    assert_eq!(body["type"], "job.failed");
    assert_eq!(body["data"]["id"], id.to_string());
    let delivery = settled_delivery(&stack, &id.to_string()).await;
    assert_eq!(delivery["status"], "succeeded");
    stack.stop().await;
}

#[tokio::test]
async fn retries_to_an_endpoint_disabled_meanwhile_stop() {
    let mut worker = test_worker_settings();
    worker.webhooks.schedule =
        tollgate_core::webhook::RetrySchedule::new(vec![std::time::Duration::from_secs(1)]);
    let stack = Stack::with(Options {
        worker_settings: worker,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start(vec![500, 200]).await;
    set_endpoint(&stack, json!(receiver.url)).await;

    let job = stack.generate("llama3", "hi").await;
    receiver.wait_for(1).await;
    // Another delivery's 410 disabled the endpoint while this one waited for its retry.
    sqlx::query("update tenants set webhook_disabled_at = now() where name = 'acme'")
        .execute(&stack.pool)
        .await
        .expect("disable");
    let delivery = settled_delivery(&stack, job["id"].as_str().expect("id")).await;

    assert_eq!(delivery["status"], "failed");
    assert_eq!(status_codes(&delivery), [500, 0]);
    let error = delivery["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("disabled"), "{error}");
    assert_eq!(receiver.received().len(), 1, "nothing more was sent");
    stack.stop().await;
}
