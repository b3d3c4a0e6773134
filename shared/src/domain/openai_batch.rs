//! The endpoints an OpenAI Batch API batch may call, stored with the batch (its lines are read by
//! the api's OpenAI surface).

use super::JobKind;

/// The endpoints a batch's lines may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Responses,
    Embeddings,
}

impl Endpoint {
    pub const ALL: [Self; 3] = [Self::ChatCompletions, Self::Responses, Self::Embeddings];

    pub fn parse(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == url)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Responses => "/v1/responses",
            Self::Embeddings => "/v1/embeddings",
        }
    }

    /// The kind of job each line becomes (a Responses request is a conversation).
    pub fn kind(self) -> JobKind {
        match self {
            Self::ChatCompletions | Self::Responses => JobKind::Chat,
            Self::Embeddings => JobKind::Embedding,
        }
    }
}
