//! Webhooks: what is signed and how (Standard Webhooks), which targets may be called (the SSRF
//! guard), and the schedule failed deliveries are retried on. Both binaries use the guard: the api
//! at submission, the worker again at delivery.

mod schedule;
mod signature;
mod target;

pub use schedule::RetrySchedule;
pub use signature::{SignatureError, SigningSecret, signature_header};
pub use target::{
    GuardedResolver, MAX_URL_LEN, Reach, TargetError, TargetRefused, check_target,
    check_target_within, forbidden, parse_url,
};

/// The `webhook-id` of a delivery: stable across its retries, the receiver's dedupe key.
pub fn message_id(delivery_id: uuid::Uuid) -> String {
    format!("msg_{}", delivery_id.simple())
}
