//! A job as clients see it, and the small enums it is made of.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::BatchId;
use super::JobErrorCode;
use super::JobId;

/// What a job asks a provider to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Generate,
    Chat,
    Embedding,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Generate => "generate",
            Self::Chat => "chat",
            Self::Embedding => "embedding",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "generate" => Some(Self::Generate),
            "chat" => Some(Self::Chat),
            "embedding" => Some(Self::Embedding),
            _ => None,
        }
    }
}

/// Where a job is in its life. `succeeded`, `failed` and `cancelled` are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Queued,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Queued,
        Self::Running,
        Self::Retrying,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// What a token may do: operators are `admin`, applications are `client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Client => "client",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "client" => Some(Self::Client),
            _ => None,
        }
    }
}

/// Why a job failed, with a stable machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobError {
    pub code: JobErrorCode,
    pub message: String,
    /// Anthropic's own error body, as it answered the last call: a client of its dialect is
    /// answered with it unchanged (kept in the job's row, not shown in its views).
    #[serde(skip)]
    pub upstream: Option<Box<serde_json::Value>>,
}

impl JobError {
    pub fn new(code: JobErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            upstream: None,
        }
    }
}

/// What a job used and is billed: token counts (the provider's, or estimated with a tokenizer when
/// it reported none: `estimated`) and the cost as a decimal string, `null` when no price was in
/// force (`unpriced`: the job is never billed as free).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub total_tokens: i32,
    /// Of the completion tokens, those the model spent reasoning (as the provider reported
    /// them; estimated from the reasoning's text where it shows it and counts none).
    #[serde(default)]
    pub reasoning_tokens: i32,
    /// Of the prompt tokens, those read from the provider's cache.
    #[serde(default)]
    pub cached_tokens: i32,
    /// Of the prompt tokens, those written to the provider's cache (Anthropic's).
    #[serde(default)]
    pub cache_write_tokens: i32,
    pub cost: Option<String>,
    pub estimated: bool,
    pub unpriced: bool,
}

/// A job as the API returns it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    pub id: JobId,
    pub kind: JobKind,
    pub status: JobStatus,
    pub model: String,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub result: Option<serde_json::Value>,
    pub error: Option<JobError>,
    pub usage: Option<Usage>,
    pub attempts: i32,
    pub metadata: Option<serde_json::Value>,
    /// Where the job's terminal event is POSTed, if it named a URL (else the tenant's endpoint).
    pub webhook_url: Option<String>,
    /// A batch's item: its batch and the client's id for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<BatchId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    /// The client follows its text as it is generated (`event: delta` on its event stream).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Why it went to its provider: `active`, `fallback`, `overflow` or `share`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_reason: Option<String>,
    /// The data policy its run honoured (`local_only`: the cloud was never considered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_policy: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What the response cache did: `hit` (answered from a stored answer, or an identical job's
    /// run meanwhile), `miss` or `bypass`; absent when its caller has no cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<super::cache::CacheState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_name() {
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(JobStatus::parse("done"), None);
    }

    #[test]
    fn only_final_states_are_terminal() {
        let terminal: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                JobStatus::Succeeded,
                JobStatus::Failed,
                JobStatus::Cancelled
            ]
        );
    }
}
