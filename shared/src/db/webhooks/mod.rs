//! The webhook tables, one module each: the tenants' endpoints and signing secrets
//! ([`endpoints`]), the deliveries a job's or batch's terminal statement writes ([`deliveries`]),
//! and one row per attempt to send one ([`attempts`]).

pub mod attempts;
pub mod deliveries;
pub mod endpoints;

pub use attempts::{Attempt, AttemptRecord, AttemptVerdict, record_attempt};
pub use deliveries::{
    ClaimedDelivery, Delivery, DeliverySummary, claim, for_job, keep_payload, list, overdue,
    redeliver,
};
pub use endpoints::{
    Endpoint, SecretInfo, endpoint, has_secret, rotate_secret, set_endpoint, signing_secrets,
};
