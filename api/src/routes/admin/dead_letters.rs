//! `/v1/admin/dead-letters`: jobs whose message the broker gave up on (poison), across tenants, and
//! requeueing one for a fresh start (admin only).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_core::db::jobs::{self, DeadLetter, Requeued};
use tollgate_core::domain::{Job, JobId};
use tollgate_core::queue::JobEvent;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::access::auth::Admin;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::QueryParams;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(requeue))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Page size, 1 to 500 (50 unless given).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
struct DeadLetterPage {
    data: Vec<DeadLetter>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    next_cursor: Option<DateTime<Utc>>,
}

/// Jobs whose message was dead-lettered after the delivery limit, newest first, across tenants
#[utoipa::path(get,
    path = "/v1/admin/dead-letters",
    tag = "Admin",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLetterPage),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
async fn list(
    State(state): State<AppState>,
    Admin(_): Admin,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 500",
        ));
    }
    let data = jobs::dead_lettered(&state.pool, query.cursor, limit).await?;
    let next_cursor = crate::routes::paging::next_cursor(&data, limit, |d| d.dead_lettered_at);
    Ok(Json(DeadLetterPage { data, next_cursor }))
}

/// Give a dead-lettered job a fresh start: queued again and published
///
/// Puts a dead-lettered job back to `queued` and publishes it (a batch item back to `pending`, for
/// its dispatcher); 503 (nothing changed) while the broker is down.
#[utoipa::path(post,
    path = "/v1/admin/dead-letters/{id}/requeue",
    tag = "Admin",
    description = "A batch item pending again in its batch, which reopens if it had completed",
    params(("id" = JobId, Path)),
    responses(
        (status = 202, description = "The requeued job", body = Job),
        (status = 404, description = "Not found (`not_found`)"),
        (status = 409, description = "batch_cancelled (the job is an item of a cancelled batch)"),
    ))]
async fn requeue(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let not_found = || ApiError::not_found("no dead-lettered job with that id");
    let id: JobId = id.parse().map_err(|_| not_found())?;
    if !state.broker.is_connected() {
        return Err(ApiError::unavailable(
            "the message broker is unavailable",
            5,
        ));
    }
    let (job, revision) = match jobs::requeue_dead_lettered(&state.pool, id).await? {
        Requeued::Job(job, revision) => (*job, revision),
        Requeued::BatchCancelled => {
            return Err(ApiError::conflict(
                ErrorCode::BatchCancelled,
                "the job is an item of a cancelled batch",
            ));
        }
        Requeued::NotFound => return Err(not_found()),
    };
    tracing::warn!(job_id = %id, token_id = %admin.token_id, "dead-lettered job requeued");
    let event = JobEvent::new(id, revision, job.status);
    state.broker.publish_event(event).await;
    if job.batch_id.is_some() {
        // A batch item waits as `pending`: its batch's dispatcher releases it to the bulk queue.
        return Ok((StatusCode::ACCEPTED, Json(job)));
    }
    match state.broker.publish_job(id, None).await {
        Ok(()) => state.published.confirmed(id),
        Err(error) => {
            tracing::warn!(job_id = %id, %error, "publish failed; the sweeper will resend")
        }
    }
    Ok((StatusCode::ACCEPTED, Json(job)))
}
