//! What happened to a job after intake, for its tenant (and for admins with `?tenant_id=`,
//! [`super::tenancy`]): `GET /v1/jobs/{id}/attempts` (its provider calls: which provider, host and
//! model, when, how long, how each ended) and `GET /v1/jobs/{id}/deliveries` (its webhook
//! deliveries with their attempts). Another tenant's job is 404, like one that does not exist.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use tollgate_core::db::job_attempts::{self, AttemptRow};
use tollgate_core::db::jobs;
use tollgate_core::db::webhooks::{self, Delivery};
use tollgate_core::domain::JobId;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::tenancy::{self, ForTenant};
use crate::AppState;
use crate::access::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::QueryParams;
use crate::http::path::{Path, missing_job};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(attempts))
        .routes(routes!(deliveries))
}

/// A job's provider calls, oldest first.
#[derive(Serialize, ToSchema)]
struct Attempts {
    data: Vec<AttemptRow>,
}

/// A job's webhook deliveries.
#[derive(Serialize, ToSchema)]
struct Deliveries {
    data: Vec<Delivery>,
}

/// A job's provider calls
#[utoipa::path(get, path = "/v1/jobs/{id}/attempts", tag = "Jobs", params(("id" = JobId, Path), ForTenant),
    description = "Each call to a provider the job made: which provider and model, how it ended, how long it took, what it cost.",
    responses(
        (status = 200, description = "The calls", body = Attempts),
        (status = 404, description = "No such job"),
        (status = 410, description = "`job_expired`: the id is older than the jobs kept (`job_retention_days`)"),
        (status = 422, description = "`tenant_id` is not a tenant id"),
    ))]
async fn attempts(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<JobId>,
    QueryParams(query): QueryParams<ForTenant>,
) -> Result<Json<Attempts>, ApiError> {
    let tenant_id = tenancy::tenant(&caller, query.tenant_id.as_deref())?;
    if !jobs::exists(&state.pool, tenant_id, id).await? {
        return Err(missing_job(id, &state.runtime.current().settings.retention));
    }
    let data = job_attempts::list(&state.pool, id).await?;
    Ok(Json(Attempts { data }))
}

/// A job's webhook deliveries
#[utoipa::path(get, path = "/v1/jobs/{id}/deliveries", tag = "Jobs", params(("id" = JobId, Path), ForTenant),
    description = "The signed webhook deliveries of the job's terminal event, with their attempts.",
    responses(
        (status = 200, description = "The deliveries", body = Deliveries),
        (status = 404, description = "No such job"),
        (status = 410, description = "`job_expired`: the id is older than the jobs kept (`job_retention_days`)"),
        (status = 422, description = "`tenant_id` is not a tenant id"),
    ))]
async fn deliveries(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<JobId>,
    QueryParams(query): QueryParams<ForTenant>,
) -> Result<Json<Deliveries>, ApiError> {
    let tenant_id = tenancy::tenant(&caller, query.tenant_id.as_deref())?;
    if !jobs::exists(&state.pool, tenant_id, id).await? {
        return Err(missing_job(id, &state.runtime.current().settings.retention));
    }
    let data = webhooks::for_job(&state.pool, tenant_id, id).await?;
    Ok(Json(Deliveries { data }))
}
