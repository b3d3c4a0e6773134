//! Webhooks, for admins: a tenant's endpoint and signing secret (`GET/PUT
//! /v1/admin/tenants/{id}/webhook`, `POST .../webhook/rotate`), every tenant's deliveries by status
//! (`GET /v1/admin/webhook-deliveries`) and a redelivery (`POST
//! /v1/admin/webhook-deliveries/{id}/redeliver`). A job's own deliveries are its tenant's, in
//! [`crate::routes::job_history`].

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_core::db::webhooks::{self, DeliverySummary, Endpoint};
use tollgate_core::domain::TenantId;
use tollgate_core::secret::Purpose;
use tollgate_core::webhook::{SigningSecret, message_id};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::access::auth::Admin;
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, QueryParams};
use crate::http::path::Path;

/// How long a rotated-out secret keeps signing, so receivers can switch to the new one.
const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(endpoint, set_endpoint))
        .routes(routes!(rotate))
        .routes(routes!(list))
        .routes(routes!(redeliver))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EndpointBody {
    /// The tenant's default endpoint; `null` clears it (jobs with their own URL still deliver).
    url: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct EndpointView {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// The signing secret, present only in the answer that created it: it is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct Rotated {
    /// The new signing secret, shown this once.
    secret: String,
    /// Until when the secrets it replaces keep signing beside it.
    previous_expires_at: DateTime<Utc>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `failed` (the default), `pending` or `succeeded`.
    status: Option<String>,
    limit: Option<i64>,
    cursor: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
struct DeliveryPage {
    data: Vec<DeliverySummary>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    next_cursor: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
struct Redelivery {
    id: String,
    status: &'static str,
}

/// A tenant's webhook endpoint
#[utoipa::path(get,
    path = "/v1/admin/tenants/{id}/webhook",
    tag = "Admin",
    description = "Never the secret",
    params(("id" = TenantId, Path)),
    responses(
        (status = 200, description = "The tenant's endpoint", body = Endpoint),
        (status = 404, description = "Not found (`not_found`)"),
    ))]
async fn endpoint(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<TenantId>,
) -> Result<Json<Endpoint>, ApiError> {
    webhooks::endpoint(&state.pool, id)
        .await?
        .map(Json)
        .ok_or_else(tenant_not_found)
}

/// Set or clear a tenant's webhook endpoint; enables it again after a 410
///
/// Sets the endpoint (enabling it again after a 410) and, the first time, creates the tenant's
/// signing secret and shows it.
#[utoipa::path(put,
    path = "/v1/admin/tenants/{id}/webhook",
    tag = "Admin",
    description = "Creates the tenant's signing secret the first time and shows it in this answer only.",
    params(("id" = TenantId, Path)),
    request_body = EndpointBody,
    responses(
        (status = 200, description = "The tenant's endpoint", body = EndpointView),
        (status = 404, description = "Not found (`not_found`)"),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
async fn set_endpoint(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<TenantId>,
    JsonBody(body): JsonBody<EndpointBody>,
) -> Result<Json<EndpointView>, ApiError> {
    let url = match body.url {
        Some(raw) => Some(crate::intake::checked_url(&state, "url", &raw).await?),
        None => None,
    };
    let candidate = SigningSecret::generate();
    let sealed = seal(&state, &candidate)?;
    let created = webhooks::set_endpoint(&state.pool, id, url.as_deref(), &sealed)
        .await?
        .ok_or_else(tenant_not_found)?;
    let endpoint = webhooks::endpoint(&state.pool, id)
        .await?
        .ok_or_else(tenant_not_found)?;
    Ok(Json(EndpointView {
        endpoint,
        secret: created.then_some(candidate),
    }))
}

/// Rotate a tenant's signing secret: the new secret is shown once
#[utoipa::path(post,
    path = "/v1/admin/tenants/{id}/webhook/rotate",
    tag = "Admin",
    description = "The old ones keep signing for 24 h",
    params(("id" = TenantId, Path)),
    responses(
        (status = 200, description = "The new secret", body = Rotated),
        (status = 404, description = "Not found (`not_found`)"),
    ))]
async fn rotate(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<TenantId>,
) -> Result<Json<Rotated>, ApiError> {
    let secret = SigningSecret::generate();
    let sealed = seal(&state, &secret)?;
    let previous_expires_at = webhooks::rotate_secret(&state.pool, id, &sealed, ROTATION_OVERLAP)
        .await?
        .ok_or_else(tenant_not_found)?;
    Ok(Json(Rotated {
        secret,
        previous_expires_at,
    }))
}

/// Webhook deliveries across tenants by status, newest first
#[utoipa::path(get,
    path = "/v1/admin/webhook-deliveries",
    tag = "Admin",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryPage),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
async fn list(
    State(state): State<AppState>,
    Admin(_): Admin,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let status = query.status.as_deref().unwrap_or("failed");
    if !["pending", "succeeded", "failed"].contains(&status) {
        return Err(ApiError::invalid_field(
            "status",
            "must be pending, succeeded or failed",
        ));
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 500",
        ));
    }
    let data = webhooks::list(&state.pool, status, query.cursor, limit).await?;
    let next_cursor = crate::routes::paging::next_cursor(&data, limit, |d| d.created_at);
    Ok(Json(DeliveryPage { data, next_cursor }))
}

/// Attempt a delivery once more, now, with its original webhook-id and body
///
/// One more attempt of a delivery, now, with its original id and body.
#[utoipa::path(post,
    path = "/v1/admin/webhook-deliveries/{id}/redeliver",
    tag = "Admin",
    params(("id" = String, Path, description = "`msg_…` or the uuid")),
    responses(
        (status = 202, description = "Queued for an attempt", body = Redelivery),
        (status = 404, description = "Not found (`not_found`)"),
    ))]
async fn redeliver(
    State(state): State<AppState>,
    Admin(_): Admin,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<(StatusCode, Json<Redelivery>), ApiError> {
    let not_found = || ApiError::not_found("no such webhook delivery");
    let id: Uuid = id
        .strip_prefix("msg_")
        .unwrap_or(&id)
        .parse()
        .map_err(|_| not_found())?;
    if !webhooks::redeliver(&state.pool, id).await? {
        return Err(not_found());
    }
    if let Err(error) = state.broker.publish_webhooks(&[id]).await {
        tracing::warn!(%error, "redelivery publish failed; the sweeper will resend");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Redelivery {
            id: message_id(id),
            status: "pending",
        }),
    ))
}

/// Seals a new signing secret; without TOLLGATE_SECRET_KEY none can be stored.
fn seal(state: &AppState, secret: &str) -> Result<Vec<u8>, ApiError> {
    let key = state.secret_key.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "webhook secrets cannot be stored: this server has no TOLLGATE_SECRET_KEY",
            3600,
        )
    })?;
    Ok(key.seal_as(Purpose::WebhookSecret, secret))
}

fn tenant_not_found() -> ApiError {
    ApiError::not_found("no such tenant")
}
