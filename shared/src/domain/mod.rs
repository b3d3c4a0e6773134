//! Domain types: the vocabulary of jobs, tenants, requests and settings, parsed once at the edge.

mod access;
pub mod anthropic;
mod batch;
pub mod cache;
mod capability;
pub mod conversation;
mod fleet;
mod ids;
mod job;
mod job_error;
mod json;
mod name;
pub mod openai_batch;
mod prices;
mod providers;
mod rate;
pub mod reasoning;
mod request;
mod routing;
mod settings;
mod trace;
mod upstream;

pub use access::{
    AccessChange, AccessRules, Denied, DomainPattern, client_ip, parse_domains, parse_networks,
};
pub use batch::{BatchItem, BatchSpec, MAX_BATCH_ITEMS, Template, ValidItem};
pub use capability::{Capabilities, Capability};
pub use conversation::Conversation;
pub use fleet::{
    FleetModels, FleetRoute, Host, HostChange, HostKind, HostSpec, MAX_HOST_SLOTS, bulk_slots,
    host_name, model_key,
};
pub use ids::{BatchId, FileId, JobId, TenantId, TokenId};
pub use job::{Job, JobError, JobKind, JobStatus, Role, Usage};
pub use job_error::{FailureClass, JobErrorCode};
pub use json::{NUL_REFUSED, line_syntax_error, nul_in_json, nul_in_value};
pub use name::Name;
pub use prices::{Price, PriceList};
pub use providers::{
    CloudAccount, CloudChange, CloudKind, KeyHeader, OPENAI_BASE_URL, ProviderName,
};
pub use rate::{Decision, RateLimit};
pub use reasoning::{Effort, Reasoning};
pub use request::{
    AnswerFormat, ChatRequest, EmbeddingInput, EmbeddingRequest, GenerateRequest,
    GenerationOptions, JobRequest, MAX_CHOICES, MAX_EMBEDDING_INPUTS, MAX_MESSAGES, MAX_STOP_TEXTS,
    MAX_TEXT_CHARS, MAX_TOP_LOGPROBS, ModelName, SEVERAL_NOT_STREAMED, ValidationError,
    asked_logprobs,
};
pub use routing::{
    Candidate, DataPolicy, LocalWait, Route, RouteInput, RouteReason, Unserved, WhenBusy,
};
pub use settings::{
    ModelRoutes, Retention, RetryPolicy, Runtime, Settings, SettingsChange, Strategy,
};
pub use trace::TraceParent;
pub use upstream::{CircuitPolicy, SealedKey, check_base_url};
