//! What the broker publishes: a job's work message with the trace it was accepted in (the
//! message's W3C `traceparent` header), and any message on its way with its id.

use lapin::BasicProperties;
use lapin::types::AMQPValue;

use super::{JobMessage, Versioned as _};
use crate::domain::{JobId, TraceParent};

/// The trace a delivered message carries, if it carries a valid one.
pub(super) fn traceparent_of(properties: &BasicProperties) -> Option<TraceParent> {
    let value = properties
        .headers()
        .as_ref()?
        .inner()
        .get(TraceParent::HEADER)?;
    match value {
        AMQPValue::LongString(text) => TraceParent::parse(&text.to_string()),
        _ => None,
    }
}

/// A job to send to a worker, with the trace it was accepted in (its message's `traceparent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    pub id: JobId,
    pub trace: Option<TraceParent>,
}

impl Work {
    pub fn new(id: JobId, trace: Option<TraceParent>) -> Self {
        Self { id, trace }
    }

    pub(super) fn message(&self) -> Outgoing {
        Outgoing {
            id: self.id.to_string(),
            body: JobMessage::new(self.id).encode(),
            trace: self.trace,
        }
    }
}

/// A message on its way: its id, body and trace.
pub(super) struct Outgoing {
    pub(super) id: String,
    pub(super) body: Vec<u8>,
    pub(super) trace: Option<TraceParent>,
}

impl Outgoing {
    pub(super) fn untraced(id: String, body: Vec<u8>) -> Self {
        Self {
            id,
            body,
            trace: None,
        }
    }
}
