//! Whose jobs, batches and usage a request reads: the caller's own tenant's, or, for an admin who names
//! one with `?tenant_id=`, that tenant's (the dashboard's views of every tenant's work). A client
//! naming another tenant is refused, so a client token only ever sees its own tenant's.

use serde::Deserialize;
use tollgate_core::db::tokens::Principal;
use tollgate_core::domain::{Role, TenantId};
use utoipa::IntoParams;

use crate::http::error::ApiError;

/// The query of a read that an admin may make for another tenant.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ForTenant {
    /// Admins: read this tenant's instead of your own (the dashboard's views of every tenant). A
    /// client naming another tenant is refused (403 `forbidden`).
    #[param(value_type = Option<TenantId>)]
    pub tenant_id: Option<String>,
}

/// The tenant a read is for: the caller's own unless an admin asked for another.
pub fn tenant(caller: &Principal, asked: Option<&str>) -> Result<TenantId, ApiError> {
    let Some(asked) = asked else {
        return Ok(caller.tenant_id);
    };
    let wanted = asked
        .parse()
        .map(TenantId)
        .map_err(|_| ApiError::invalid_field("tenant_id", "must be a tenant id"))?;
    if caller.role != Role::Admin && wanted != caller.tenant_id {
        return Err(ApiError::forbidden(
            "only admins may read another tenant's jobs, batches or usage",
        ));
    }
    Ok(wanted)
}
