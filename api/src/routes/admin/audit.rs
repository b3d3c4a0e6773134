//! The audit log of operators' actions, for admins: `GET /v1/admin/audit`, newest first.

use axum::Json;
use axum::extract::State;
use tollgate_core::db::audit::{self, Action, Entry};
use tollgate_core::db::tokens::Principal;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::access::auth::Admin;
use crate::http::error::ApiError;
use crate::http::extract::QueryParams;
use crate::routes::paging::{self, Listing, Page};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit_log))
}

/// The audit log of operators' actions, newest first
#[utoipa::path(get,
    path = "/v1/admin/audit",
    tag = "Admin",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size, 1 to 500 (50 unless given)"),
        ("cursor" = Option<i64>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of the audit log, newest first", body = Listing<Entry, i64>),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
async fn audit_log(
    State(state): State<AppState>,
    Admin(_): Admin,
    QueryParams(page): QueryParams<Page<i64>>,
) -> Result<Json<Listing<Entry, i64>>, ApiError> {
    let limit = paging::page_limit(page.limit)?;
    let data = audit::list(&state.pool, page.cursor, limit).await?;
    let next_cursor = paging::next_cursor(&data, limit, |e| e.id);
    Ok(Json(Listing { data, next_cursor }))
}

/// The audit entry of an action by `admin` on `target`.
pub(super) fn actor<'a>(
    admin: &Principal,
    action: &'a str,
    target: String,
    details: serde_json::Value,
) -> Action<'a> {
    Action {
        actor_token_id: admin.token_id,
        actor_tenant_id: admin.tenant_id,
        action,
        target: Some(target),
        details: Some(details),
    }
}
