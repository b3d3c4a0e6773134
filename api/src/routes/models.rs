//! `GET /v1/models`: what the gateway serves, with prices, and which host of the fleet has what
//! installed. (Pulling and deleting models is the operators', in [`super::admin::models`].)

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde::Serialize;
use tollgate_core::billing;
use tollgate_core::domain::{Capabilities, HostKind, ProviderName};
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
    /// Each host of the fleet and what it has installed (or serves), routed or not.
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
    /// For the fleet: the kind of host the upstream model is for (a route may name one per kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    host_kind: Option<HostKind>,
    upstream_model: String,
    /// For the fleet: whether a host of that kind has the upstream model.
    #[serde(skip_serializing_if = "Option::is_none")]
    installed: Option<bool>,
    /// For the fleet: the hosts of that kind that have it.
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
    /// What a prompt token written to the provider's cache costs, when it is billed apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_write_input_per_1k: Option<String>,
}

/// The models you may use
#[utoipa::path(get, path = "/v1/models", tag = "Jobs",
    description = "Every model name clients may submit, with the providers that run it and their prices, and each host of the fleet with what it has installed.",
    responses((status = 200, description = "The models", body = Models)))]
async fn list(State(state): State<AppState>, Caller(_): Caller) -> Result<Json<Models>, ApiError> {
    let runtime = state.runtime.current();
    let hosts = fleet::listings(&state).await;
    let now = Utc::now();
    let data = runtime
        .routes
        .all()
        .into_iter()
        .map(|(model, routes)| {
            let steps = routes.into_iter().flat_map(|(provider, upstream)| {
                let kinds: Vec<(Option<HostKind>, &str)> = if provider.is_local() {
                    let route = runtime.routes.fleet(model);
                    let kinds = route.map(|route| route.kinds().map(|(k, m)| (Some(k), m)));
                    kinds.map(Iterator::collect).unwrap_or_default()
                } else {
                    vec![(None, upstream)]
                };
                kinds
                    .into_iter()
                    .map(move |(kind, upstream)| (provider, kind, upstream))
            });
            ServedModel {
                model: model.to_owned(),
                providers: steps
                    .map(|(provider, kind, upstream)| {
                        let on: Option<Vec<String>> = kind.map(|kind| {
                            hosts
                                .iter()
                                .filter(|h| h.kind == kind && h.has(upstream))
                                .map(|h| h.name.clone())
                                .collect()
                        });
                        Route {
                            provider,
                            host_kind: kind,
                            upstream_model: upstream.to_owned(),
                            installed: on.as_ref().map(|on| !on.is_empty()),
                            hosts: on,
                            capabilities: Capabilities::known(
                                kind.and_then(|kind| runtime.fleet_models.of(kind, upstream)),
                                runtime.routes.declared(model, provider),
                            )
                            .map(Capabilities::names),
                            price: runtime
                                .prices
                                .at(provider, upstream, now)
                                .map(|p| PriceView {
                                    input_per_1k: billing::display(p.input_per_1k),
                                    output_per_1k: billing::display(p.output_per_1k),
                                    cached_input_per_1k: p
                                        .cached_input_per_1k
                                        .map(billing::display),
                                    cache_write_input_per_1k: p
                                        .cache_write_input_per_1k
                                        .map(billing::display),
                                }),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(Json(Models { data, hosts }))
}
