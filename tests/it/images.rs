//! Images through every surface and both providers: the official `openai` and `ollama` Python
//! packages (`tests/openai/images.py`, `tests/ollama/images.py`) against a model on each provider,
//! the sims answering with what they were shown (type, size and the start of the SHA-256) so the
//! very bytes sent are seen arriving; image URLs fetched once, through the SSRF guard, within the
//! redirect, size, type and time limits; a batch whose items' images its workers fetch, one of
//! them bad; and bodies past the ordinary limit only for the images they carry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use crate::batches::{accepted, ended, post_batch, results, wait_for_batch};
use tollgate_core::image_fetch::ImageLimits;
use tollgate_core::webhook::Reach;

use crate::harness::{Options, Stack, client, test_api_settings, test_image_limits};

/// One model on each provider: llava (a vision model) on the Ollama sim, gpt-4.1-mini on the
/// OpenAI sim (reached through the fallback).
const MODELS: [&str; 2] = ["llava", "gpt-4.1-mini"];

/// The smallest PNG: one transparent pixel.
pub(crate) const PIXEL: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

pub(crate) fn pixel() -> Vec<u8> {
    STANDARD.decode(PIXEL).expect("base64")
}

/// What a sim says when shown `bytes` as a PNG.
pub(crate) fn seen(bytes: &[u8]) -> String {
    let digest: String = Sha256::digest(bytes)[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("a PNG of {} bytes (sha256 {digest})", bytes.len())
}

/// A PNG's signature followed by `len` bytes of nothing: what a sniffer takes for a PNG.
fn png_of(len: usize) -> Vec<u8> {
    let mut bytes = pixel()[..8].to_vec();
    bytes.resize(len, 0);
    bytes
}

/// A server of images on 127.0.0.1, counting the times `/pixel.png` was fetched.
struct ImageServer {
    base: String,
    fetched: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl ImageServer {
    async fn start() -> Self {
        let fetched = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .route("/pixel.png", get(served_pixel))
            .route("/hop/{n}", get(hop))
            .route("/away", get(away))
            .route(
                "/page.html",
                get(|| async { ([(header::CONTENT_TYPE, "text/html")], "<p>hi</p>") }),
            )
            .route(
                "/big.png",
                get(|| async { ([(header::CONTENT_TYPE, "image/png")], png_of(4096)) }),
            )
            .route("/slow.png", get(slow))
            .with_state(fetched.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
                .expect("image server");
        });
        Self {
            base,
            fetched,
            stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn fetched(&self) -> usize {
        self.fetched.load(Ordering::SeqCst)
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn served_pixel(State(fetched): State<Arc<AtomicUsize>>) -> Response {
    fetched.fetch_add(1, Ordering::SeqCst);
    ([(header::CONTENT_TYPE, "image/png")], pixel()).into_response()
}

/// `/hop/n` redirects to `/hop/n-1`, and `/hop/0` to the pixel: `n + 1` redirects in all.
async fn hop(Path(n): Path<u32>) -> Response {
    let to = match n {
        0 => "/pixel.png".to_owned(),
        n => format!("/hop/{}", n - 1),
    };
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

/// `/away?to=<url>` redirects there.
async fn away(Query(query): Query<HashMap<String, String>>) -> Response {
    let to = query.get("to").cloned().unwrap_or_default();
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

async fn slow(State(fetched): State<Arc<AtomicUsize>>) -> Response {
    tokio::time::sleep(Duration::from_secs(3)).await;
    served_pixel(State(fetched)).await
}

async fn stack() -> Stack {
    let stack = Stack::start().await;
    stack
        .patch_settings(&json!({ "ai_fallback_provider": "openai" }))
        .await;
    vision_route(&stack).await;
    stack
}

/// A stack whose api fetches image URLs within `limits`, with the vision route.
async fn stack_fetching(limits: ImageLimits) -> Stack {
    let stack = Stack::with(Options {
        api_settings: tollgate_api::ApiSettings {
            images: limits,
            ..test_api_settings()
        },
        ..Options::default()
    })
    .await;
    vision_route(&stack).await;
    stack
}

/// Routes `llava` to the Ollama sim's vision model, and to OpenAI.
pub(crate) async fn vision_route(stack: &Stack) {
    let routes = json!({ "routes": { "ollama": "llava", "openai": "gpt-4.1-mini" } });
    let response = stack
        .admin(reqwest::Method::PUT, "/v1/admin/aliases/llava", &routes)
        .await;
    assert_eq!(response.status(), 200);
}

async fn run_script(stack: &Stack, script: &str, server: &ImageServer) -> Value {
    let image_url = server.url("/pixel.png");
    let env = [
        ("TOLLGATE_MODELS", MODELS.join(",")),
        ("TOLLGATE_IMAGE_BASE64", PIXEL.to_owned()),
        ("TOLLGATE_IMAGE_URL", image_url),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    crate::openai_batches::run_sdk_script_with(stack, script, Duration::from_secs(180), &env).await
}

/// How many image rows the stack holds, and whether any job's row holds an image's bytes.
async fn stored(stack: &Stack) -> (i64, bool) {
    let rows: i64 = sqlx::query_scalar("select count(*) from images")
        .fetch_one(&stack.pool)
        .await
        .expect("count images");
    let inline: bool = sqlx::query_scalar(
        "select exists (select 1 from jobs where request::text like '%' || $1 || '%')",
    )
    .bind(&PIXEL[..24])
    .fetch_one(&stack.pool)
    .await
    .expect("look for bytes in requests");
    (rows, inline)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_package_shows_images() {
    let stack = stack().await;
    let server = ImageServer::start().await;
    let summary = run_script(&stack, "openai/images.py", &server).await;
    let expected = seen(&pixel());
    for model in MODELS {
        for way in ["inline", "fetched", "streamed", "responses"] {
            let said = summary["seen"][model][way].as_str().unwrap_or_default();
            assert!(said.contains(&expected), "{model} {way}: {said}");
        }
    }
    for (refusal, code) in [
        ("not_an_image", "invalid_image"),
        ("missing", "invalid_image"),
        ("not_a_url", "invalid_image"),
    ] {
        assert_eq!(
            summary["refusals"][refusal],
            json!({ "param": "messages[0].content[1]", "code": code }),
            "{summary}"
        );
    }
    // Each job showing the URL fetched it once; the bytes are stored once for the day, never in a
    // job's row.
    assert_eq!(server.fetched(), 2 * MODELS.len());
    assert_eq!(stored(&stack).await, (1, false));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ollama_python_package_shows_images() {
    let stack = stack().await;
    let server = ImageServer::start().await;
    let summary = run_script(&stack, "ollama/images.py", &server).await;
    let expected = seen(&pixel());
    for model in MODELS {
        for way in ["chat", "streamed", "generate"] {
            let said = summary["seen"][model][way].as_str().unwrap_or_default();
            assert!(said.contains(&expected), "{model} {way}: {said}");
        }
    }
    let refused = summary["refused"].as_str().unwrap_or_default();
    assert!(
        refused.starts_with("messages[0].images[0]") && refused.contains("PNG"),
        "{summary}"
    );
    assert_eq!(stored(&stack).await, (1, false));
    stack.stop().await;
}

/// A native chat showing the image at `url`, as `POST /v1/chat` takes it.
pub(crate) fn showing(url: &str) -> Value {
    json!({ "model": "llava", "messages": [{ "role": "user", "content": [
        { "type": "text", "text": "What is this?" },
        { "type": "image", "url": url, "detail": "high" }] }] })
}

pub(crate) async fn submit(stack: &Stack, body: &Value) -> (u16, Value) {
    let response = client()
        .post(stack.url("/v1/chat"))
        .bearer_auth(&stack.token)
        .header("Prefer", "wait=10")
        .json(body)
        .send()
        .await
        .expect("POST /v1/chat");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn image_urls_are_fetched_within_their_limits() {
    let stack = stack_fetching(ImageLimits {
        max_bytes: 2048,
        timeout: Duration::from_secs(1),
        ..test_image_limits()
    })
    .await;
    let server = ImageServer::start().await;
    // Three redirects are followed, each target checked.
    let (status, job) = submit(&stack, &showing(&server.url("/hop/2"))).await;
    assert_eq!(status, 200, "{job}");
    let text = job["result"]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains(&seen(&pixel())), "{job}");
    for (path, code, why) in [
        ("/hop/3", "invalid_image", "redirects more than 3 times"),
        ("/page.html", "invalid_image", "text/html"),
        (
            "/big.png",
            "invalid_image",
            "over the image limit of 2048 bytes",
        ),
        ("/missing.png", "invalid_image", "404"),
        ("/slow.png", "image_unreachable", "within 1 s"),
    ] {
        let (status, problem) = submit(&stack, &showing(&server.url(path))).await;
        assert_eq!(status, 422, "{path}: {problem}");
        assert_eq!(problem["code"], code, "{path}: {problem}");
        assert_eq!(problem["field"], "messages[0].content[1]", "{problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(why), "{path}: {detail}");
    }
    // An inline image over the limit is refused by its size, before any fetch.
    let big = format!("data:image/png;base64,{}", STANDARD.encode(png_of(4096)));
    let (status, problem) = submit(&stack, &showing(&big)).await;
    assert_eq!((status, &problem["code"]), (422, &json!("invalid_image")));
    // Nothing refused was written.
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs")
        .fetch_one(&stack.pool)
        .await
        .expect("count");
    assert_eq!(jobs, 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn image_urls_reaching_internal_addresses_are_refused_after_redirects_too() {
    // Public addresses, and of the internal ones only the image server's own (127.0.0.1).
    let allowed = "127.0.0.1/32".parse().expect("a network");
    let stack = stack_fetching(ImageLimits {
        reach: Reach::PublicAnd(vec![allowed].into()),
        ..test_image_limits()
    })
    .await;
    let server = ImageServer::start().await;
    let (status, job) = submit(&stack, &showing(&server.url("/pixel.png"))).await;
    assert_eq!(status, 200, "the allowed network is reached: {job}");
    let elsewhere = server.url("/pixel.png").replace("127.0.0.1", "127.0.0.2");
    for url in [
        elsewhere.clone(),
        server.url(&format!("/away?to={elsewhere}")),
        server.url("/away?to=http://169.254.169.254/latest/meta-data.png"),
        server.url("/away?to=http://[::1]/pixel.png"),
    ] {
        let (status, problem) = submit(&stack, &showing(&url)).await;
        assert_eq!(status, 422, "{url}: {problem}");
        assert_eq!(problem["code"], "invalid_image", "{problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("may not be fetched"), "{url}: {detail}");
    }
    assert_eq!(
        server.fetched(),
        1,
        "only the allowed address was fetched from"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_passes_the_ordinary_limit_only_for_its_inline_images() {
    let stack = Stack::start().await;
    vision_route(&stack).await;
    // 1.5 MB of image in a body the ordinary 1 MB limit would refuse.
    let image = png_of(1_500_000);
    let url = format!("data:image/png;base64,{}", STANDARD.encode(&image));
    let (status, job) = submit(&stack, &showing(&url)).await;
    assert_eq!(status, 200, "{job}");
    let text = job["result"]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains(&format!("of {} bytes", image.len())), "{job}");
    // The same size of text is not.
    let messages: Vec<Value> = (0..8)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            json!({ "role": role, "content": "word ".repeat(38_000) })
        })
        .chain([json!({ "role": "user", "content": "More?" })])
        .collect();
    let body = json!({ "model": "llama3", "messages": messages });
    let (status, problem) = submit(&stack, &body).await;
    assert_eq!(status, 413, "{problem}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_fetches_its_items_images_in_the_worker_once() {
    let stack = stack().await;
    let server = ImageServer::start().await;
    // Ollama fails every call: each item falls back to OpenAI, without fetching again.
    stack.ollama.set_knobs(provider_sim::Knobs {
        error_rate: 1.0,
        ..provider_sim::Knobs::default()
    });
    let item = |custom_id: &str, url: &str| {
        json!({ "custom_id": custom_id, "messages": [{ "role": "user", "content": [
            { "type": "text", "text": "What is this?" }, { "type": "image", "url": url }] }] })
    };
    let mut items: Vec<Value> = (0..4)
        .map(|i| item(&format!("web{i}"), &server.url("/pixel.png")))
        .collect();
    items.push(item("inline", &format!("data:image/png;base64,{PIXEL}")));
    items.push(item("bad", &server.url("/page.html")));
    let body = json!({ "kind": "chat", "model": "llava", "items": items });
    let batch = accepted(post_batch(&stack, &stack.token, &body).await).await;
    assert_eq!(server.fetched(), 0, "accepted without fetching");
    let id = batch["id"].as_str().expect("id");
    wait_for_batch(&stack, &stack.token, id, ended).await;
    let expected = seen(&pixel());
    for line in results(&stack, &stack.token, id).await {
        let custom_id = line["custom_id"].as_str().unwrap_or_default();
        if custom_id == "bad" {
            assert_eq!(line["error"]["code"], "invalid_image", "{line}");
            assert!(
                line["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("text/html")
            );
            continue;
        }
        let text = line["result"]["message"]["content"]
            .as_str()
            .unwrap_or_default();
        assert!(text.contains(&expected), "{line}");
    }
    assert_eq!(server.fetched(), 4, "each item fetched its image once");
    // The fetched items' rows name the image by its hash now; its bytes are stored once.
    let unfetched: i64 = sqlx::query_scalar(
        "select count(*) from jobs where status = 'succeeded' and request::text like '%pixel.png%'",
    )
    .fetch_one(&stack.pool)
    .await
    .expect("count");
    assert_eq!(unfetched, 0);
    assert_eq!(stored(&stack).await, (1, false));
    stack.stop().await;
}
