//! Slow and oversized clients: headers that trickle in past the deadline lose the connection, a
//! body that stalls gets 408, and a request head over the size limit is refused; a prompt, a
//! conversation or an embedding input over its limit is refused naming the field and the limit.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use serde_json::{Value, json};
use shared::domain::{MAX_EMBEDDING_INPUTS, MAX_MESSAGES, MAX_TEXT_CHARS};

use crate::harness::{Options, Stack, test_api_settings};

async fn stack_with_short_timeouts() -> Stack {
    Stack::with(Options {
        api_settings: tollgate_api::ApiSettings {
            header_read_timeout: Duration::from_millis(300),
            body_read_timeout: Duration::from_millis(300),
            ..test_api_settings()
        },
        worker: false,
        ..Options::default()
    })
    .await
}

async fn connect(stack: &Stack) -> TcpStream {
    TcpStream::connect(stack.api_url.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Everything the server sends until it closes the connection (panics after 5 s).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the server closed the connection in time")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_client_trickling_its_headers_loses_the_connection() {
    let stack = stack_with_short_timeouts().await;
    let mut stream = connect(&stack).await;
    let started = Instant::now();
    stream
        .write_all(b"POST /v1/generate HTTP/1.1\r\nHost: tollgate\r\nX-Slow: ")
        .await
        .expect("write");

    let answer = read_until_closed(&mut stream).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
    assert!(!answer.contains("202"), "{answer}");
    stack.stop().await;
}

#[tokio::test]
async fn a_stalled_body_gets_408() {
    let stack = stack_with_short_timeouts().await;
    let mut stream = connect(&stack).await;
    let head = format!(
        "POST /v1/generate HTTP/1.1\r\nHost: tollgate\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":",
        stack.token
    );
    stream.write_all(head.as_bytes()).await.expect("write");

    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(stack.rows("jobs").await, 0);
    stack.stop().await;
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let stack = stack_with_short_timeouts().await;
    let mut stream = connect(&stack).await;
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: tollgate\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    // The server may stop reading before all of it is written.
    let _ = stream.write_all(head.as_bytes()).await;

    let answer = read_until_closed(&mut stream).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    assert!(!answer.contains("200 OK"));
    stack.stop().await;
}

#[tokio::test]
async fn requests_over_the_content_limits_are_refused_naming_the_field() {
    let stack = Stack::with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let long = "x".repeat(MAX_TEXT_CHARS + 1);
    let message = json!({ "role": "user", "content": "hi" });
    let cases = [
        (
            "/v1/generate",
            json!({ "model": "llama3", "prompt": long }),
            "prompt",
            MAX_TEXT_CHARS,
        ),
        (
            "/v1/chat",
            json!({ "model": "llama3", "messages": vec![message; MAX_MESSAGES + 1] }),
            "messages",
            MAX_MESSAGES,
        ),
        (
            "/v1/chat",
            json!({ "model": "llama3", "messages": [{ "role": "user", "content": long }] }),
            "messages[0].content",
            MAX_TEXT_CHARS,
        ),
        (
            "/v1/embedding",
            json!({ "model": "llama3", "input": vec!["a"; MAX_EMBEDDING_INPUTS + 1] }),
            "input",
            MAX_EMBEDDING_INPUTS,
        ),
    ];
    for (path, body, field, limit) in cases {
        let response = stack.post(path, &body).await;
        assert_eq!(response.status(), 422, "{path} {field}");
        let problem: Value = response.json().await.expect("problem");
        assert_eq!(problem["field"], field, "{problem}");
        let detail = problem["detail"].as_str().expect("detail");
        assert!(detail.contains(&limit.to_string()), "{problem}");
    }
    assert_eq!(stack.rows("jobs").await, 0);
    stack.stop().await;
}
