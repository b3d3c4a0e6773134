//! One delivery message: claim the delivery, render (once) and sign its body, POST it, record the
//! attempt and, when it failed, schedule the next one.

use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng as _;
use serde_json::json;
use tollgate_core::db::webhooks::{self, AttemptRecord, AttemptVerdict, ClaimedDelivery};
use tollgate_core::db::{batches, jobs};
use tollgate_core::domain::TraceParent;
use tollgate_core::queue::{Delivery, WebhookMessage};
use tollgate_core::webhook::{SigningSecret, message_id};
use uuid::Uuid;

use super::attempt::{self, Next};
use crate::Context;

/// Time an attempt holds its delivery beyond the receiver's timeout, so a duplicate message cannot
/// start a second attempt meanwhile; if the deliverer dies, the sweeper sends it after that.
const CLAIM_MARGIN: Duration = Duration::from_secs(30);

#[tracing::instrument(
    name = "webhook delivery",
    skip_all,
    fields(delivery_id, job_id, trace_id)
)]
pub async fn handle(context: &Context, delivery: &Delivery<WebhookMessage>) {
    if let Some(message) = delivery.message() {
        let id = message.delivery_id;
        tracing::Span::current().record("delivery_id", tracing::field::display(id));
        if let Err(error) = attempt(context, id).await {
            // The row is still pending: once its claim lapses the sweeper sends it again.
            tracing::warn!(%error, "webhook attempt could not be recorded; the sweeper will retry");
        }
    } else {
        tracing::error!("undecodable webhook message; dropping it");
    }
    delivery.ack().await;
}

/// One attempt of a delivery: claim, body, sign, POST, record, schedule the next. Long on purpose:
/// the steps read in order, each with what happens when it fails.
async fn attempt(context: &Context, id: Uuid) -> Result<(), sqlx::Error> {
    let settings = &context.settings.webhooks;
    let lease = settings.timeout + CLAIM_MARGIN;
    let Some(claimed) = webhooks::claim(&context.pool, id, lease).await? else {
        tracing::debug!("delivery not due, delivered or given up; nothing to do");
        return Ok(());
    };
    let span = tracing::Span::current();
    if let Some(job_id) = claimed.job_id {
        span.record("job_id", tracing::field::display(job_id));
    }
    if let Some(parent) = claimed.traceparent.as_deref().and_then(TraceParent::parse) {
        tollgate_core::telemetry::continue_trace(&span, Some(&parent));
    }
    let payload = match &claimed.payload {
        Some(payload) => payload.clone(),
        None => {
            let rendered = render(context, &claimed).await?;
            webhooks::keep_payload(&context.pool, id, &rendered).await?
        }
    };
    let attempted_at = Utc::now();
    let clock = Instant::now();
    let answer = if claimed.endpoint_disabled {
        attempt::Answer::Refused("the tenant's endpoint was disabled (it answered 410 Gone)".into())
    } else {
        match signing_secrets(context, &claimed).await? {
            Ok(secrets) => {
                attempt::post(
                    &context.webhook_client,
                    &claimed.url,
                    settings.allow_private,
                    &message_id(id),
                    &payload,
                    &secrets,
                )
                .await
            }
            Err(why) => attempt::Answer::Refused(why),
        }
    };
    let (status_code, error, next) = attempt::judge(&answer);
    let attempts_made = usize::try_from(claimed.attempts).unwrap_or(0) + 1;
    let verdict = match next {
        Next::Delivered => AttemptVerdict::Delivered,
        Next::Gone => AttemptVerdict::Gone,
        Next::GiveUp => AttemptVerdict::GiveUp,
        Next::Retry { retry_after } => {
            let jitter = rand::rng().random_range(-1.0..=1.0);
            match settings
                .schedule
                .next_delay(attempts_made, retry_after, jitter)
            {
                Some(delay) => AttemptVerdict::RetryAfter(delay),
                None => AttemptVerdict::GiveUp,
            }
        }
    };
    let record = AttemptRecord {
        attempted_at,
        status_code,
        latency: clock.elapsed(),
        error,
    };
    webhooks::record_attempt(&context.pool, id, &record, verdict).await?;
    context.metrics.webhook(match verdict {
        AttemptVerdict::Delivered => "delivered",
        AttemptVerdict::RetryAfter(_) => "retrying",
        AttemptVerdict::GiveUp => "given_up",
        AttemptVerdict::Gone => "gone",
    });
    tracing::info!(
        status_code,
        ?verdict,
        attempt = attempts_made,
        "webhook attempt"
    );
    if let AttemptVerdict::RetryAfter(delay) = verdict
        && let Err(error) = context.broker.publish_webhook_delayed(id, delay).await
    {
        tracing::warn!(%error, "delayed webhook publish failed; the sweeper will resend");
    }
    Ok(())
}

/// The body every attempt sends: `{type, timestamp, data}` with the job, or the batch, as the API
/// shows it.
async fn render(context: &Context, claimed: &ClaimedDelivery) -> Result<String, sqlx::Error> {
    let data = match (claimed.job_id, claimed.batch_id) {
        (Some(job_id), _) => json!(jobs::get(&context.pool, claimed.tenant_id, job_id).await?),
        (None, Some(batch_id)) => {
            json!(batches::get(&context.pool, claimed.tenant_id, batch_id).await?)
        }
        (None, None) => serde_json::Value::Null,
    };
    let envelope = json!({
        "type": claimed.event_type,
        "timestamp": claimed.created_at,
        "data": data,
    });
    Ok(envelope.to_string())
}

/// The tenant's secrets, opened; `Err` with the reason when none can sign (which retrying will not
/// change until an operator acts, so the attempt is refused).
async fn signing_secrets(
    context: &Context,
    claimed: &ClaimedDelivery,
) -> Result<Result<Vec<SigningSecret>, String>, sqlx::Error> {
    let sealed = webhooks::signing_secrets(&context.pool, claimed.tenant_id).await?;
    let Some(key) = &context.settings.secret_key else {
        return Ok(Err(
            "TOLLGATE_SECRET_KEY is not set: webhook secrets cannot be opened".into(),
        ));
    };
    let secrets: Vec<SigningSecret> = sealed
        .iter()
        .filter_map(|sealed| {
            let secret = key
                .open_as(tollgate_core::secret::Purpose::WebhookSecret, sealed)
                .ok()?;
            SigningSecret::parse(secrecy::ExposeSecret::expose_secret(&secret)).ok()
        })
        .collect();
    if secrets.is_empty() {
        return Ok(Err("the tenant has no webhook secret that opens".into()));
    }
    Ok(Ok(secrets))
}
