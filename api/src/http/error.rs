//! The API's one error type, answered as RFC 9457 `application/problem+json` from one place.
//!
//! Client errors carry a stable `code` (and the `field` when one is at fault); internal errors are
//! logged once here and answered as an opaque 500.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use super::error_code::ErrorCode;

/// An error answer's body (RFC 9457 problem details), `application/problem+json`. The drop-in
/// surfaces rewrite it in their own shapes, keeping `code`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// `urn:tollgate:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
    pub code: ErrorCode,
    /// The request field at fault (a 422's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A failed job's provider's own error body, as it answered (a surface of the provider's
    /// dialect answers with it unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub upstream: Option<Box<serde_json::Value>>,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    detail: String,
    field: Option<String>,
    retry_after_secs: Option<u64>,
    /// Further headers of the answer (a 429's `RateLimit-*`).
    headers: Vec<(HeaderName, HeaderValue)>,
    internal: Option<anyhow::Error>,
    /// A failed job's provider's own error body.
    upstream: Option<Box<serde_json::Value>>,
    /// The database could not be reached: the answer carries [`DatabaseUnreachable`].
    database_unreachable: bool,
}

/// Rewrites a problem+json answer in another surface's error shape (`render` writes the body from
/// the status and the problem), keeping its status and headers (`Retry-After`,
/// `WWW-Authenticate`); a 422 becomes 400, as OpenAI and Ollama answer a request they cannot
/// run. Any other answer passes untouched.
pub async fn in_dialect(
    response: Response,
    render: fn(StatusCode, &Problem) -> serde_json::Value,
) -> Response {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let read = axum::body::to_bytes(body, 64 * 1024).await;
    let problem = read
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| {
            ApiError::new(parts.status, ErrorCode::InternalError, "the request failed").problem()
        });
    if parts.status == StatusCode::UNPROCESSABLE_ENTITY {
        parts.status = StatusCode::BAD_REQUEST;
    }
    let body = render(parts.status, &problem);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

/// Marks an answer given because the database could not be reached, for
/// [`crate::http::database::gate`] to have its probe look at once.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseUnreachable;

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            field: None,
            retry_after_secs: None,
            headers: Vec::new(),
            internal: None,
            upstream: None,
            database_unreachable: false,
        }
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest, detail)
    }

    /// 422 naming the field at fault.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let mut error = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidField,
            format!("{field}: {}", message.into()),
        );
        error.field = Some(field);
        error
    }

    /// 422 under its own code, for a request that is well-formed but cannot be processed.
    pub fn unprocessable(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    pub fn unauthorized(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, detail)
    }

    /// 403 with a code naming the access rule that refused the request.
    pub fn denied(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, detail)
    }

    /// 410: what the id named existed and is no longer kept.
    pub fn gone(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, code, detail)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "this route does not accept that method",
        )
    }

    pub fn conflict(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 408: the client stopped sending its body before the read deadline.
    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            "the request body did not arrive in time",
        )
    }

    /// 431: the request head is over the limits the server loop sets (hyper answers these; see
    /// [`crate::http::head_errors`]).
    pub fn head_too_large(max_bytes: usize, max_headers: usize) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::HeaderTooLarge,
            format!(
                "the request head is over the limit of {max_bytes} bytes or {max_headers} header \
                 fields"
            ),
        )
    }

    /// 414: the request target is longer than the head allows.
    pub fn uri_too_long() -> Self {
        Self::new(
            StatusCode::URI_TOO_LONG,
            ErrorCode::UriTooLong,
            "the request URI is too long",
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "send the body as `Content-Type: application/json`",
        )
    }

    /// 429 `quota_exceeded` with `Retry-After` until the quota resets.
    pub fn quota_exceeded(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::QuotaExceeded,
            detail,
        );
        error.retry_after_secs = Some(retry_after_secs);
        error
    }

    /// 429 `rate_limited` with `Retry-After` (whole seconds, at least 1) and the limit's headers.
    pub fn rate_limited(
        detail: impl Into<String>,
        headers: Vec<(HeaderName, HeaderValue)>,
        retry_after: std::time::Duration,
    ) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            detail,
        );
        error.retry_after_secs = Some((retry_after.as_secs_f64().ceil() as u64).max(1));
        error.headers = headers;
        error
    }

    /// The same error, naming `field` as the one at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The same error with one more header (a call's `x-request-id`).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The error a sync call answers when its job failed: `status` by the job's error `code`.
    pub fn job_failed(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::new(status, code, detail)
    }

    /// The error with the failed job's provider's own error body.
    pub fn with_upstream(mut self, body: Option<Box<serde_json::Value>>) -> Self {
        self.upstream = body;
        self
    }

    /// 504: a sync call's job outlived the sync timeout. It goes on, at its URL.
    pub fn still_running(id: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::JobStillRunning,
            format!(
                "job {id} did not finish within the sync timeout; it goes on, and its outcome \
                 will be at /v1/jobs/{id}"
            ),
        )
    }

    /// The same error under another stable code.
    pub fn with_code(mut self, code: ErrorCode) -> Self {
        self.code = code;
        self
    }

    /// 503 with `Retry-After`: a dependency is down and nothing was written.
    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServiceUnavailable,
            detail,
        );
        error.retry_after_secs = Some(retry_after_secs);
        error
    }

    /// 503 while the database is known to be down (see [`crate::http::database`]).
    pub fn database_unavailable() -> Self {
        Self::unavailable("the database is unavailable", 2)
    }

    /// 502: an upstream the request depends on (Ollama, for model management) failed.
    pub fn bad_gateway(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, ErrorCode::UpstreamError, detail)
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        let mut this = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            "an internal error occurred",
        );
        this.internal = Some(error.into());
        this
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The field at fault, for 422s.
    pub fn field_name(&self) -> Option<String> {
        self.field.clone()
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The RFC 9457 body.
    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("urn:tollgate:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code,
            field: self.field.clone(),
            upstream: self.upstream.clone(),
        }
    }
}

/// A domain value that does not parse: 422 naming its field.
impl From<tollgate_core::domain::ValidationError> for ApiError {
    fn from(error: tollgate_core::domain::ValidationError) -> Self {
        Self::invalid_field(error.field, error.message)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        // No connection, a broken one, or none free in time: the database is down or saturated.
        if tollgate_core::db::is_unreachable(&error) {
            tracing::warn!(%error, "database unavailable");
            let mut this = Self::database_unavailable();
            this.database_unreachable = true;
            return this;
        }
        Self::internal(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(error) = &self.internal {
            tracing::error!(error = format!("{error:#}"), "request failed");
        }
        let mut response = (self.status, axum::Json(self.problem())).into_response();
        if self.database_unreachable {
            response.extensions_mut().insert(DatabaseUnreachable);
        }
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
