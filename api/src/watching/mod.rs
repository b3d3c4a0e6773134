//! Following a job after intake: its events from RabbitMQ for SSE and `Prefer: wait` ([`watch`]),
//! and a streaming job's text on this instance's queue ([`follow`]). Intake starts both before it
//! publishes, so nothing a job does after that is missed; [`crate::calls`] reads them.

pub mod follow;
pub mod watch;
