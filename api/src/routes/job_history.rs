//! What happened to a job after intake, for its tenant (and for admins with `?tenant_id=`,
//! [`super::tenancy`]): `GET /v1/jobs/{id}/attempts` (its provider calls: which provider, host and
//! model, when, how long, how each ended) and `GET /v1/jobs/{id}/deliveries` (its webhook
//! deliveries with their attempts). Another tenant's job is 404, like one that does not exist.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tollgate_core::db::job_attempts::{self, AttemptRow};
use tollgate_core::db::jobs;
use tollgate_core::db::webhooks::{self, Delivery};
use tollgate_core::domain::JobId;

use super::tenancy::{self, ForTenant};
use crate::AppState;
use crate::access::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::QueryParams;
use crate::http::path::{Path, not_found};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs/{id}/attempts", get(attempts))
        .route("/v1/jobs/{id}/deliveries", get(deliveries))
}

#[derive(Serialize)]
struct Attempts {
    data: Vec<AttemptRow>,
}

#[derive(Serialize)]
struct Deliveries {
    data: Vec<Delivery>,
}

async fn attempts(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<JobId>,
    QueryParams(query): QueryParams<ForTenant>,
) -> Result<Json<Attempts>, ApiError> {
    let tenant_id = tenancy::tenant(&caller, query.tenant_id.as_deref())?;
    if !jobs::exists(&state.pool, tenant_id, id).await? {
        return Err(not_found::<JobId>());
    }
    let data = job_attempts::list(&state.pool, id).await?;
    Ok(Json(Attempts { data }))
}

async fn deliveries(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<JobId>,
    QueryParams(query): QueryParams<ForTenant>,
) -> Result<Json<Deliveries>, ApiError> {
    let tenant_id = tenancy::tenant(&caller, query.tenant_id.as_deref())?;
    if !jobs::exists(&state.pool, tenant_id, id).await? {
        return Err(not_found::<JobId>());
    }
    let data = webhooks::for_job(&state.pool, tenant_id, id).await?;
    Ok(Json(Deliveries { data }))
}
