//! Every `code` a problem+json answer can carry: one enumerated set, stable for clients to match on.
//! The drop-in surfaces answer in their own shapes, carrying the same codes. The OpenAPI document
//! lists them (the `ErrorCode` schema). A job's own codes ([`JobErrorCode`]) become these in
//! [`ErrorCode::of_job`].

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tollgate_core::domain::JobErrorCode;
use utoipa::ToSchema;

/// A problem's stable `code` (also its `type`, `urn:tollgate:problem:<code>`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    strum::VariantArray,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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
    /// No provider can serve the model for this caller as the settings stand: the detail names
    /// the model and the reason (`data_policy`, `no_route` or `route_disabled`). A retry cannot
    /// help until an operator changes the routes or the caller's data policy.
    ModelNotServed,
    /// No provider's model for the requested model can do what the request needs (see its
    /// images, call its tools): `field` names what needs it. A retry cannot help until the model
    /// is pulled on a host that can, or an operator routes it to one.
    ModelLacksCapability,
    /// The route does not take this method.
    MethodNotAllowed,
    /// A tenant with that name exists.
    TenantExists,
    /// A host with that name exists.
    HostExists,
    /// A provider with that name exists.
    ProviderExists,
    /// The provider is named by model routes or settings (the detail lists them): change those
    /// first.
    ProviderInUse,
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
    /// An image the request shows cannot be used (not a PNG, JPEG, WebP or GIF, over the size
    /// limit, its URL refused or answering with an error); `field` names it. The same request
    /// will fail again.
    InvalidImage,
    /// An image's URL did not answer with it in time (or its server failed); `field` names it.
    /// The same request may succeed later.
    ImageUnreachable,
    /// The model's answers did not match the JSON schema (or JSON object) asked for; the detail
    /// names the first violation. Another try may succeed.
    InvalidStructuredOutput,
}

impl ErrorCode {
    /// Every code, in the order above.
    pub const ALL: &'static [Self] = <Self as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// What a call whose job failed with `code` answers: the status says whose fault it was (the
    /// request's, the provider's, or nobody's yet). The one place a job's code becomes the api's;
    /// each surface renders the result in its own dialect.
    pub fn of_job(code: &JobErrorCode) -> (StatusCode, Self) {
        use JobErrorCode as Job;
        match code {
            Job::Cancelled => (StatusCode::CONFLICT, Self::Cancelled),
            Job::ModelNotFound => (StatusCode::NOT_FOUND, Self::ModelNotFound),
            Job::InvalidRequest => (StatusCode::BAD_REQUEST, Self::InvalidRequest),
            Job::InputTooLong => (StatusCode::BAD_REQUEST, Self::InputTooLong),
            Job::ProviderRateLimited => (StatusCode::TOO_MANY_REQUESTS, Self::ProviderRateLimited),
            Job::NoProviderAvailable => {
                (StatusCode::SERVICE_UNAVAILABLE, Self::NoProviderAvailable)
            }
            Job::ProviderTimeout => (StatusCode::GATEWAY_TIMEOUT, Self::ProviderTimeout),
            Job::StreamInterrupted => (StatusCode::BAD_GATEWAY, Self::StreamInterrupted),
            Job::ProviderUnavailable => (StatusCode::BAD_GATEWAY, Self::ProviderUnavailable),
            Job::ProviderUnauthorized => (StatusCode::BAD_GATEWAY, Self::ProviderUnauthorized),
            Job::InternalError => (StatusCode::INTERNAL_SERVER_ERROR, Self::JobFailed),
            Job::InvalidStructuredOutput => {
                (StatusCode::BAD_GATEWAY, Self::InvalidStructuredOutput)
            }
            Job::InvalidImage => (StatusCode::BAD_REQUEST, Self::InvalidImage),
            Job::ImageUnreachable => (StatusCode::BAD_GATEWAY, Self::ImageUnreachable),
            Job::ProviderUnreachable
            | Job::ProviderBusy
            | Job::ProviderCircuitOpen
            | Job::FleetUnavailable
            | Job::HostRemoved
            | Job::ProviderError
            | Job::InvalidProviderResponse
            | Job::AbandonedRun
            | Job::Unknown(_) => (StatusCode::BAD_GATEWAY, Self::ProviderError),
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
        assert_eq!(ErrorCode::ALL.len(), 52);
        assert!(
            names
                .iter()
                .all(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }

    #[test]
    fn each_code_is_written_on_the_wire_as_its_name() {
        for &code in ErrorCode::ALL {
            let wire = serde_json::to_value(code).expect("serializes");
            assert_eq!(wire, code.as_str());
            assert_eq!(serde_json::from_value::<ErrorCode>(wire).ok(), Some(code));
        }
    }

    #[test]
    fn a_failed_job_answers_by_whose_fault_it_was() {
        use JobErrorCode as Job;
        let of = ErrorCode::of_job;
        assert_eq!(
            of(&Job::ModelNotFound),
            (StatusCode::NOT_FOUND, ErrorCode::ModelNotFound)
        );
        assert_eq!(
            of(&Job::Cancelled),
            (StatusCode::CONFLICT, ErrorCode::Cancelled)
        );
        assert_eq!(
            of(&Job::ProviderRateLimited),
            (
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::ProviderRateLimited
            )
        );
        assert_eq!(
            of(&Job::InternalError),
            (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::JobFailed)
        );
        assert_eq!(
            of(&Job::ProviderBusy),
            (StatusCode::BAD_GATEWAY, ErrorCode::ProviderError)
        );
        assert_eq!(
            of(&Job::from("some_future_code")),
            (StatusCode::BAD_GATEWAY, ErrorCode::ProviderError)
        );
    }
}
