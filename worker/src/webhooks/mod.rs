//! The webhook deliverer: consumes delivery messages and makes one signed attempt per message,
//! recording it; a failed attempt is retried through the webhook wait queues on the Svix schedule.

mod attempt;
mod deliver;

use std::sync::Arc;
use std::time::Duration;

use tollgate_core::queue::WebhookMessage;
use tollgate_core::webhook::{GuardedResolver, RetrySchedule};

use crate::Context;

/// How webhooks are sent.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Longest a receiver may take to answer.
    pub timeout: Duration,
    /// Deliveries attempted at once by this process.
    pub concurrency: usize,
    /// The waits between attempts.
    pub schedule: RetrySchedule,
    /// Lets webhooks reach loopback and private addresses (tests, on-premise receivers).
    pub allow_private: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            concurrency: 32,
            schedule: RetrySchedule::default(),
            allow_private: false,
        }
    }
}

/// The HTTP client of deliveries: no redirects followed (a 3xx is a failed attempt), no proxy from
/// the environment (it would connect on the guard's behalf to anything), and only addresses the
/// SSRF guard checked.
#[expect(
    clippy::expect_used,
    reason = "the settings are plain values; only a TLS backend that cannot start fails, at start-up"
)]
pub fn client(settings: &WebhookSettings) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver {
            reach: settings.allow_private.into(),
        }))
        .user_agent(concat!("Tollgate-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the webhook client's settings are valid")
}

/// Consumes delivery messages until shutdown.
pub async fn run(context: Arc<Context>) {
    let queue = context.broker.topology().webhooks_queue();
    let concurrency = context.settings.webhooks.concurrency;
    crate::consumer::consume::<WebhookMessage, _, _>(
        context,
        queue,
        concurrency,
        |context, delivery| async move {
            deliver::handle(&context, &delivery).await;
        },
    )
    .await;
}
