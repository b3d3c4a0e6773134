//! `GET /api/tags` (the models Tollgate routes, with what Ollama says of those it has), `POST
//! /api/show`, `GET /api/ps` (what Ollama has loaded), `GET /api/version`, and for admins `POST
//! /api/pull` (Ollama's own progress lines) and `DELETE /api/delete`, through the model management
//! `/v1/models` uses (audited the same way).

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_core::domain::ModelName;
use tollgate_core::provider::InstalledModel;

use crate::AppState;
use crate::access::auth::{Admin, Caller};
use crate::fleet;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;
use crate::routes::admin::models::{delete_model, start_pull};

/// The Ollama API version this surface speaks (what `GET /api/version` reports).
const OLLAMA_API_VERSION: &str = "0.12.0";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/tags", get(tags))
        .route("/api/show", post(show))
        .route("/api/ps", get(running))
        .route("/api/version", get(version))
        .route("/api/pull", post(pull))
        .route("/api/delete", delete(remove))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
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

/// Every routed model in Ollama's listing shape, with the size, digest and details Ollama has for
/// the ones it serves (a model only OpenAI serves has none).
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

/// A routed model's details (Ollama's, when it serves it).
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
    Ok(Json(json!({
        "modelfile": "", "parameters": "", "template": "",
        "details": listing["details"], "model_info": {},
        "modified_at": listing["modified_at"],
    })))
}

/// What the fleet's hosts have loaded now; nothing from a host that does not answer.
async fn running(State(state): State<AppState>, Caller(_): Caller) -> Json<Value> {
    Json(fleet::running(&state).await)
}

async fn version(Caller(_): Caller) -> Json<Value> {
    Json(json!({ "version": OLLAMA_API_VERSION }))
}

/// Pulls on every enabled host of the fleet, in turn: their progress lines as NDJSON, each naming
/// its host (unless `"stream": false`, which waits for `{"status": "success"}`).
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

async fn remove(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonBody(body): JsonBody<ModelBody>,
) -> Result<Response, ApiError> {
    let model = ModelName::parse(&body.model)?;
    delete_model(&state, &admin, &model, None).await?;
    Ok(Json(json!({})).into_response())
}
