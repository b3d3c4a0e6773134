//! RabbitMQ: the topology (every exchange and queue, in one file), a supervised connection that
//! reconnects with backoff, and the small versioned messages: a job to run, a webhook to deliver,
//! a job's change of status.

mod broker;
mod message;
mod topology;

pub use broker::{Broker, PublishError, Session};
pub use message::{JobEvent, JobMessage, WebhookMessage};
pub use topology::{DELIVERY_LIMIT, RETRY_DELAYS, Topology, wait_bucket};
