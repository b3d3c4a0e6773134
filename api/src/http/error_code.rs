//! Every `code` a problem+json answer can carry: one enumerated set, stable for clients to match on.
//! The drop-in surfaces answer in their own shapes, carrying the same codes. The OpenAPI document
//! lists them (the `ErrorCode` schema).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A problem's stable `code` (also its `type`, `urn:tollgate:problem:<code>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body or query could not be read (bad JSON, wrong shape).
    MalformedRequest,
    /// A field's value is refused; `field` names it.
    InvalidField,
    /// No bearer token.
    MissingToken,
    /// The token is unknown, revoked, or its tenant disabled.
    InvalidToken,
    /// The token's role may not do this (admin routes).
    Forbidden,
    /// The token allows only some origins, and the request named none.
    OriginRequired,
    /// The request's origin is not among the token's allowed domains.
    OriginNotAllowed,
    /// The client's address is not among the token's allowed addresses.
    IpNotAllowed,
    /// No such route, job, batch, tenant, token, file or delivery (or not the caller's).
    NotFound,
    /// The job's id is older than the jobs kept (`job_retention_days`): its data was dropped.
    JobExpired,
    /// No provider serves the model.
    ModelNotFound,
    /// The route does not take this method.
    MethodNotAllowed,
    /// A tenant with that name exists.
    TenantExists,
    /// A host with that name exists.
    HostExists,
    /// A price for that provider and model takes effect at that instant already.
    PriceExists,
    /// An admin cannot disable its own tenant.
    OwnTenant,
    /// The job has already ended.
    JobNotCancellable,
    /// The batch has completed.
    BatchNotCancellable,
    /// The dead-lettered item's batch was cancelled: it stays failed.
    BatchCancelled,
    /// A batch's output and error files cannot be deleted on their own.
    GeneratedFile,
    /// A request with this `Idempotency-Key` is still being handled.
    IdempotencyKeyInUse,
    /// This `Idempotency-Key` was used with a different request.
    IdempotencyKeyReused,
    /// The body is over the size limit.
    BodyTooLarge,
    /// The body did not arrive in time.
    RequestTimeout,
    /// The request's head is over the size limit.
    HeaderTooLarge,
    /// The request's URI is too long.
    UriTooLong,
    /// The body is not JSON (or JSONL where a batch takes it).
    UnsupportedMediaType,
    /// The tenant's monthly budget or token quota would be exceeded.
    QuotaExceeded,
    /// The token's or tenant's rate limit is reached; `Retry-After` says when to come back.
    RateLimited,
    /// Too many failed authentications from this address.
    TooManyAuthFailures,
    /// A call outlived its wait; the job goes on (its id is given).
    JobStillRunning,
    /// The database or the message broker is unavailable; `Retry-After` says when to retry.
    ServiceUnavailable,
    /// A provider (an Ollama host) refused a model operation.
    UpstreamError,
    /// Something failed on the server; it is logged.
    InternalError,
    /// The job behind a call was cancelled.
    Cancelled,
    /// The provider refused the job's request.
    InvalidRequest,
    /// The job's input is over the model's context.
    InputTooLong,
    /// Every provider that could run the job was rate limited.
    ProviderRateLimited,
    /// No provider could take the job (none configured, or all circuits open).
    NoProviderAvailable,
    /// The provider did not answer in time.
    ProviderTimeout,
    /// The provider's stream broke after text had been sent.
    StreamInterrupted,
    /// The provider could not be reached.
    ProviderUnavailable,
    /// The provider refused the gateway's credentials.
    ProviderUnauthorized,
    /// The job behind a call failed inside the gateway.
    JobFailed,
    /// The job behind a call failed at its provider.
    ProviderError,
}

impl ErrorCode {
    /// Every code, in the order above.
    pub const ALL: [Self; 45] = [
        Self::MalformedRequest,
        Self::InvalidField,
        Self::MissingToken,
        Self::InvalidToken,
        Self::Forbidden,
        Self::OriginRequired,
        Self::OriginNotAllowed,
        Self::IpNotAllowed,
        Self::NotFound,
        Self::JobExpired,
        Self::ModelNotFound,
        Self::MethodNotAllowed,
        Self::TenantExists,
        Self::HostExists,
        Self::PriceExists,
        Self::OwnTenant,
        Self::JobNotCancellable,
        Self::BatchNotCancellable,
        Self::BatchCancelled,
        Self::GeneratedFile,
        Self::IdempotencyKeyInUse,
        Self::IdempotencyKeyReused,
        Self::BodyTooLarge,
        Self::RequestTimeout,
        Self::HeaderTooLarge,
        Self::UriTooLong,
        Self::UnsupportedMediaType,
        Self::QuotaExceeded,
        Self::RateLimited,
        Self::TooManyAuthFailures,
        Self::JobStillRunning,
        Self::ServiceUnavailable,
        Self::UpstreamError,
        Self::InternalError,
        Self::Cancelled,
        Self::InvalidRequest,
        Self::InputTooLong,
        Self::ProviderRateLimited,
        Self::NoProviderAvailable,
        Self::ProviderTimeout,
        Self::StreamInterrupted,
        Self::ProviderUnavailable,
        Self::ProviderUnauthorized,
        Self::JobFailed,
        Self::ProviderError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedRequest => "malformed_request",
            Self::InvalidField => "invalid_field",
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::Forbidden => "forbidden",
            Self::OriginRequired => "origin_required",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::NotFound => "not_found",
            Self::JobExpired => "job_expired",
            Self::ModelNotFound => "model_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::TenantExists => "tenant_exists",
            Self::HostExists => "host_exists",
            Self::PriceExists => "price_exists",
            Self::OwnTenant => "own_tenant",
            Self::JobNotCancellable => "job_not_cancellable",
            Self::BatchNotCancellable => "batch_not_cancellable",
            Self::BatchCancelled => "batch_cancelled",
            Self::GeneratedFile => "generated_file",
            Self::IdempotencyKeyInUse => "idempotency_key_in_use",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::BodyTooLarge => "body_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::HeaderTooLarge => "header_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::QuotaExceeded => "quota_exceeded",
            Self::RateLimited => "rate_limited",
            Self::TooManyAuthFailures => "too_many_auth_failures",
            Self::JobStillRunning => "job_still_running",
            Self::ServiceUnavailable => "service_unavailable",
            Self::UpstreamError => "upstream_error",
            Self::InternalError => "internal_error",
            Self::Cancelled => "cancelled",
            Self::InvalidRequest => "invalid_request",
            Self::InputTooLong => "input_too_long",
            Self::ProviderRateLimited => "provider_rate_limited",
            Self::NoProviderAvailable => "no_provider_available",
            Self::ProviderTimeout => "provider_timeout",
            Self::StreamInterrupted => "stream_interrupted",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::ProviderUnauthorized => "provider_unauthorized",
            Self::JobFailed => "job_failed",
            Self::ProviderError => "provider_error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_snake_case_and_written_once() {
        let names: std::collections::HashSet<&str> =
            ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        assert!(
            names
                .iter()
                .all(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }

    #[test]
    fn each_code_is_written_on_the_wire_as_its_name() {
        for code in ErrorCode::ALL {
            let wire = serde_json::to_value(code).expect("serializes");
            assert_eq!(wire, code.as_str());
            assert_eq!(serde_json::from_value::<ErrorCode>(wire).ok(), Some(code));
        }
    }
}
