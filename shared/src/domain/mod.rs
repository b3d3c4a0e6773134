//! Domain types: the vocabulary of jobs, tenants and requests, parsed once at the edge.

mod ids;
mod job;
mod request;

pub use ids::{JobId, TenantId, TokenId};
pub use job::{Job, JobError, JobKind, JobStatus, Role, Usage};
pub use request::{
    ChatMessage, ChatRequest, ChatRole, EmbeddingInput, EmbeddingRequest, GenerateRequest,
    GenerationOptions, JobRequest, ModelName, ValidationError,
};
