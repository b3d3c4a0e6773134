//! The ids in paths: a malformed one is answered like an unknown one (there is no such job, batch
//! or tenant), so every route that takes one reads it here.

use tollgate_core::domain::{BatchId, JobId, TenantId};

use crate::error::ApiError;

pub fn parse_job_id(id: &str) -> Result<JobId, ApiError> {
    id.parse().map_err(|_| job_not_found())
}

pub fn job_not_found() -> ApiError {
    ApiError::not_found("no such job")
}

pub fn parse_batch_id(id: &str) -> Result<BatchId, ApiError> {
    id.parse().map_err(|_| batch_not_found())
}

pub fn batch_not_found() -> ApiError {
    ApiError::not_found("no such batch")
}

pub fn tenant_id(id: &str) -> Result<TenantId, ApiError> {
    id.parse()
        .map(TenantId)
        .map_err(|_| ApiError::not_found("no such tenant"))
}
