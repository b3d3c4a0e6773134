//! Models: `GET /v1/models` (what the gateway serves, with prices, and what Ollama has installed),
//! and for admins `POST /v1/models/pull` (through Ollama, progress as SSE when asked) and
//! `DELETE /v1/models/{model}`. Pulls and deletes are recorded in the audit log.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::Utc;
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::billing;
use shared::db::audit::{self, Action};
use shared::db::tokens::Principal;
use shared::domain::{ModelName, ProviderName};
use shared::provider::{DeleteError, InstalledModel, OllamaModels, ProviderError};

use crate::AppState;
use crate::auth::{Admin, Caller};
use crate::error::ApiError;
use crate::extract::JsonBody;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list))
        .route("/v1/models/pull", post(pull))
        .route("/v1/models/{*model}", delete(remove))
}

#[derive(Serialize)]
struct Models {
    /// Every model name clients may submit, with what each provider runs and its price.
    data: Vec<ServedModel>,
    ollama: OllamaState,
}

#[derive(Serialize)]
struct ServedModel {
    model: String,
    providers: Vec<Route>,
}

#[derive(Serialize)]
struct Route {
    provider: ProviderName,
    upstream_model: String,
    /// For Ollama: whether the upstream model is installed (`null` when Ollama is unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    installed: Option<bool>,
    /// The price in force, per 1,000 tokens; `null` when the model is unpriced.
    price: Option<PriceView>,
}

#[derive(Serialize)]
struct PriceView {
    input_per_1k: String,
    output_per_1k: String,
}

#[derive(Serialize)]
struct OllamaState {
    reachable: bool,
    /// What Ollama has installed, routed or not.
    installed: Vec<InstalledModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullBody {
    model: String,
}

async fn list(State(state): State<AppState>, Caller(_): Caller) -> Result<Json<Models>, ApiError> {
    let runtime = state.runtime.current();
    let installed = ollama(&state).installed().await;
    let reachable = installed.is_ok();
    let installed = installed.unwrap_or_default();
    let now = Utc::now();
    let data = runtime
        .routes
        .all()
        .into_iter()
        .map(|(model, routes)| ServedModel {
            model: model.to_owned(),
            providers: routes
                .into_iter()
                .map(|(provider, upstream)| Route {
                    provider,
                    upstream_model: upstream.to_owned(),
                    installed: (provider == ProviderName::Ollama && reachable)
                        .then(|| installed.iter().any(|m| same_model(&m.name, upstream))),
                    price: runtime
                        .prices
                        .at(provider, upstream, now)
                        .map(|p| PriceView {
                            input_per_1k: billing::display(p.input_per_1k),
                            output_per_1k: billing::display(p.output_per_1k),
                        }),
                })
                .collect(),
        })
        .collect();
    Ok(Json(Models {
        data,
        ollama: OllamaState {
            reachable,
            installed,
        },
    }))
}

/// Pulls a model through Ollama. With `Accept: text/event-stream` its progress streams as
/// `event: progress` lines, ending with `event: done` or `event: error`; otherwise the answer
/// waits for the outcome. The request is audited before the pull starts, so a client that hangs
/// up mid-way still leaves its record.
async fn pull(
    State(state): State<AppState>,
    Admin(admin): Admin,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PullBody>,
) -> Result<Response, ApiError> {
    let model = ModelName::parse(&body.model)?;
    let stream = wants_events(&headers);
    let progress = start_pull(&state, &admin, &model, stream).await?;
    if stream {
        let events = progress_events(progress);
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::new().interval(state.sse_heartbeat))
            .into_response());
    }
    let mut progress = std::pin::pin!(progress);
    let mut last = Value::Null;
    while let Some(line) = progress.next().await {
        last = line.map_err(upstream_error)?;
    }
    if last["status"] != "success" {
        return Err(ApiError::bad_gateway(
            "Ollama ended the pull without success",
        ));
    }
    Ok(Json(json!({ "model": model.as_str(), "status": "success" })).into_response())
}

/// Audits a pull (before it starts, so a client that hangs up mid-way still leaves its record)
/// and starts it: Ollama's progress lines follow.
pub(crate) async fn start_pull(
    state: &AppState,
    admin: &Principal,
    model: &ModelName,
    stream: bool,
) -> Result<impl Stream<Item = Result<Value, ProviderError>> + Send + 'static, ApiError> {
    let details = json!({ "stream": stream });
    record(state, admin, "model.pull", model.as_str(), details).await?;
    ollama(state)
        .pull(model.as_str())
        .await
        .map_err(upstream_error)
}

/// Ollama's progress lines as SSE events, then `done` (or `error`).
fn progress_events(
    progress: impl Stream<Item = Result<Value, ProviderError>> + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let progress = Box::pin(progress);
    futures::stream::unfold(Some(progress), |progress| async move {
        let mut progress = progress?;
        let event = match progress.next().await {
            Some(Ok(line)) if line["status"] == "success" => {
                return Some((Ok(json_event("done", &line)), None));
            }
            Some(Ok(line)) => json_event("progress", &line),
            Some(Err(error)) => {
                let body = json!({ "error": error.message });
                return Some((Ok(json_event("error", &body)), None));
            }
            None => {
                let body = json!({ "error": "Ollama ended the pull without success" });
                return Some((Ok(json_event("error", &body)), None));
            }
        };
        Some((Ok(event), Some(progress)))
    })
}

fn json_event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// Deletes a model from Ollama; Ollama's 404 is passed on as 404.
async fn remove(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let model = ModelName::parse(&model).map_err(|_| ApiError::not_found("no such model"))?;
    delete_model(&state, &admin, &model).await?;
    Ok(Json(json!({ "model": model.as_str(), "deleted": true })))
}

/// Deletes a model from Ollama and audits the outcome; Ollama's 404 is a 404.
pub(crate) async fn delete_model(
    state: &AppState,
    admin: &Principal,
    model: &ModelName,
) -> Result<(), ApiError> {
    let outcome = ollama(state).delete(model.as_str()).await;
    let result = match &outcome {
        Ok(()) => "deleted",
        Err(DeleteError::NotFound(_)) => "not_found",
        Err(DeleteError::Failed(_)) => "failed",
    };
    record(
        state,
        admin,
        "model.delete",
        model.as_str(),
        json!({ "outcome": result }),
    )
    .await?;
    match outcome {
        Ok(()) => Ok(()),
        Err(DeleteError::NotFound(message)) => Err(ApiError::not_found(format!(
            "Ollama has no model {:?}: {message}",
            model.as_str()
        ))),
        Err(DeleteError::Failed(error)) => Err(upstream_error(error)),
    }
}

pub(crate) fn ollama(state: &AppState) -> OllamaModels {
    let runtime = state.runtime.current();
    OllamaModels::new(&runtime.settings.ollama_base_url, state.upstream.clone())
}

async fn record(
    state: &AppState,
    admin: &Principal,
    action: &str,
    model: &str,
    details: Value,
) -> Result<(), ApiError> {
    let action = Action {
        actor_token_id: admin.token_id,
        actor_tenant_id: admin.tenant_id,
        action,
        target: Some(model.to_owned()),
        details: Some(details),
    };
    audit::record(&state.pool, &action).await?;
    Ok(())
}

fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}

/// Ollama names `llama3` and `llama3:latest` the same model.
pub(crate) fn same_model(installed: &str, upstream: &str) -> bool {
    let full = |name: &str| {
        if name.contains(':') {
            name.to_owned()
        } else {
            format!("{name}:latest")
        }
    };
    full(installed) == full(upstream)
}

/// Ollama's refusal or absence, as the gateway's answer: its client errors as 422 on `model`,
/// everything else as 502.
fn upstream_error(error: ProviderError) -> ApiError {
    match error.status_code {
        Some(400..=499) => ApiError::invalid_field("model", error.message),
        _ => ApiError::bad_gateway(error.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_without_a_tag_is_the_latest_tag() {
        assert!(same_model("llama3:latest", "llama3"));
        assert!(same_model("llama3", "llama3:latest"));
        assert!(!same_model("llama3:8b", "llama3"));
    }

    #[test]
    fn only_an_event_stream_accept_streams() {
        let mut headers = HeaderMap::new();
        assert!(!wants_events(&headers));
        headers.insert(header::ACCEPT, "text/event-stream".parse().expect("value"));
        assert!(wants_events(&headers));
    }
}
