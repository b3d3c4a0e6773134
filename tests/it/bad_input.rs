//! What fuzzing found in the inputs themselves: a NUL character in any stored string is a 422
//! naming the field, with nothing written; metadata holding the largest doubles round-trips and
//! never makes a job unreadable; the price list reads with a model whose only price is to come.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Stack, client, idle};

#[tokio::test]
async fn a_nul_character_anywhere_is_refused_naming_the_field_and_nothing_is_written() {
    let stack = Stack::with(idle()).await;
    let tenant: Value = stack
        .admin(
            Method::POST,
            "/v1/admin/tenants",
            &json!({ "name": "globex" }),
        )
        .await
        .json()
        .await
        .expect("tenant");
    let tenant_id = tenant["id"].as_str().expect("tenant id");
    let nul = "a\u{0}b";
    let user = |content: &str| json!([{ "role": "user", "content": content }]);
    // (admin?, path, body, the field the 422 names)
    let cases = [
        (
            false,
            "/v1/generate".to_owned(),
            json!({ "model": "llama3", "prompt": nul }),
            "prompt",
        ),
        (
            false,
            "/v1/chat".into(),
            json!({ "model": "llama3", "messages": user(nul) }),
            "messages[0].content",
        ),
        (
            false,
            "/v1/embedding".into(),
            json!({ "model": "llama3", "input": ["ok", nul] }),
            "input[1]",
        ),
        (
            false,
            "/v1/generate".into(),
            json!({ "model": "llama3", "prompt": "p", "options": { "system": nul } }),
            "options.system",
        ),
        (
            false,
            "/v1/generate".into(),
            json!({ "model": "llama3", "prompt": "p", "metadata": { "order": nul } }),
            "metadata.order",
        ),
        (
            false,
            "/v1/generate".into(),
            json!({ "model": "llama3", "prompt": "p", "metadata": { nul: 1 } }),
            "metadata",
        ),
        (
            false,
            "/v1/batches".into(),
            json!({ "kind": "generate", "model": "llama3",
                 "items": [{ "custom_id": "a", "prompt": "ok" }, { "custom_id": nul, "prompt": "ok" }] }),
            "items[1].custom_id",
        ),
        (
            true,
            "/v1/admin/tenants".into(),
            json!({ "name": nul }),
            "name",
        ),
        (
            true,
            format!("/v1/admin/tenants/{tenant_id}/tokens"),
            json!({ "name": nul, "role": "client" }),
            "name",
        ),
    ];
    for (admin, path, body, field) in cases {
        let response = if admin {
            stack.admin(Method::POST, &path, &body).await
        } else {
            stack.post(&path, &body).await
        };
        assert_eq!(response.status(), 422, "{path} {field}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.expect("problem");
        assert_eq!(problem["field"], field, "{path}: {problem}");
    }

    // A JSONL batch line, a batch's metadata in its query string, a query parameter.
    let jsonl = client()
        .post(stack.url("/v1/batches?kind=generate&model=llama3"))
        .bearer_auth(&stack.token)
        .header("content-type", "application/jsonl")
        .body("{\"custom_id\":\"a\",\"prompt\":\"ok\"}\n{\"custom_id\":\"b\",\"prompt\":\"x\\u0000\"}\n")
        .send()
        .await
        .expect("send");
    assert_eq!(jsonl.status(), 422);
    let problem: Value = jsonl.json().await.expect("problem");
    assert_eq!(problem["field"], "items[1].prompt", "{problem}");
    let metadata =
        client()
            .post(stack.url(
                "/v1/batches?kind=generate&model=llama3&metadata=%7B%22k%22%3A%22%5Cu0000%22%7D",
            ))
            .bearer_auth(&stack.token)
            .header("content-type", "application/jsonl")
            .body("{\"custom_id\":\"a\",\"prompt\":\"ok\"}\n")
            .send()
            .await
            .expect("send");
    assert_eq!(metadata.status(), 422);
    let problem: Value = metadata.json().await.expect("problem");
    assert_eq!(problem["field"], "metadata.k", "{problem}");
    let listing = stack.get("/v1/jobs?cursor=a%00b").await;
    assert_eq!(listing.status(), 422);
    let problem: Value = listing.json().await.expect("problem");
    assert_eq!(problem["field"], "cursor", "{problem}");

    // The OpenAI surface: a file's name and a line of the file (its errors are OpenAI's 400s).
    let line = json!({ "custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                       "body": { "model": "llama3", "messages": user(nul) } })
    .to_string();
    for (name, content) in [
        ("in\u{0}put.jsonl", line.replace("\\u0000", "")),
        ("input.jsonl", line),
    ] {
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part(
                "file",
                reqwest::multipart::Part::text(content).file_name(name.to_owned()),
            );
        let response = client()
            .post(stack.url("/openai/v1/files"))
            .bearer_auth(&stack.token)
            .multipart(form)
            .send()
            .await
            .expect("upload");
        assert_eq!(response.status(), 400, "{name:?}");
        let error: Value = response.json().await.expect("OpenAI error");
        // A NUL in the name breaks the form's part headers, which is what the answer says.
        let said = if name.contains('\0') { "form" } else { "NUL" };
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(said)),
            "{error}"
        );
    }

    for table in ["jobs", "batches", "files", "api_tokens"] {
        let expected = if table == "api_tokens" { 2 } else { 0 };
        assert_eq!(stack.rows(table).await, expected, "{table}");
    }
    assert_eq!(stack.rows("tenants").await, 3, "acme, ops and globex");
    stack.stop().await;
}

#[tokio::test]
async fn metadata_with_the_largest_doubles_round_trips_and_the_job_stays_readable() {
    let stack = Stack::with(idle()).await;
    let metadata = json!({
        "max": f64::MAX,
        "min": -f64::MAX,
        "tiny": 5e-324,
        "long": 123_456_789_012_345_678_901_234_567_890.0_f64,
        "tag": "catalogue",
    });
    let job = stack
        .submit(
            "/v1/generate",
            &json!({ "model": "llama3", "prompt": "p", "metadata": metadata }),
        )
        .await;
    assert_eq!(job["metadata"], metadata, "the 202 shows it exactly");
    let id = job["id"].as_str().expect("id");

    let shown = stack.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(shown.status(), 200);
    let shown: Value = shown.json().await.expect("job");
    assert_eq!(shown["metadata"], metadata);
    assert_eq!(shown["metadata"]["max"].as_f64(), Some(f64::MAX));
    let listing = stack.get("/v1/jobs").await;
    assert_eq!(listing.status(), 200, "the listing reads the job");
    let listing: Value = listing.json().await.expect("listing");
    assert_eq!(listing["data"][0]["metadata"], metadata);
    assert_eq!(stack.rows("jobs").await, 1);
    stack.stop().await;
}

#[tokio::test]
async fn the_price_list_reads_with_a_model_whose_only_price_is_to_come() {
    let stack = Stack::with(idle()).await;
    let price = json!({ "provider": "openai", "model": "gpt-next", "input_per_1k": "0.01",
                        "output_per_1k": "0.02", "effective_from": "2099-01-01T00:00:00Z" });
    let created = stack.admin(Method::POST, "/v1/admin/prices", &price).await;
    assert_eq!(created.status(), 201);

    let listed = stack
        .admin(Method::GET, "/v1/admin/prices", &Value::Null)
        .await;
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.expect("prices");
    let future: Vec<&Value> = listed["data"]
        .as_array()
        .expect("prices")
        .iter()
        .filter(|p| p["model"] == "gpt-next")
        .collect();
    assert_eq!(future.len(), 1, "{listed}");
    assert_eq!(future[0]["current"], false);
    stack.stop().await;
}
