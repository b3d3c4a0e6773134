//! RabbitMQ: the topology (every exchange and queue, in one file), a supervised connection that
//! reconnects with backoff, and the small versioned message a job travels as.

mod broker;
mod message;
mod topology;

pub use broker::{Broker, PublishError, Session};
pub use message::JobMessage;
pub use topology::{DELIVERY_LIMIT, RETRY_DELAYS, Topology, wait_bucket};
