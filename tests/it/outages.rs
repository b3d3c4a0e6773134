//! A database outage seen from the api: once Postgres is known to be down, a submission is
//! answered 503 with `Retry-After` within a second (in OpenAI's shape on its surface) and `/readyz`
//! says so at once; both recover as soon as the database is back.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Proxy, Stack, client, eventually, idle, test_api_settings};

#[tokio::test]
async fn while_the_database_is_down_submissions_get_503_within_a_second() {
    let proxy = Proxy::to_postgres().await;
    let stack = Stack::with(idle()).await;
    let pool = stack.pool_through(&proxy).await;
    let api = stack.start_api_on(pool, test_api_settings()).await;
    let submit = || {
        client()
            .post(format!("{api}/v1/generate"))
            .bearer_auth(&stack.token)
            .json(&json!({ "model": "llama3", "prompt": "hi" }))
            .send()
    };
    let readyz = || client().get(format!("{api}/readyz")).send();
    assert_eq!(submit().await.expect("submit").status(), 202);

    proxy.cut();
    eventually("the api knows the database is down", || async {
        readyz().await.expect("readyz").status() == 503
    })
    .await;
    for _ in 0..5 {
        let started = Instant::now();
        let refused = submit().await.expect("submit");
        assert_eq!(refused.status(), 503);
        assert!(refused.headers().contains_key("retry-after"));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answered after {:?}",
            started.elapsed()
        );
    }
    // The OpenAI surface says so in OpenAI's shape.
    let listing = client()
        .get(format!("{api}/openai/v1/batches"))
        .bearer_auth(&stack.token)
        .send()
        .await
        .expect("list");
    assert_eq!(listing.status(), 503);
    let error: serde_json::Value = listing.json().await.expect("an OpenAI error");
    assert_eq!(error["error"]["type"], "server_error", "{error}");
    let started = Instant::now();
    let ready = readyz().await.expect("readyz");
    assert_eq!(ready.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    proxy.restore();
    let restored = Instant::now();
    eventually("submissions are accepted again", || async {
        submit().await.expect("submit").status() == 202
    })
    .await;
    assert!(
        restored.elapsed() < Duration::from_secs(2),
        "back after {:?}",
        restored.elapsed()
    );
    assert_eq!(readyz().await.expect("readyz").status(), 200);
    assert_eq!(
        stack.rows("jobs").await,
        2,
        "the refused ones wrote nothing"
    );
    stack.stop().await;
}
