//! `GET /v1/models`: what the gateway serves, with prices, and which host of the fleet has what
//! installed. (Pulling and deleting models is the operators', in [`super::admin::models`].)

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde::Serialize;
use tollgate_core::billing;
use tollgate_core::domain::{Capabilities, ProviderName};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::access::auth::Caller;
use crate::fleet::{self, HostModels};
use crate::http::error::ApiError;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Serialize, ToSchema)]
struct Models {
    /// Every model name clients may submit, with what each provider runs and its price.
    data: Vec<ServedModel>,
    /// Each Ollama host of the fleet and what it has installed, routed or not.
    hosts: Vec<HostModels>,
}

#[derive(Serialize, ToSchema)]
struct ServedModel {
    model: String,
    providers: Vec<Route>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ModelRoute)]
struct Route {
    provider: ProviderName,
    upstream_model: String,
    /// For Ollama: whether a host has the upstream model installed.
    #[serde(skip_serializing_if = "Option::is_none")]
    installed: Option<bool>,
    /// For Ollama: the hosts that have it.
    #[serde(skip_serializing_if = "Option::is_none")]
    hosts: Option<Vec<String>>,
    /// What the model can do (`completion`, `tools`, `vision`, `thinking`, `embedding`): for
    /// Ollama what the hosts that have it say (all of them when a host does not say), bounded by
    /// what the route declares; for the cloud what the route declares. Left out when nothing is
    /// known. A request needing what a step's model cannot do skips that step.
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<Vec<&'static str>>,
    /// The price in force, per 1,000 tokens; `null` when the model is unpriced.
    price: Option<PriceView>,
}

#[derive(Serialize, ToSchema)]
struct PriceView {
    input_per_1k: String,
    output_per_1k: String,
    /// What a prompt token read from the provider's cache costs, when it is billed apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_input_per_1k: Option<String>,
}

/// The models you may use
#[utoipa::path(get, path = "/v1/models", tag = "Jobs",
    description = "Every model name clients may submit, with the providers that run it and their prices, and each Ollama host of the fleet with what it has installed.",
    responses((status = 200, description = "The models", body = Models)))]
async fn list(State(state): State<AppState>, Caller(_): Caller) -> Result<Json<Models>, ApiError> {
    let runtime = state.runtime.current();
    let hosts = fleet::listings(&state).await;
    let now = Utc::now();
    let data = runtime
        .routes
        .all()
        .into_iter()
        .map(|(model, routes)| ServedModel {
            model: model.to_owned(),
            providers: routes
                .into_iter()
                .map(|(provider, upstream)| {
                    let on: Option<Vec<String>> = (provider == ProviderName::Ollama).then(|| {
                        hosts
                            .iter()
                            .filter(|h| h.has(upstream))
                            .map(|h| h.name.clone())
                            .collect()
                    });
                    Route {
                        provider,
                        upstream_model: upstream.to_owned(),
                        installed: on.as_ref().map(|on| !on.is_empty()),
                        hosts: on,
                        capabilities: Capabilities::known(
                            (provider == ProviderName::Ollama)
                                .then(|| runtime.fleet_models.of(upstream))
                                .flatten(),
                            runtime.routes.declared(model, provider),
                        )
                        .map(Capabilities::names),
                        price: runtime
                            .prices
                            .at(provider, upstream, now)
                            .map(|p| PriceView {
                                input_per_1k: billing::display(p.input_per_1k),
                                output_per_1k: billing::display(p.output_per_1k),
                                cached_input_per_1k: p.cached_input_per_1k.map(billing::display),
                            }),
                    }
                })
                .collect(),
        })
        .collect();
    Ok(Json(Models { data, hosts }))
}
