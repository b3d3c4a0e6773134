//! `/v1/admin/aliases`: which upstream model each provider runs for a model name (admin only).
//!
//! `PUT /v1/admin/aliases/llama3 {"routes": {"ollama": "llama3", "openai": "gpt-4.1-mini"}}` lets
//! a job for `llama3` fall back from a local Ollama to OpenAI with a model OpenAI has. Routes are
//! keyed by provider name (`openai`, `groq`, any cloud account of `/v1/admin/providers`). The
//! fleet's route may name a model per kind of host (`"local": {"ollama": "qwen3:32b",
//! "openai_compatible": "Qwen/Qwen3-32B"}`; `ollama` is short for `local.ollama`). A route may
//! declare what its model can do (`"capabilities": {"openai": ["completion", "tools"]}`) and the
//! `max_tokens` it sends when a client gives none (`"max_tokens": {"anthropic": 8192}`), and the
//! alias may carry its own ordered chain of providers (`"chain": ["groq", "local"]`), tried in
//! that order whatever `ai_provider` says.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tollgate_core::db::model_routes::{self, Alias};
use tollgate_core::domain::{Capabilities, FleetRoute, ModelName, ProviderName, Runtime};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::providers::named;
use crate::AppState;
use crate::access::auth::Admin;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, put, remove))
}

/// Longest chain of providers a model may have.
const MAX_CHAIN: usize = 8;

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
#[schema(as = AliasRoutes)]
struct Routes {
    /// The fleet, per kind of host
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local: Option<Local>,
    /// Short for `local.ollama` (shown too, as it was before hosts had kinds)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ollama: Option<String>,
    /// Each cloud provider's upstream model, by the provider's name (`"openai": "gpt-4.1-mini"`)
    #[serde(flatten)]
    clouds: BTreeMap<String, String>,
}

/// What each route's upstream model can do (`completion`, `tools`, `vision`, `thinking`,
/// `embedding`), where declared, by provider name; the fleet's (`local`, or `ollama` as before)
/// covers every kind of host.
#[derive(Serialize, Deserialize, Default, ToSchema)]
#[schema(as = AliasCapabilities)]
struct Declared(BTreeMap<String, Vec<String>>);

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
    /// The `max_tokens` a route sends when the client gives none (1 to 1,000,000), by provider
    /// name. Anthropic requires one: its routes send 4,096 unless set here.
    #[serde(default)]
    max_tokens: BTreeMap<String, u32>,
    /// The providers to try, in order, for this model (each must have a route here), instead of
    /// `ai_provider` and `ai_fallback_provider` (or `hybrid`); each step is a fallback of the one
    /// before. Absent: the settings decide.
    #[serde(default)]
    chain: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Alias)]
struct AliasView {
    model: String,
    routes: Routes,
    #[serde(skip_serializing_if = "Declared::is_empty")]
    capabilities: Declared,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    max_tokens: BTreeMap<String, u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chain: Option<Vec<ProviderName>>,
}

impl Declared {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The declarations, validated, by provider: each for a provider `alias` routes.
    fn parse(
        self,
        runtime: &Runtime,
        alias: &Alias,
    ) -> Result<BTreeMap<ProviderName, Capabilities>, ApiError> {
        let mut declared = BTreeMap::new();
        for (name, names) in self.0 {
            let field = format!("capabilities.{name}");
            let provider = named(runtime, &field, &name)?;
            if !alias.routes(provider) {
                return Err(ApiError::invalid_field(
                    field,
                    "declares what a route does not exist for",
                ));
            }
            let can = Capabilities::parse_names(&names).map_err(|i| {
                ApiError::invalid_field(
                    format!("{field}[{i}]"),
                    "must be one of completion, tools, vision, thinking, embedding",
                )
            })?;
            if declared.insert(provider, can).is_some() {
                return Err(ApiError::invalid_field(
                    field,
                    "declares the fleet twice (`ollama` is short for `local`)",
                ));
            }
        }
        Ok(declared)
    }
}

impl Routes {
    /// The fleet's route and each cloud account's, each upstream model checked as a model name.
    fn parse(
        self,
        runtime: &Runtime,
    ) -> Result<(FleetRoute, BTreeMap<ProviderName, String>), ApiError> {
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
        let mut clouds = BTreeMap::new();
        for (name, model) in self.clouds {
            let provider = named(runtime, &format!("routes.{name}"), &name)?;
            clouds.insert(provider, upstream(&name, Some(model))?.unwrap_or_default());
        }
        Ok((fleet, clouds))
    }
}

/// The chain, each step a provider with a route on the alias, none twice.
fn parse_chain(
    runtime: &Runtime,
    alias: &Alias,
    chain: Option<Vec<String>>,
) -> Result<Option<Vec<ProviderName>>, ApiError> {
    let Some(chain) = chain else {
        return Ok(None);
    };
    if chain.is_empty() || chain.len() > MAX_CHAIN {
        return Err(ApiError::invalid_field(
            "chain",
            format!("must name 1 to {MAX_CHAIN} providers"),
        ));
    }
    let mut steps: Vec<ProviderName> = Vec::with_capacity(chain.len());
    for (i, name) in chain.iter().enumerate() {
        let field = format!("chain[{i}]");
        let step = named(runtime, &field, name)?;
        if !alias.routes(step) {
            return Err(ApiError::invalid_field(
                field,
                "has no route on this alias: give it one in `routes`",
            ));
        }
        if steps.contains(&step) {
            return Err(ApiError::invalid_field(field, "is in the chain already"));
        }
        steps.push(step);
    }
    Ok(Some(steps))
}

/// Each route's `max_tokens` when the client gives none: for a provider the alias routes, 1 to
/// 1,000,000.
fn parse_max_tokens(
    runtime: &Runtime,
    alias: &Alias,
    given: BTreeMap<String, u32>,
) -> Result<BTreeMap<ProviderName, u32>, ApiError> {
    let mut set = BTreeMap::new();
    for (name, max) in given {
        let field = format!("max_tokens.{name}");
        let provider = named(runtime, &field, &name)?;
        if !alias.routes(provider) {
            return Err(ApiError::invalid_field(
                field,
                "sets what a route does not exist for",
            ));
        }
        if !(1..=1_000_000).contains(&max) {
            return Err(ApiError::invalid_field(
                field,
                "must be between 1 and 1000000",
            ));
        }
        set.insert(provider, max);
    }
    Ok(set)
}

#[derive(Serialize, ToSchema)]
struct AliasList {
    data: Vec<AliasView>,
}

impl From<Alias> for AliasView {
    fn from(alias: Alias) -> Self {
        let declared = alias
            .capabilities
            .into_iter()
            .map(|(provider, can)| {
                let names = can.names().into_iter().map(str::to_owned).collect();
                (provider.as_str().to_owned(), names)
            })
            .collect();
        let fleet = alias.fleet;
        let local = (fleet != FleetRoute::default()).then(|| Local {
            ollama: fleet.ollama.clone(),
            openai_compatible: fleet.openai_compatible,
        });
        let clouds = alias
            .clouds
            .into_iter()
            .map(|(provider, upstream)| (provider.as_str().to_owned(), upstream))
            .collect();
        Self {
            model: alias.model,
            routes: Routes {
                local,
                ollama: fleet.ollama,
                clouds,
            },
            capabilities: Declared(declared),
            max_tokens: alias
                .max_tokens
                .into_iter()
                .map(|(provider, max)| (provider.as_str().to_owned(), max))
                .collect(),
            chain: alias.chain,
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
    let runtime = state.runtime.current();
    let (fleet, clouds) = body.routes.parse(&runtime)?;
    let mut alias = Alias {
        model: model.as_str().to_owned(),
        fleet,
        clouds,
        capabilities: BTreeMap::new(),
        max_tokens: BTreeMap::new(),
        chain: None,
    };
    alias.capabilities = body.capabilities.parse(&runtime, &alias)?;
    alias.max_tokens = parse_max_tokens(&runtime, &alias, body.max_tokens)?;
    if alias.fleet == FleetRoute::default() && alias.clouds.is_empty() {
        return Err(ApiError::invalid_field(
            "routes",
            "must name an upstream model for at least one provider (`local`, `ollama`, or a \
             cloud provider's name such as `openai`)",
        ));
    }
    alias.chain = parse_chain(&runtime, &alias, body.chain)?;
    if let Err(gone) = model_routes::put(&state.pool, &alias).await? {
        return Err(ApiError::invalid_field(
            format!("routes.{gone}"),
            format!(
                "there is no provider named {:?} (see /v1/admin/providers)",
                gone.as_str()
            ),
        ));
    }
    super::reload(&state, "routes").await;
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
    super::reload(&state, "routes").await;
    Ok(StatusCode::NO_CONTENT)
}
