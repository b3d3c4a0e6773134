//! `GET /api/tags` (the models Tollgate routes, with what Ollama says of those it has), `POST
//! /api/show`, `GET /api/ps` (what Ollama has loaded), `GET /api/version`, and for admins `POST
//! /api/pull` (Ollama's own progress lines) and `DELETE /api/delete`, through the model management
//! `/v1/models` uses (audited the same way).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_core::domain::ModelName;
use tollgate_core::provider::InstalledModel;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::access::auth::{Admin, Caller};
use crate::fleet;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;
use crate::routes::admin::models::{delete_model, start_pull};

/// The Ollama API version this surface speaks (what `GET /api/version` reports).
const OLLAMA_API_VERSION: &str = "0.12.0";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(tags))
        .routes(routes!(show))
        .routes(routes!(running))
        .routes(routes!(version))
        .routes(routes!(pull))
        .routes(routes!(remove))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OllamaModelRequest)]
struct ModelBody {
    model: String,
    /// Pull only: whether progress streams (Ollama's default) or the answer waits.
    stream: Option<bool>,
    /// Pull only: Ollama's switch for registries without TLS; the upstream's own setting rules.
    #[serde(rename = "insecure")]
    _insecure: Option<bool>,
    /// Show only: Ollama's longer listing; the short one is all there is here.
    #[serde(rename = "verbose")]
    _verbose: Option<bool>,
}

/// Models (Ollama)
///
/// Every routed model in Ollama's listing shape, with the size, digest and details Ollama has for
/// the ones it serves (a model only OpenAI serves has none).
#[utoipa::path(get,
    path = "/api/tags",
    tag = "Ollama",
    description = "The routed models, with Ollama's details for those it has.",
    responses(
        (status = 200, description = "Ollama's listing shape: `{models: [...]}`", body = Object),
    ))]
async fn tags(State(state): State<AppState>, Caller(_): Caller) -> Json<Value> {
    let listings = fleet::listings(&state).await;
    let models: Vec<Value> = state
        .runtime
        .current()
        .routes
        .all()
        .into_iter()
        .map(|(name, routes)| {
            let local = routes
                .iter()
                .find_map(|(_, upstream)| fleet::installed(&listings, upstream));
            listed(name, local)
        })
        .collect();
    Json(json!({ "models": models }))
}

fn listed(name: &str, local: Option<&InstalledModel>) -> Value {
    json!({
        "name": name,
        "model": name,
        "modified_at": local.and_then(|m| m.modified_at),
        "size": local.and_then(|m| m.size).unwrap_or(0),
        "digest": local.and_then(|m| m.digest.clone()).unwrap_or_default(),
        "details": local.and_then(|m| m.details.clone()).unwrap_or_else(|| json!({})),
    })
}

/// Show a model (Ollama)
///
/// A routed model's details (Ollama's, when it serves it), and what it can do through any of its
/// routes (`capabilities`, as Ollama names them: clients look there for `vision` and `tools`).
#[utoipa::path(post,
    path = "/api/show",
    tag = "Ollama",
    description = "A routed model's details.",
    request_body = ModelBody,
    responses(
        (status = 200, description = "The model, in Ollama's shape", body = Object),
        (status = 404, description = "unknown model"),
    ))]
async fn show(
    State(state): State<AppState>,
    Caller(_): Caller,
    JsonBody(body): JsonBody<ModelBody>,
) -> Result<Json<Value>, ApiError> {
    let runtime = state.runtime.current();
    let routes = runtime.routes.all();
    let Some((name, routes)) = routes.into_iter().find(|(name, _)| *name == body.model) else {
        return Err(ApiError::not_found(format!(
            "model '{}' not found",
            body.model
        )));
    };
    let listings = fleet::listings(&state).await;
    let local = routes
        .iter()
        .find_map(|(_, upstream)| fleet::installed(&listings, upstream));
    let listing = listed(name, local);
    let capabilities = runtime.model_capabilities(name).names();
    Ok(Json(json!({
        "modelfile": "", "parameters": "", "template": "",
        "details": listing["details"], "model_info": {},
        "modified_at": listing["modified_at"],
        "capabilities": capabilities,
    })))
}

/// Loaded models (Ollama)
///
/// What the fleet's hosts have loaded now; nothing from a host that does not answer.
#[utoipa::path(get,
    path = "/api/ps",
    tag = "Ollama",
    description = "What Ollama has loaded now.",
    responses(
        (status = 200, description = "Ollama's listing shape: `{models: [...]}`", body = Object),
    ))]
async fn running(State(state): State<AppState>, Caller(_): Caller) -> Json<Value> {
    Json(fleet::running(&state).await)
}

/// Version (Ollama)
#[utoipa::path(get,
    path = "/api/version",
    tag = "Ollama",
    description = "The Ollama API version this surface speaks.",
    responses(
        (status = 200, description = "`{version}`", body = Object),
    ))]
async fn version(Caller(_): Caller) -> Json<Value> {
    Json(json!({ "version": OLLAMA_API_VERSION }))
}

/// Pull a model (Ollama, admin)
///
/// Pulls on every enabled host of the fleet, in turn: their progress lines as NDJSON, each naming
/// its host (unless `"stream": false`, which waits for `{"status": "success"}`).
#[utoipa::path(post,
    path = "/api/pull",
    tag = "Ollama",
    description = "Ollama's progress lines (NDJSON), or one answer with `stream: false`; audited.",
    request_body = ModelBody,
    responses(
        (status = 200, description = "Progress lines, or `{status: success}` with `stream: false`", content((Object = "application/json"), (String = "application/x-ndjson"))),
        (status = 403, description = "Only an admin token may (`forbidden`)"),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
        (status = 502, description = "The upstream failed (`upstream_error`)"),
    ))]
async fn pull(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(body): JsonBody<ModelBody>,
) -> Result<Response, ApiError> {
    let model = ModelName::parse(&body.model)?;
    let stream = body.stream != Some(false);
    let progress = start_pull(&state, &admin, &model, None, stream).await?;
    if stream {
        let lines = progress.map(|line| {
            let line = line.unwrap_or_else(|error| json!({ "error": error.message }));
            Ok::<_, std::convert::Infallible>(format!("{line}\n"))
        });
        let body = Body::from_stream(lines);
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response());
    }
    let mut progress = std::pin::pin!(progress);
    let mut last = Value::Null;
    while let Some(line) = progress.next().await {
        last = line.map_err(|error| ApiError::bad_gateway(error.message))?;
    }
    if last["status"] != "success" {
        return Err(ApiError::bad_gateway(
            "Ollama ended the pull without success",
        ));
    }
    Ok(Json(json!({ "status": "success" })).into_response())
}

/// Delete a model (Ollama, admin)
#[utoipa::path(delete,
    path = "/api/delete",
    tag = "Ollama",
    description = "Audited.",
    request_body = ModelBody,
    responses(
        (status = 200, description = "Deleted: `{}`", body = Object),
        (status = 403, description = "Only an admin token may (`forbidden`)"),
        (status = 404, description = "Ollama has no such model"),
        (status = 502, description = "The upstream failed (`upstream_error`)"),
    ))]
async fn remove(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(body): JsonBody<ModelBody>,
) -> Result<Response, ApiError> {
    let model = ModelName::parse(&body.model)?;
    delete_model(&state, &admin, &model, None).await?;
    Ok(Json(json!({})).into_response())
}
