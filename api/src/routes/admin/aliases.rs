//! `/v1/admin/aliases`: which upstream model each provider runs for a model name (admin only).
//!
//! `PUT /v1/admin/aliases/llama3 {"routes": {"ollama": "llama3", "openai": "gpt-4.1-mini"}}` lets
//! a job for `llama3` fall back from a local Ollama to OpenAI with a model OpenAI has. The fleet's
//! route may name a model per kind of host (`"local": {"ollama": "qwen3:32b", "openai_compatible":
//! "Qwen/Qwen3-32B"}`; `ollama` is short for `local.ollama`). A route may declare what its model
//! can do (`"capabilities": {"openai": ["completion", "tools"]}`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tollgate_core::db::model_routes::{self, Alias};
use tollgate_core::domain::{Capabilities, FleetRoute, ModelName, ProviderName};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::access::auth::Admin;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, put, remove))
}

/// What the fleet runs on each kind of host.
#[derive(Serialize, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AliasFleetRoutes)]
struct Local {
    /// On Ollama hosts (`qwen3:32b`)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ollama: Option<String>,
    /// On OpenAI-compatible hosts (`Qwen/Qwen3-32B`)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    openai_compatible: Option<String>,
}

#[derive(Serialize, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AliasRoutes)]
struct Routes {
    /// The fleet, per kind of host
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local: Option<Local>,
    /// Short for `local.ollama` (shown too, as it was before hosts had kinds)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ollama: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    openai: Option<String>,
}

/// What each route's upstream model can do (`completion`, `tools`, `vision`, `thinking`,
/// `embedding`), where declared.
#[derive(Serialize, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AliasCapabilities)]
struct Declared {
    /// The fleet's route, on every kind of host (`local` is the same)
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "local")]
    ollama: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    openai: Option<Vec<String>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AliasBody {
    /// The upstream model each provider runs (the fleet's per kind of host); a provider without
    /// one is skipped, and so is a host whose kind has none
    routes: Routes,
    /// What a route's model can do, when it is less than everything: a cloud model counts as
    /// able to do everything unless declared, a fleet model as its hosts say (bounded by
    /// this). A step whose model lacks what a request needs is skipped; reasoning asked of one
    /// without `thinking` is dropped before the call.
    #[serde(default)]
    capabilities: Declared,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Alias)]
struct AliasView {
    model: String,
    routes: Routes,
    #[serde(skip_serializing_if = "Declared::is_empty")]
    capabilities: Declared,
}

impl Declared {
    fn is_empty(&self) -> bool {
        self.ollama.is_none() && self.openai.is_none()
    }

    /// The declarations, validated, by provider index.
    fn parse(self) -> Result<[Option<Capabilities>; 2], ApiError> {
        let parse = |provider: ProviderName, names: Option<Vec<String>>| {
            names
                .map(|names| {
                    Capabilities::parse_names(&names).map_err(|i| {
                        ApiError::invalid_field(
                            format!("capabilities.{}[{i}]", provider.as_str()),
                            "must be one of completion, tools, vision, thinking, embedding",
                        )
                    })
                })
                .transpose()
        };
        Ok([
            parse(ProviderName::Ollama, self.ollama)?,
            parse(ProviderName::OpenAi, self.openai)?,
        ])
    }
}

impl Routes {
    /// The fleet's route and OpenAI's, each upstream model checked as a model name.
    fn parse(self) -> Result<(FleetRoute, Option<String>), ApiError> {
        let upstream = |field: &str, name: Option<String>| {
            name.map(|n| {
                ModelName::parse(&n)
                    .map(|m| m.as_str().to_owned())
                    .map_err(|e| ApiError::invalid_field(format!("routes.{field}"), e.message))
            })
            .transpose()
        };
        let local = self.local.unwrap_or_default();
        if self.ollama.is_some() && local.ollama.is_some() {
            return Err(ApiError::invalid_field(
                "routes.ollama",
                "is short for `routes.local.ollama`: give one of them",
            ));
        }
        let fleet = FleetRoute {
            ollama: upstream("ollama", self.ollama)?.or(upstream("local.ollama", local.ollama)?),
            openai_compatible: upstream("local.openai_compatible", local.openai_compatible)?,
        };
        Ok((fleet, upstream("openai", self.openai)?))
    }
}

#[derive(Serialize, ToSchema)]
struct AliasList {
    data: Vec<AliasView>,
}

impl From<Alias> for AliasView {
    fn from(alias: Alias) -> Self {
        let [declared_ollama, declared_openai] = alias
            .capabilities
            .map(|can| can.map(|can| can.names().into_iter().map(str::to_owned).collect()));
        let fleet = alias.fleet;
        let local = (fleet != FleetRoute::default()).then(|| Local {
            ollama: fleet.ollama.clone(),
            openai_compatible: fleet.openai_compatible,
        });
        Self {
            model: alias.model,
            routes: Routes {
                local,
                ollama: fleet.ollama,
                openai: alias.openai,
            },
            capabilities: Declared {
                ollama: declared_ollama,
                openai: declared_openai,
            },
        }
    }
}

/// Every model name clients may use and what each provider runs for it
#[utoipa::path(get,
    path = "/v1/admin/aliases",
    tag = "Admin",
    responses(
        (status = 200, description = "Every alias", body = AliasList),
    ))]
async fn list(State(state): State<AppState>, Admin(_): Admin) -> Result<Json<AliasList>, ApiError> {
    let data = model_routes::list(&state.pool)
        .await?
        .into_iter()
        .map(AliasView::from)
        .collect();
    Ok(Json(AliasList { data }))
}

/// One alias
#[utoipa::path(get,
    path = "/v1/admin/aliases/{model}",
    tag = "Admin",
    params(("model" = String, Path, description = "The model name clients send")),
    responses(
        (status = 200, description = "The alias", body = AliasView),
        (status = 404, description = "Not found (`not_found`)"),
    ))]
async fn show(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(model): Path<String>,
) -> Result<Json<AliasView>, ApiError> {
    model_routes::get(&state.pool, &model)
        .await?
        .map(|alias| Json(alias.into()))
        .ok_or_else(|| ApiError::not_found("no such alias"))
}

/// Create or replace an alias: the upstream model per provider
#[utoipa::path(put,
    path = "/v1/admin/aliases/{model}",
    tag = "Admin",
    params(("model" = String, Path, description = "The model name clients send")),
    request_body = AliasBody,
    responses(
        (status = 200, description = "The alias", body = AliasView),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
    ))]
async fn put(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(model): Path<String>,
    JsonBody(body): JsonBody<AliasBody>,
) -> Result<Json<AliasView>, ApiError> {
    let model = ModelName::parse(&model)?;
    let (fleet, openai) = body.routes.parse()?;
    let alias = Alias {
        model: model.as_str().to_owned(),
        fleet,
        openai,
        capabilities: body.capabilities.parse()?,
    };
    let routed = [alias.fleet != FleetRoute::default(), alias.openai.is_some()];
    if let Some(provider) = ProviderName::ALL
        .into_iter()
        .find(|p| alias.capabilities[p.index()].is_some() && !routed[p.index()])
    {
        return Err(ApiError::invalid_field(
            format!("capabilities.{}", provider.as_str()),
            "declares what a route does not exist for",
        ));
    }
    if routed.iter().all(|routed| !routed) {
        return Err(ApiError::invalid_field(
            "routes",
            "must name an upstream model for at least one provider (`local`, `ollama`, `openai`)",
        ));
    }
    model_routes::put(&state.pool, &alias).await?;
    reload(&state).await;
    Ok(Json(alias.into()))
}

/// Remove an alias; its model is then refused at intake
#[utoipa::path(delete,
    path = "/v1/admin/aliases/{model}",
    tag = "Admin",
    params(("model" = String, Path, description = "The model name clients send")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "Not found (`not_found`)"),
    ))]
async fn remove(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(model): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !model_routes::delete(&state.pool, &model).await? {
        return Err(ApiError::not_found("no such alias"));
    }
    reload(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

/// This instance sees its own change at once; the others within a refresh period.
async fn reload(state: &AppState) {
    if let Err(error) = state.runtime.reload().await {
        tracing::warn!(%error, "cannot reload the routes just changed");
    }
}
