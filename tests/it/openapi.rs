//! The OpenAPI document the api serves (`/openapi.json`, derived from the handlers and their
//! types): every operation it lists is routed, and what the routes answer is what it describes,
//! checked against its JSON schemas. (That no route is served undescribed is the api's
//! `clippy.toml`: a route can only be registered from its `#[utoipa::path]`.)

use jsonschema::Validator;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Stack, client, idle};

/// The document, read from the running api.
async fn document(stack: &Stack) -> Value {
    let response = stack.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("the document is JSON")
}

/// Every operation in the document: its method and path.
fn operations(document: &Value) -> Vec<(Method, String)> {
    let paths = document["paths"].as_object().expect("paths");
    let mut found = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
            found.push((method, path.clone()));
        }
    }
    found
}

/// `path` with each `{parameter}` given `value`.
fn filled(path: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("a closed parameter") + open;
        out.push_str(&rest[..open]);
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let stack = Stack::with(idle()).await;
    let document = document(&stack).await;
    let operations = operations(&document);
    assert!(operations.len() >= 85, "{} operations", operations.len());
    // An id no row has: each route answers it with its own 404 (or refuses the empty body),
    // never the router's "no such route" or 405.
    let unknown = "0190a0a0-0000-7000-8000-000000000000";
    for (method, path) in operations {
        let body = matches!(method, Method::POST | Method::PUT | Method::PATCH)
            .then(|| json!({}))
            .unwrap_or(Value::Null);
        let response = stack
            .admin(method.clone(), &filled(&path, unknown), &body)
            .await;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_ne!(status, 405, "{method} {path} is routed: {text}");
        assert!(
            !text.contains("no such route"),
            "{method} {path} is routed: {status} {text}"
        );
    }
    // The check itself tells a route from none.
    let missing = stack.get("/v1/no-such-route").await;
    assert_eq!(missing.status(), 404);
    assert!(
        missing
            .text()
            .await
            .expect("body")
            .contains("no such route")
    );
    stack.stop().await;
}

/// Checks answers against the document's schemas.
struct Schemas {
    document: Value,
}

impl Schemas {
    /// The JSON schema of `method path`'s `status` answer, if it answers JSON.
    fn answer(&self, method: &Method, path: &str, status: u16) -> Option<Validator> {
        let operation = &self.document["paths"][path][method.as_str().to_lowercase()];
        assert!(operation.is_object(), "{method} {path} is documented");
        let content = &operation["responses"][status.to_string()]["content"];
        let schema = content
            .get("application/json")
            .or_else(|| content.get("application/problem+json"))?;
        let root = json!({
            "$ref": "#/schema",
            "schema": schema["schema"],
            "components": self.document["components"],
        });
        Some(
            jsonschema::options()
                .should_validate_formats(true)
                .build(&root)
                .expect("a valid schema"),
        )
    }

    /// The schema of one event of `method path`'s 200 event stream.
    fn event(&self, method: &Method, path: &str) -> Validator {
        let operation = &self.document["paths"][path][method.as_str().to_lowercase()];
        let schema = &operation["responses"]["200"]["content"]["text/event-stream"]["schema"];
        assert!(schema.is_object(), "{method} {path} documents its events");
        let root = json!({
            "$ref": "#/schema",
            "schema": schema,
            "components": self.document["components"],
        });
        jsonschema::options().build(&root).expect("a valid schema")
    }

    /// Asserts that every event of `stream`, answered by `method path`, is as the document says;
    /// returns the events as an SSE parser reads them.
    fn check_events(&self, method: &Method, path: &str, stream: &str) -> Vec<Value> {
        let validator = self.event(method, path);
        let events = sse_events(stream);
        assert!(!events.is_empty(), "{method} {path} sent events: {stream}");
        for event in &events {
            let errors: Vec<String> = validator
                .iter_errors(event)
                .map(|error| format!("{} at {}", error, error.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{method} {path}: {errors:#?}\n{event:#}");
        }
        events
    }

    /// Asserts that `body`, answered `status` by `method path`, is as the document says.
    fn check(&self, method: &Method, path: &str, status: u16, body: &Value) {
        let validator = self
            .answer(method, path, status)
            .unwrap_or_else(|| panic!("{method} {path} documents its {status} as JSON"));
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|error| format!("{} at {}", error, error.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: {errors:#?}\n{body:#}"
        );
    }
}

/// An event stream's events as an SSE client reads them (the HTML standard's parsing, as
/// conformance checkers apply it): `event` (`message` when unnamed), `id` (kept from one event to
/// the next until reset), `data` (its lines joined); comments, and events without data, skipped.
fn sse_events(stream: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut id: Option<String> = None;
    let (mut name, mut data): (Option<String>, Vec<&str>) = (None, Vec::new());
    for line in stream.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if !data.is_empty() {
                let mut event = json!({
                    "event": name.take().unwrap_or_else(|| "message".to_owned()),
                    "data": data.join("\n"),
                });
                if let Some(id) = &id {
                    event["id"] = json!(id);
                }
                events.push(event);
            }
            name = None;
            data.clear();
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = Some(value.to_owned()),
            "data" => data.push(value),
            "id" => id = Some(value.to_owned()),
            _ => {}
        }
    }
    events
}

/// Reads `method path`'s answer to `body` as an event stream.
async fn stream(stack: &Stack, method: Method, path: &str, body: &Value) -> String {
    let response = stack.send(&stack.token, method, path, body).await;
    assert_eq!(response.status(), 200, "{path}");
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(kind.starts_with("text/event-stream"), "{path}: {kind}");
    response.text().await.expect("the stream")
}

/// Every event stream the api serves sends the events its document describes: a job's and a
/// batch's events, a native streaming job, and OpenAI's Chat Completions and Responses streams.
#[tokio::test]
async fn the_event_streams_send_the_events_the_document_describes() {
    let stack = Stack::start().await;
    let schemas = Schemas {
        document: document(&stack).await,
    };
    let (get, post) = (Method::GET, Method::POST);

    let body = json!({ "model": "llama3", "prompt": "stream a kettle", "stream": true });
    let native = stream(&stack, post.clone(), "/v1/generate", &body).await;
    let events = schemas.check_events(&post, "/v1/generate", &native);
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(names.first(), Some(&"job"), "{names:?}");
    assert!(names.contains(&"delta"), "{names:?}");
    let ended: Value = serde_json::from_str(
        events.last().expect("events")["data"]
            .as_str()
            .expect("data"),
    )
    .expect("a job");
    assert_eq!(ended["status"], "succeeded");
    let job_id = ended["id"].as_str().expect("id").to_owned();
    let chat = json!({ "model": "llama3", "messages": [{ "role": "user", "content": "hi" }],
                       "stream": true });
    let native_chat = stream(&stack, post.clone(), "/v1/chat", &chat).await;
    schemas.check_events(&post, "/v1/chat", &native_chat);

    let path = "/v1/jobs/{id}/events";
    let job_events = stream(
        &stack,
        get.clone(),
        &format!("/v1/jobs/{job_id}/events"),
        &Value::Null,
    )
    .await;
    let events = schemas.check_events(&get, path, &job_events);
    let last = events.last().expect("events");
    assert!(
        last["event"] == "job" && last["id"].is_string(),
        "{events:?}"
    );

    let body = json!({ "kind": "generate", "model": "llama3",
                       "items": [{ "custom_id": "a", "prompt": "x" }] });
    let (_, batch) = call(&stack, &stack.token, post.clone(), "/v1/batches", &body).await;
    let batch_id = batch["id"].as_str().expect("batch id").to_owned();
    let batch_events = stream(
        &stack,
        get.clone(),
        &format!("/v1/batches/{batch_id}/events"),
        &Value::Null,
    )
    .await;
    let events = schemas.check_events(&get, "/v1/batches/{id}/events", &batch_events);
    assert!(events.iter().all(|e| e["event"] == "batch"), "{events:?}");

    let body = json!({ "model": "llama3", "messages": [{ "role": "user", "content": "hi" }],
                       "stream": true });
    let path = "/openai/v1/chat/completions";
    let chunks = stream(&stack, post.clone(), path, &body).await;
    let events = schemas.check_events(&post, path, &chunks);
    assert_eq!(events.last().expect("events")["data"], "[DONE]");
    let body = json!({ "model": "llama3", "input": "hi", "stream": true });
    let path = "/openai/v1/responses";
    let responses = stream(&stack, post.clone(), path, &body).await;
    let events = schemas.check_events(&post, path, &responses);
    assert_eq!(
        events.last().expect("events")["event"],
        "response.completed"
    );
    stack.stop().await;
}

/// Sends `method url` with `token`; the status and the body as JSON (`Null` when not JSON).
async fn call(stack: &Stack, token: &str, method: Method, url: &str, body: &Value) -> (u16, Value) {
    let response = stack.send(token, method, url, body).await;
    let status = response.status().as_u16();
    let json = response.json().await.unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test]
async fn what_the_routes_answer_is_what_the_document_describes() {
    let stack = Stack::start().await;
    let schemas = Schemas {
        document: document(&stack).await,
    };
    let post = Method::POST;

    // Something of every kind to read back: a finished job, a batch, an alias, an OpenAI file
    // and batch, a problem.
    let body = json!({ "model": "llama3", "prompt": "describe a kettle" });
    let (status, accepted) = call(&stack, &stack.token, post.clone(), "/v1/generate", &body).await;
    schemas.check(&post, "/v1/generate", status, &accepted);
    let job_id = accepted["id"].as_str().expect("job id").to_owned();
    stack.wait_until_finished(&job_id).await;
    let body = json!({ "model": "llama3", "input": ["one", "two"] });
    let (status, embedding) =
        call(&stack, &stack.token, post.clone(), "/v1/embedding", &body).await;
    schemas.check(&post, "/v1/embedding", status, &embedding);
    let body = json!({
        "kind": "generate",
        "model": "llama3",
        "items": [{ "custom_id": "a", "prompt": "x" }],
    });
    let (status, batch) = call(&stack, &stack.token, post.clone(), "/v1/batches", &body).await;
    schemas.check(&post, "/v1/batches", status, &batch);
    let batch_id = batch["id"].as_str().expect("batch id").to_owned();
    let body = json!({ "routes": { "ollama": "llama3:8b" } });
    let (status, alias) = call(
        &stack,
        &stack.admin_token,
        Method::PUT,
        "/v1/admin/aliases/house",
        &body,
    )
    .await;
    schemas.check(&Method::PUT, "/v1/admin/aliases/{model}", status, &alias);
    let (status, problem) = call(
        &stack,
        &stack.token,
        post.clone(),
        "/v1/chat",
        &json!({ "model": 1 }),
    )
    .await;
    schemas.check(&post, "/v1/chat", status, &problem);

    let line = json!({
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": { "model": "llama3", "messages": [{ "role": "user", "content": "hi" }] },
    });
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::text(format!("{line}\n")).file_name("in.jsonl"),
        );
    let upload = client()
        .post(stack.url("/openai/v1/files"))
        .bearer_auth(&stack.token)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let status = upload.status().as_u16();
    let file: Value = upload.json().await.expect("file JSON");
    schemas.check(&post, "/openai/v1/files", status, &file);
    let file_id = file["id"].as_str().expect("file id").to_owned();
    let body = json!({
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    });
    let (status, openai_batch) = call(
        &stack,
        &stack.token,
        post.clone(),
        "/openai/v1/batches",
        &body,
    )
    .await;
    schemas.check(&post, "/openai/v1/batches", status, &openai_batch);
    let openai_batch_id = openai_batch["id"].as_str().expect("batch id").to_owned();

    let (_, tenants) = call(
        &stack,
        &stack.admin_token,
        Method::GET,
        "/v1/admin/tenants",
        &Value::Null,
    )
    .await;
    let tenant_id = tenants["data"][0]["id"]
        .as_str()
        .expect("a tenant")
        .to_owned();
    let (_, hosts) = call(
        &stack,
        &stack.admin_token,
        Method::GET,
        "/v1/admin/hosts",
        &Value::Null,
    )
    .await;
    let host = hosts["data"][0]["name"]
        .as_str()
        .expect("a host")
        .to_owned();

    // Every read the document lists, with those ids: its answer, checked.
    let mut checked = 0;
    for (method, path) in operations(&schemas.document) {
        if method != Method::GET || schemas.answer(&method, &path, 200).is_none() {
            continue;
        }
        let url = path
            .replace(
                "/openai/v1/batches/{id}",
                &format!("/openai/v1/batches/{openai_batch_id}"),
            )
            .replace("/v1/jobs/{id}", &format!("/v1/jobs/{job_id}"))
            .replace("/v1/batches/{id}", &format!("/v1/batches/{batch_id}"))
            .replace("/files/{id}", &format!("/files/{file_id}"))
            .replace("/tenants/{id}", &format!("/tenants/{tenant_id}"))
            .replace("/hosts/{name}", &format!("/hosts/{host}"))
            .replace("/providers/{name}", "/providers/openai")
            .replace("/aliases/{model}", "/aliases/house")
            .replace("/models/{id}", "/models/llama3");
        assert!(!url.contains('{'), "{path}: the test knows its parameters");
        let tags = &schemas.document["paths"][&path]["get"]["tags"];
        let token = match tags
            .as_array()
            .is_some_and(|tags| tags.contains(&json!("Admin")))
        {
            true => &stack.admin_token,
            false => &stack.token,
        };
        let (status, body) = call(&stack, token, method.clone(), &url, &Value::Null).await;
        assert_eq!(status, 200, "GET {url}: {body}");
        schemas.check(&method, &path, status, &body);
        checked += 1;
    }
    assert!(checked >= 30, "{checked} reads checked");
    stack.stop().await;
}

/// A job row written by another release, with an error code this one does not know (on the job
/// and on its attempt): it reads — never a decode error — keeps its code, and what the routes
/// answer still matches the document.
#[tokio::test]
async fn a_stored_error_code_this_release_does_not_know_still_reads() {
    let stack = Stack::with(idle()).await;
    let id = stack
        .insert_unpublished_job("written by a newer release")
        .await;
    sqlx::query(
        "update jobs set status = 'failed', error_code = 'some_future_code',
                error_message = 'a newer release failed it', finished_at = now()
          where id = $1",
    )
    .bind(id)
    .execute(&stack.pool)
    .await
    .expect("update");
    sqlx::query(
        "insert into job_attempts (job_id, claim, provider, upstream_model, started_at,
                                   latency_ms, outcome, error_code, error_message)
         values ($1, 1, 'local', 'llama3', now(), 5, 'permanent_error', 'some_future_code',
                 'a newer release failed it')",
    )
    .bind(id)
    .execute(&stack.pool)
    .await
    .expect("insert attempt");
    let schemas = Schemas {
        document: document(&stack).await,
    };

    let job_url = format!("/v1/jobs/{id}");
    let (status, job) = call(&stack, &stack.token, Method::GET, &job_url, &Value::Null).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "some_future_code");
    schemas.check(&Method::GET, "/v1/jobs/{id}", 200, &job);

    let attempts_url = format!("/v1/jobs/{id}/attempts");
    let (status, attempts) = call(
        &stack,
        &stack.token,
        Method::GET,
        &attempts_url,
        &Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{attempts}");
    assert_eq!(attempts["data"][0]["error_code"], "some_future_code");
    schemas.check(&Method::GET, "/v1/jobs/{id}/attempts", 200, &attempts);

    let list_url = "/v1/jobs?status=failed";
    let (status, listed) = call(&stack, &stack.token, Method::GET, list_url, &Value::Null).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["data"][0]["error"]["code"], "some_future_code");
    stack.stop().await;
}
