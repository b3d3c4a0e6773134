//! Models on the fleet, for admins: `POST /v1/models/pull` (on one host or all, progress as SSE
//! when asked) and `DELETE /v1/models/{model}` (`?host=` for one). Pulls and deletes are recorded in
//! the audit log.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tollgate_core::db::audit::{self, Action};
use tollgate_core::db::tokens::Principal;
use tollgate_core::domain::ModelName;
use tollgate_core::provider::ProviderError;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::access::auth::Admin;
use crate::fleet::{self};
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;
use crate::http::sse::{PullEventName, PullStreamEvent};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(pull))
        .routes(routes!(remove))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PullBody {
    model: String,
    /// A host's name; absent pulls on every enabled host.
    host: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HostQuery {
    /// A host's name; absent deletes on every enabled host.
    host: Option<String>,
}

/// Pull a model on one host of the fleet or every enabled one, in turn (audited)
///
/// Pulls a model on one host or every enabled one (in turn). With `Accept: text/event-stream` its
/// progress streams as `event: progress` lines (each naming its host), ending with `event: done`
/// or `event: error`; otherwise the answer waits for the outcome. The request is audited before
/// the pull starts, so a client that hangs up mid-way still leaves its record.
#[utoipa::path(post,
    path = "/v1/models/pull",
    tag = "Admin",
    description = "With Accept: text/event-stream, Ollama's progress streams as `event: progress` (its JSON lines, each with its `host`; a host before the last ends with status `pulled`), ending with `event: done` or `event: error`; otherwise the answer waits for the outcome.",
    params(("Accept" = Option<String>, Header, description = "`text/event-stream` for the progress as it happens")),
    request_body = PullBody,
    responses(
        (status = 200, description = "The outcome, or the progress stream", content((Pulled = "application/json"), (PullStreamEvent = "text/event-stream"))),
        (status = 422, description = "A field is refused (`invalid_field`, naming it)"),
        (status = 502, description = "The upstream failed (`upstream_error`)"),
    ))]
async fn pull(
    State(state): State<AppState>,
    Admin(admin): Admin,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PullBody>,
) -> Result<Response, ApiError> {
    let model = ModelName::parse(&body.model)?;
    let stream = wants_events(&headers);
    let progress = start_pull(&state, &admin, &model, body.host.as_deref(), stream).await?;
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
    let pulled = Pulled {
        model: model.as_str().to_owned(),
        status: "success",
    };
    Ok(Json(pulled).into_response())
}

/// Audits a pull (before it starts, so a client that hangs up mid-way still leaves its record)
/// and starts it on `host` (or every enabled host): Ollama's progress lines follow, each naming
/// its host.
pub(crate) async fn start_pull(
    state: &AppState,
    admin: &Principal,
    model: &ModelName,
    host: Option<&str>,
    stream: bool,
) -> Result<impl Stream<Item = Result<Value, ProviderError>> + Send + 'static + use<>, ApiError> {
    let hosts = fleet::targets(state, host)?;
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let details = json!({ "stream": stream, "hosts": names });
    record(state, admin, "model.pull", model.as_str(), details).await?;
    Ok(fleet::pull(state, hosts, model.as_str()))
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
                return Some((Ok(json_event(PullEventName::Done, &line)), None));
            }
            Some(Ok(line)) => json_event(PullEventName::Progress, &line),
            Some(Err(error)) => {
                let body = json!({ "error": error.message });
                return Some((Ok(json_event(PullEventName::Error, &body)), None));
            }
            None => {
                let body = json!({ "error": "Ollama ended the pull without success" });
                return Some((Ok(json_event(PullEventName::Error, &body)), None));
            }
        };
        Some((Ok(event), Some(progress)))
    })
}

fn json_event(name: PullEventName, data: &Value) -> Event {
    Event::default().event(name.as_str()).data(data.to_string())
}

/// A pull's outcome.
#[derive(Serialize, ToSchema)]
struct Pulled {
    model: String,
    /// `success`.
    status: &'static str,
}

/// A delete's outcome.
#[derive(Serialize, ToSchema)]
struct Removed {
    model: String,
    /// Always `true` (a model no host had is 404).
    deleted: bool,
    /// The hosts it was deleted from.
    hosts: Vec<fleet::Deleted>,
}

/// Delete a model from one host (?host=) or every enabled host (audited)
///
/// Deletes a model from one host (`?host=`) or every enabled one; 404 when none had it.
#[utoipa::path(delete,
    path = "/v1/models/{*model}",
    tag = "Admin",
    description = "404 when none had it",
    params(("model" = String, Path, description = "The model (it may hold `/`)"), HostQuery),
    responses(
        (status = 200, description = "Deleted", body = Removed),
        (status = 404, description = "Not found (`not_found`)"),
        (status = 502, description = "The upstream failed (`upstream_error`)"),
    ))]
async fn remove(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(model): Path<String>,
    Query(query): Query<HostQuery>,
) -> Result<Json<Removed>, ApiError> {
    let model = ModelName::parse(&model).map_err(|_| ApiError::not_found("no such model"))?;
    let hosts = delete_model(&state, &admin, &model, query.host.as_deref()).await?;
    Ok(Json(Removed {
        model: model.as_str().to_owned(),
        deleted: true,
        hosts,
    }))
}

/// Deletes a model from `host` (or every enabled host) and audits how it went on each: an error
/// if a host failed, 404 if none had it; else the hosts it was deleted from.
pub(crate) async fn delete_model(
    state: &AppState,
    admin: &Principal,
    model: &ModelName,
    host: Option<&str>,
) -> Result<Vec<fleet::Deleted>, ApiError> {
    let hosts = fleet::targets(state, host)?;
    let outcomes = fleet::delete(state, &hosts, model.as_str()).await;
    record(
        state,
        admin,
        "model.delete",
        model.as_str(),
        json!({ "hosts": outcomes }),
    )
    .await?;
    if let Some(failed) = outcomes.iter().find(|o| o.outcome == "failed") {
        return Err(ApiError::bad_gateway(format!(
            "host {:?} could not delete the model: {}",
            failed.host,
            failed.error.as_deref().unwrap_or("no reason given")
        )));
    }
    let deleted: Vec<_> = outcomes
        .into_iter()
        .filter(|o| o.outcome == "deleted")
        .collect();
    if deleted.is_empty() {
        return Err(ApiError::not_found(format!(
            "the model {:?} is not found on any Ollama host",
            model.as_str()
        )));
    }
    Ok(deleted)
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
    fn only_an_event_stream_accept_streams() {
        let mut headers = HeaderMap::new();
        assert!(!wants_events(&headers));
        headers.insert(header::ACCEPT, "text/event-stream".parse().expect("value"));
        assert!(wants_events(&headers));
    }
}
