//! The dashboard: its overview and the reads it added to the API (other tenants' jobs and batches
//! for admins, a job's attempts, settings changes audited), the files it is served as, and the
//! whole of it in headless Chromium (`tests/browser/dashboard.mjs`, run here against this
//! stack; `scripts/browser` installs Chromium and the driver).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Stack, client, eventually};

/// Longest the browser scenario may take (a batch runs in it).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(240);

async fn get_as(stack: &Stack, token: &str, path: &str) -> (u16, Value) {
    let response = client()
        .get(stack.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn overview(stack: &Stack) -> Value {
    let response = stack
        .admin(Method::GET, "/v1/admin/overview", &Value::Null)
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("overview JSON")
}

#[tokio::test]
async fn the_overview_sums_every_process_activity_and_the_workers_provider_health() {
    let stack = Stack::start().await;
    let ids = stack.submit_many(5, "overview").await;
    for id in &ids {
        stack.wait_until_finished(id).await;
    }
    eventually(
        "the overview counts the jobs and shows the worker",
        || async {
            let overview = overview(&stack).await;
            let sum = |field: &str| -> i64 {
                overview["activity"]
                    .as_array()
                    .expect("activity")
                    .iter()
                    .map(|m| m[field].as_i64().expect("a count"))
                    .sum()
            };
            sum("jobs_accepted") >= 5
                && sum("jobs_succeeded") >= 5
                && sum("requests") >= 5
                && overview["workers"] == 1
        },
    )
    .await;
    let overview = overview(&stack).await;
    assert_eq!(overview["activity"].as_array().expect("minutes").len(), 60);
    for status in ["pending", "queued", "running", "retrying"] {
        assert!(overview["jobs"][status].is_i64(), "{status}: {overview}");
    }
    assert!(
        overview["spend"]["month"]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(|cost| cost > 0.0),
        "{overview}"
    );
    let queues: Vec<&str> = overview["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| q["queue"].as_str().expect("queue name"))
        .collect();
    assert!(queues.contains(&"jobs.interactive"), "{queues:?}");
    let providers = overview["providers"].as_array().expect("providers");
    let host = providers
        .iter()
        .find(|p| p["provider"] == "local" && p["host"] == "default")
        .unwrap_or_else(|| panic!("the fleet's host: {providers:?}"));
    assert_eq!(host["circuit"], "closed");
    assert_eq!(host["workers"], 1);
    assert!(host["slots"].as_u64().is_some_and(|s| s > 0), "{host}");
    let (status, refused) = get_as(&stack, &stack.token, "/v1/admin/overview").await;
    assert_eq!((status, &refused["code"]), (403, &json!("forbidden")));
    stack.stop().await;
}

#[tokio::test]
async fn admins_read_any_tenants_jobs_and_batches_and_clients_only_their_own() {
    let stack = Stack::start().await;
    let job = stack.generate("llama3", "whose job").await;
    let id = job["id"].as_str().expect("id");
    let batch = stack
        .submit(
            "/v1/batches",
            &json!({"kind": "generate", "model": "llama3",
                    "items": [{"custom_id": "a", "prompt": "one"}]}),
        )
        .await;
    let batch_id = batch["id"].as_str().expect("batch id");
    let acme = stack.tenant_id("acme").await;
    let ops = stack.tenant_id("ops").await;
    let admin = &stack.admin_token;
    for path in [
        format!("/v1/jobs?tenant_id={acme}"),
        format!("/v1/jobs/{id}?tenant_id={acme}"),
        format!("/v1/jobs/{id}/attempts?tenant_id={acme}"),
        format!("/v1/jobs/{id}/deliveries?tenant_id={acme}"),
        format!("/v1/batches?tenant_id={acme}"),
        format!("/v1/batches/{batch_id}?tenant_id={acme}"),
    ] {
        let (status, body) = get_as(&stack, admin, &path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, listed) = get_as(&stack, admin, &format!("/v1/jobs?tenant_id={acme}")).await;
    assert!(
        listed["data"]
            .as_array()
            .expect("jobs")
            .iter()
            .any(|j| j["id"] == id)
    );
    let (_, attempts) = get_as(
        &stack,
        admin,
        &format!("/v1/jobs/{id}/attempts?tenant_id={acme}"),
    )
    .await;
    let attempts = attempts["data"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["provider"], "local");
    assert_eq!(attempts[0]["outcome"], "succeeded");
    // Without the tenant an admin reads its own tenant's, where the job is not.
    let (status, _) = get_as(&stack, admin, &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 404);
    // A client reads its own tenant's, named or not, and never another's.
    let client = &stack.token;
    assert_eq!(
        get_as(&stack, client, &format!("/v1/jobs/{id}/attempts"))
            .await
            .0,
        200
    );
    assert_eq!(
        get_as(&stack, client, &format!("/v1/jobs?tenant_id={acme}"))
            .await
            .0,
        200
    );
    for path in [
        format!("/v1/jobs?tenant_id={ops}"),
        format!("/v1/jobs/{id}?tenant_id={ops}"),
        format!("/v1/batches?tenant_id={ops}"),
        format!("/v1/batches/{batch_id}/events?tenant_id={ops}"),
    ] {
        let (status, body) = get_as(&stack, client, &path).await;
        assert_eq!(
            (status, &body["code"]),
            (403, &json!("forbidden")),
            "{path}"
        );
    }
    let (status, body) = get_as(&stack, admin, "/v1/jobs?tenant_id=nope").await;
    assert_eq!((status, &body["field"]), (422, &json!("tenant_id")));
    stack.stop().await;
}

#[tokio::test]
async fn a_settings_change_is_audited_field_by_field_without_the_key() {
    let stack = Stack::start().await;
    stack
        .patch_settings(
            &json!({"ai_fallback_provider": "openai", "ai_openai_api_key": "sk-audit-me-1234"}),
        )
        .await;
    let (status, audit) = get_as(&stack, &stack.admin_token, "/v1/admin/audit").await;
    assert_eq!(status, 200);
    let entry = audit["data"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "settings.update")
        .unwrap_or_else(|| panic!("a settings entry: {audit}"))
        .clone();
    assert_eq!(
        entry["details"]["ai_fallback_provider"],
        json!({"from": "none", "to": "openai"})
    );
    assert_eq!(
        entry["details"]["ai_openai_api_key"]["to"],
        json!({"set": true, "last4": "1234"})
    );
    assert!(entry["details"].get("version").is_none(), "{entry}");
    assert!(
        !audit.to_string().contains("sk-audit-me"),
        "the key is never in the audit"
    );
    // A new key that ends like the old one still shows as a change of key.
    stack
        .patch_settings(&json!({"ai_openai_api_key": "sk-another-one-1234"}))
        .await;
    let (_, audit) = get_as(&stack, &stack.admin_token, "/v1/admin/audit?limit=1").await;
    let details = &audit["data"][0]["details"];
    assert_eq!(
        details["ai_openai_api_key"]["to"],
        json!({"set": true, "last4": "1234"}),
        "{audit}"
    );
    assert!(!audit.to_string().contains("sk-another"), "{audit}");
    stack.stop().await;
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_with_a_strict_policy() {
    let stack = Stack::start().await;
    let page = client()
        .get(stack.url("/dashboard"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("policy")
        .to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    let html = page.text().await.expect("html");
    assert!(html.contains("/dashboard/app.js"), "{html}");
    // Every module the page loads, and every module they import, is served (no file is fetched
    // from anywhere else: every import is relative).
    let mut pending = vec!["app.js".to_owned(), "style.css".to_owned()];
    let mut seen = Vec::new();
    while let Some(file) = pending.pop() {
        if seen.contains(&file) {
            continue;
        }
        let response = client()
            .get(stack.url(&format!("/dashboard/{file}")))
            .send()
            .await
            .expect("asset");
        assert_eq!(response.status(), 200, "{file}");
        assert!(
            response.headers().contains_key("content-security-policy"),
            "{file}"
        );
        let text = response.text().await.expect("asset text");
        let dir = Path::new(&file).parent().expect("a folder").to_path_buf();
        for import in imports(&text) {
            assert!(
                import.starts_with('.'),
                "{file} imports {import} from elsewhere"
            );
            let path = dir.join(&import);
            pending.push(normalise(&path));
        }
        seen.push(file);
    }
    assert!(seen.len() >= 12, "{seen:?}");
    let missing = client()
        .get(stack.url("/dashboard/nope.js"))
        .send()
        .await
        .expect("missing");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    stack.stop().await;
}

/// The module specifiers of `import … from '…'` in a script, and the pages the shell loads
/// (`module: '…'`, imported when the page is shown).
fn imports(script: &str) -> Vec<String> {
    let mut found = Vec::new();
    for marker in ["from '", "module: '"] {
        for (at, _) in script.match_indices(marker) {
            let rest = &script[at + marker.len()..];
            if let Some(end) = rest.find('\'') {
                found.push(rest[..end].to_owned());
            }
        }
    }
    found
}

/// `pages/../api.js` as `api.js`.
fn normalise(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for part in path.components() {
        match part.as_os_str().to_str().expect("a path") {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name.to_owned()),
        }
    }
    parts.join("/")
}

#[tokio::test]
async fn in_headless_chromium_an_operator_and_a_client_use_the_dashboard() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser = root.join("browser");
    assert!(
        browser.join("node_modules/playwright-core").exists(),
        "run scripts/browser first (installs Chromium and playwright-core)"
    );
    let stack = Stack::start().await;
    // A request answered from acme's response cache, for the usage page to count.
    crate::cache::cache_on(&stack, "acme", &stack.token, json!({ "enabled": true })).await;
    for _ in 0..2 {
        crate::cache::ask(&stack, &stack.token, &crate::cache::question("a lamp"), &[]).await;
    }
    let screenshots = root.join("../target/dashboard-screenshots");
    let run = tokio::process::Command::new("node")
        .arg(browser.join("dashboard.mjs"))
        .env("DASHBOARD_URL", &stack.api_url)
        .env("ADMIN_TOKEN", &stack.admin_token)
        .env("CLIENT_TOKEN", &stack.token)
        .env("SCREENSHOTS", &screenshots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BROWSER_TIMEOUT, run)
        .await
        .expect("the browser scenario ends in time")
        .expect("node runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    assert!(said.contains("every step passed"), "{said}");
    // What the browser did is what the gateway holds.
    let (_, settings) = get_as(&stack, &stack.admin_token, "/v1/admin/settings").await;
    assert_eq!(settings["ai_provider"], "hybrid");
    let (_, batches) = get_as(&stack, &stack.admin_token, "/v1/batches").await;
    assert_eq!(batches["data"][0]["status"], "completed", "{batches}");
    assert_eq!(batches["data"][0]["counts"]["succeeded"], 4, "{batches}");
    stack.stop().await;
}
