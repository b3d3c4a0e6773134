//! Following a job after intake: its events from RabbitMQ for SSE and `Prefer: wait` ([`watch`]),
//! a streaming job's text on this instance's queue ([`follow`]), and a call that waits for its job
//! or feeds its text, cancelling it when the client goes away ([`feed`]), and what it answers once
//! the job has ended ([`answer`]).

pub mod answer;
pub mod feed;
pub mod follow;
pub mod watch;
