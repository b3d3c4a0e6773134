//! Ids in paths, typed: a handler takes `Path<JobId>`, `Path<BatchId>`, `Path<TenantId>`,
//! `Path<TokenId>` or `Path<FileId>`. A malformed id is answered like an unknown one — 404 in the
//! api's problem+json, there being no such job, batch or tenant either way — and an unknown one
//! with the same answer from [`not_found`].

use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tollgate_core::domain::{BatchId, FileId, JobId, Retention, TenantId, TokenId};

use crate::http::error::{ApiError, ErrorCode};

/// An id a path can carry, and what a missing one is called.
pub trait PathId: FromStr + Send {
    const NOT_FOUND: &'static str;
}

impl PathId for JobId {
    const NOT_FOUND: &'static str = "no such job";
}

impl PathId for BatchId {
    const NOT_FOUND: &'static str = "no such batch";
}

impl PathId for TenantId {
    const NOT_FOUND: &'static str = "no such tenant";
}

impl PathId for TokenId {
    const NOT_FOUND: &'static str = "no such token";
}

impl PathId for FileId {
    const NOT_FOUND: &'static str = "no such file";
}

/// The answer for an id of type `T` that names nothing (or nothing the caller may see).
pub fn not_found<T: PathId>() -> ApiError {
    ApiError::not_found(T::NOT_FOUND)
}

/// The answer for a job id that names nothing: 410 `job_expired` when its UUIDv7 time is older
/// than the jobs kept (its day was dropped, or is about to be), else 404 like any unknown id.
pub fn missing_job(id: JobId, retention: &Retention) -> ApiError {
    // `age` reads the time a v7 id carries (an id without one is zero days old: unknown, 404).
    let now = chrono::Utc::now();
    let age = chrono::Duration::from_std(id.age()).unwrap_or_default();
    let created = now - age;
    if created < retention.job_horizon(now) {
        let kept = retention.job_days;
        return ApiError::gone(
            ErrorCode::JobExpired,
            format!(
                "job {id} was made on {}; jobs are kept {kept} days and its data is gone",
                created.format("%Y-%m-%d")
            ),
        );
    }
    not_found::<JobId>()
}

/// The route's one path parameter, an id of type `T`.
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: PathId> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| not_found::<T>())?;
        raw.parse().map(Path).map_err(|_| not_found::<T>())
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    #[expect(
        clippy::disallowed_methods,
        reason = "a router of one test route, not one the api serves"
    )]
    async fn status_of(uri: &str) -> (u16, String) {
        let app = axum::Router::new().route(
            "/jobs/{id}",
            get(|Path(id): Path<JobId>| async move { id.to_string() }),
        );
        let response = app
            .oneshot(Request::get(uri).body(Body::empty()).expect("a request"))
            .await
            .expect("an answer");
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("a body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_well_formed_id_is_read_and_a_malformed_one_is_no_such_job() {
        let id = JobId::new();
        assert_eq!(
            status_of(&format!("/jobs/{id}")).await,
            (200, id.to_string())
        );
        let (status, body) = status_of("/jobs/not-a-uuid").await;
        assert_eq!(status, 404);
        assert!(body.contains("no such job"), "{body}");
        assert!(body.contains("\"status\":404"), "{body}");
    }
}
