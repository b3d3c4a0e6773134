//! RabbitMQ: the topology (every exchange and queue, in one file), a supervised connection that
//! reconnects with backoff, and the small versioned messages: a job to run, a webhook to deliver,
//! a job's change of status, a streaming job's text, a cancel for a running job. Nothing outside
//! this module names lapin: the rest of the code publishes through [`Broker`], reads work through
//! a typed [`Subscription`] whose [`Delivery`]s are acked, requeued or dead-lettered, and hears
//! hints through a [`HintQueue`].
//!
//! - `topology`: every exchange and queue as a table of specs;
//! - `broker`: the supervised connection, publishing with confirms;
//! - `outgoing`: work messages and the trace they carry;
//! - `message`: the versioned messages;
//! - `subscription`: durable queues read with acknowledgements;
//! - `hints`: per-connection hint queues.

mod broker;
mod hints;
mod message;
mod outgoing;
mod subscription;
mod topology;

pub use broker::{Broker, PublishError, Session};
pub use hints::{HintBinding, HintBounds, HintError, HintQueue};
pub use message::{
    CancelMessage, JobEvent, JobMessage, StreamMessage, StreamPart, Versioned, WebhookMessage,
};
pub use outgoing::Work;
pub use subscription::{Acknowledged, Delivery, Subject, Subscription};
pub use topology::{DELIVERY_LIMIT, RETRY_DELAYS, Topology, wait_bucket};
