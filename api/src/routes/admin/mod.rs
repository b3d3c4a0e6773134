//! The operators' routes (every one answers 403 to a client token): runtime settings, model
//! aliases, the registry of providers, the fleet's hosts and its models, prices, quotas and spend, tenants, tokens and the
//! audit log, the response cache's purge, webhook endpoints and deliveries, dead letters, and the dashboard's overview.

mod aliases;
mod audit;
mod billing;
mod cache;
mod dead_letters;
mod hosts;
pub mod models;
mod overview;
mod providers;
mod rules;
mod settings;
mod tenants;
mod tokens;
mod webhooks;

use serde_json::Value;
use tollgate_core::db::audit::Action;
use tollgate_core::db::tokens::Principal;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(settings::router())
        .merge(aliases::router())
        .merge(hosts::router())
        .merge(providers::router())
        .merge(models::router())
        .merge(billing::router())
        .merge(cache::router())
        .merge(tenants::router())
        .merge(tokens::router())
        .merge(audit::router())
        .merge(webhooks::router())
        .merge(dead_letters::router())
        .merge(overview::router())
}

/// What `admin` did to `target`, for the audit log.
fn audited_action<'a>(
    admin: &Principal,
    what: &'a str,
    target: &str,
    details: Value,
) -> Action<'a> {
    Action {
        actor_token_id: admin.token_id,
        actor_tenant_id: admin.tenant_id,
        action: what,
        target: Some(target.to_owned()),
        details: (!details.is_null()).then_some(details),
    }
}

/// Reloads the runtime after `what` changed: this instance sees its own change at once, the others
/// within a refresh period.
async fn reload(state: &AppState, what: &str) {
    if let Err(error) = state.runtime.reload().await {
        tracing::warn!(%error, "cannot reload the {what} just changed");
    }
}
