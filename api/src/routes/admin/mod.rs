//! The operators' routes (every one answers 403 to a client token): runtime settings, model
//! aliases, the registry of providers, the fleet's hosts and its models, prices, quotas and spend, tenants, tokens and the
//! audit log, webhook endpoints and deliveries, dead letters, and the dashboard's overview.

mod aliases;
mod audit;
mod billing;
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
        .merge(tenants::router())
        .merge(tokens::router())
        .merge(audit::router())
        .merge(webhooks::router())
        .merge(dead_letters::router())
        .merge(overview::router())
}
