//! What travels on the queue: ids and a version, never the payload (Postgres holds that) — except
//! the pieces of a streaming job's text, which are transient: they go only to the api instances
//! following the job, and the finished job holds the whole text.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Acknowledged, Subject};
use crate::domain::{JobId, JobStatus};

/// A message with a version: written as JSON, and read only at the version this build knows, so
/// a rolling deploy tells old messages from new ones (and a poison message decodes to `None`).
pub trait Versioned: Serialize + DeserializeOwned {
    const VERSION: u8;

    fn version(&self) -> u8;

    #[expect(
        clippy::expect_used,
        reason = "messages are structs of plain fields (no map with non-string keys): JSON takes them"
    )]
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a message of plain fields always serializes")
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Self>(bytes)
            .ok()
            .filter(|m| m.version() == Self::VERSION)
    }
}

/// "Run this job." Versioned so a rolling deploy can tell old messages from new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    pub v: u8,
    pub job_id: JobId,
}

impl JobMessage {
    pub fn new(job_id: JobId) -> Self {
        Self {
            v: <Self as Versioned>::VERSION,
            job_id,
        }
    }
}

/// "Attempt this webhook delivery." The row holds the URL, payload and attempt count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookMessage {
    pub v: u8,
    pub delivery_id: uuid::Uuid,
}

impl WebhookMessage {
    pub fn new(delivery_id: uuid::Uuid) -> Self {
        Self {
            v: <Self as Versioned>::VERSION,
            delivery_id,
        }
    }
}

/// "This job changed": its new status and revision, for api instances whose clients watch it. A
/// hint, not a record: watchers read the job itself from Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    pub v: u8,
    pub job_id: JobId,
    pub revision: i32,
    pub status: JobStatus,
}

impl JobEvent {
    pub fn new(job_id: JobId, revision: i32, status: JobStatus) -> Self {
        Self {
            v: <Self as Versioned>::VERSION,
            job_id,
            revision,
            status,
        }
    }

    /// The binding that receives every job's events.
    pub const ROUTING_PATTERN: &'static str = "job.*";

    /// The events exchange's routing key for a job.
    pub fn routing_key(job_id: JobId) -> String {
        format!("job.{job_id}")
    }
}

/// A piece of a streaming job's text, or the end of its stream, for the api instances following
/// the job (routing key: [`StreamMessage::routing_key`]). Published on one channel in order, so the end comes after
/// the last piece; `seq` numbers the pieces from 0, so a follower sees any that were lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMessage {
    pub v: u8,
    pub job_id: JobId,
    pub seq: u32,
    pub part: StreamPart,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamPart {
    /// The next piece of the text.
    Text(String),
    /// The next piece of the model's reasoning (an api of the release before drops the message
    /// as undecodable; its client sees the text alone).
    Thinking(String),
    /// The provider's signature of the reasoning before it (Anthropic's), which a client sends
    /// back with it (an api of the release before drops the message; its client gets the
    /// signature from the finished job).
    Signature(String),
    /// A block the provider wrote, whole, in its own form (Anthropic's redacted reasoning, a
    /// server tool's call or result).
    Block(serde_json::Value),
    /// The run ended with the job in `status` (committed before this is sent).
    End(JobStatus),
}

impl StreamMessage {
    /// The text exchange's routing key of a job's pieces: `<instance>.<job id>`, the instance being
    /// the api holding the streaming client (`-` if none does).
    pub fn routing_key(stream_to: Option<&str>, job_id: JobId) -> String {
        format!("{}.{job_id}", stream_to.unwrap_or("-"))
    }

    /// The binding that receives every piece of the jobs whose client `instance` holds.
    pub fn instance_pattern(instance: &str) -> String {
        format!("{instance}.*")
    }

    /// The binding that receives every piece of job `job_id`, wherever its client is.
    pub fn job_pattern(job_id: JobId) -> String {
        format!("*.{job_id}")
    }

    pub fn new(job_id: JobId, seq: u32, part: StreamPart) -> Self {
        Self {
            v: <Self as Versioned>::VERSION,
            job_id,
            seq,
            part,
        }
    }
}

/// "Stop this job": a cancel asked for while it runs, for every worker (the one holding it acts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelMessage {
    pub v: u8,
    pub job_id: JobId,
}

impl CancelMessage {
    pub fn new(job_id: JobId) -> Self {
        Self {
            v: <Self as Versioned>::VERSION,
            job_id,
        }
    }
}

impl Acknowledged for JobMessage {
    fn subject(&self) -> Subject {
        Subject::Job(self.job_id)
    }
}

impl Acknowledged for WebhookMessage {
    fn subject(&self) -> Subject {
        Subject::WebhookDelivery(self.delivery_id)
    }
}

impl Versioned for JobMessage {
    const VERSION: u8 = 1;

    fn version(&self) -> u8 {
        self.v
    }
}

impl Versioned for WebhookMessage {
    const VERSION: u8 = 1;

    fn version(&self) -> u8 {
        self.v
    }
}

impl Versioned for JobEvent {
    const VERSION: u8 = 1;

    fn version(&self) -> u8 {
        self.v
    }
}

impl Versioned for StreamMessage {
    const VERSION: u8 = 1;

    fn version(&self) -> u8 {
        self.v
    }
}

impl Versioned for CancelMessage {
    const VERSION: u8 = 1;

    fn version(&self) -> u8 {
        self.v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_and_garbage_does_not_decode() {
        let message = JobMessage::new(JobId::new());
        assert_eq!(JobMessage::decode(&message.encode()), Some(message));
        assert_eq!(
            JobMessage::decode(b"{\"v\":2,\"job_id\":\"0190b7a4-7a0e-7000-8000-000000000000\"}"),
            None
        );
        assert_eq!(JobMessage::decode(b"not json"), None);
    }

    #[test]
    fn webhook_messages_and_job_events_round_trip() {
        let message = WebhookMessage::new(uuid::Uuid::now_v7());
        assert_eq!(WebhookMessage::decode(&message.encode()), Some(message));
        let event = JobEvent::new(JobId::new(), 3, JobStatus::Succeeded);
        assert_eq!(JobEvent::decode(&event.encode()), Some(event));
        assert_eq!(JobEvent::decode(b"{}"), None);
        let piece = StreamMessage::new(JobId::new(), 4, StreamPart::Text("Hi".into()));
        assert_eq!(StreamMessage::decode(&piece.encode()), Some(piece));
        let end = StreamMessage::new(JobId::new(), 5, StreamPart::End(JobStatus::Failed));
        assert_eq!(StreamMessage::decode(&end.encode()), Some(end));
        let cancel = CancelMessage::new(JobId::new());
        assert_eq!(CancelMessage::decode(&cancel.encode()), Some(cancel));
    }
}
