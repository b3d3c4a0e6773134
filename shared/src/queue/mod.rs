//! RabbitMQ: the topology (every exchange and queue, in one file), a supervised connection that
//! reconnects with backoff, and the small versioned messages: a job to run, a webhook to deliver,
//! a job's change of status, a streaming job's text, a cancel for a running job.

mod broker;
mod hints;
mod message;
mod outgoing;
mod topology;

pub use broker::{Broker, PublishError, Session};
pub use hints::HintQueue;
pub use message::{
    CancelMessage, JobEvent, JobMessage, StreamMessage, StreamPart, Versioned, WebhookMessage,
};
pub use outgoing::{Work, traceparent_of};
pub use topology::{DELIVERY_LIMIT, RETRY_DELAYS, Topology, wait_bucket};
