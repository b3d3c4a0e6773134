//! The fleet's models as the api reaches them: what each enabled host has installed (an
//! OpenAI-compatible server: serves) and, on Ollama hosts, running (asked of every host at once);
//! and pulling or deleting a model on one Ollama host or on all of them. The routes (`/v1/models`,
//! the Ollama surface) only shape the answers.

use futures::{Stream, StreamExt as _};
use serde::Serialize;
use serde_json::{Value, json};
use tollgate_core::domain::{Host, HostKind, SealedKey};
use tollgate_core::provider::{
    DeleteError, HostListing, InstalledModel, OllamaModels, ProviderError, model_key,
};
use tollgate_core::secret::Purpose;

use crate::AppState;
use crate::http::error::ApiError;

/// One host's listing.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HostModels {
    pub name: String,
    pub kind: HostKind,
    pub enabled: bool,
    /// Whether it answered (`installed` is empty when not).
    pub reachable: bool,
    pub installed: Vec<InstalledModel>,
}

impl HostModels {
    /// Whether the host has `model` (`llama3` is `llama3:latest`).
    pub fn has(&self, model: &str) -> bool {
        self.find(model).is_some()
    }

    pub fn find(&self, model: &str) -> Option<&InstalledModel> {
        let key = model_key(model);
        self.installed.iter().find(|m| model_key(&m.name) == key)
    }
}

fn client(state: &AppState, host: &Host) -> OllamaModels {
    OllamaModels::new(&host.base_url, state.upstream.clone())
}

/// A listing client for a host of `kind` at `base_url`, with its key opened (a key this server
/// cannot open is not sent: the host then answers as it does to anyone without one).
pub fn listing(
    state: &AppState,
    kind: HostKind,
    base_url: &str,
    sealed_key: Option<&SealedKey>,
) -> HostListing {
    let api_key = sealed_key.and_then(|sealed| {
        let key = state.secret_key.as_ref()?;
        key.open_as(Purpose::HostKey, &sealed.sealed).ok()
    });
    HostListing::new(kind, base_url, api_key, state.upstream.clone())
}

/// Every host's listing, by name; disabled hosts are listed as not reachable without being asked.
pub async fn listings(state: &AppState) -> Vec<HostModels> {
    let runtime = state.runtime.current();
    let asked = runtime.hosts.iter().map(|host| async move {
        let installed = if host.enabled {
            let listing = listing(state, host.kind, &host.base_url, host.api_key.as_ref());
            listing.installed().await.ok()
        } else {
            None
        };
        HostModels {
            name: host.name.clone(),
            kind: host.kind,
            enabled: host.enabled,
            reachable: installed.is_some(),
            installed: installed.unwrap_or_default(),
        }
    });
    futures::future::join_all(asked).await
}

/// The first listing of `model` on any host.
pub fn installed<'a>(listings: &'a [HostModels], model: &str) -> Option<&'a InstalledModel> {
    listings.iter().find_map(|l| l.find(model))
}

/// What the enabled Ollama hosts have loaded now, in one Ollama `/api/ps` shape.
pub async fn running(state: &AppState) -> Value {
    let runtime = state.runtime.current();
    let asked = runtime
        .hosts
        .iter()
        .filter(|h| h.enabled && h.kind == HostKind::Ollama)
        .map(|host| async move { client(state, host).running().await.ok() });
    let models: Vec<Value> = futures::future::join_all(asked)
        .await
        .into_iter()
        .flatten()
        .flat_map(|answer| match answer.get("models") {
            Some(Value::Array(models)) => models.clone(),
            _ => Vec::new(),
        })
        .collect();
    json!({ "models": models })
}

/// The hosts an operator's pull or delete is for: the one named, or every enabled Ollama host.
/// Models are pulled and deleted on Ollama hosts only: an OpenAI-compatible server loads what it
/// was started with.
pub fn targets(state: &AppState, host: Option<&str>) -> Result<Vec<Host>, ApiError> {
    let runtime = state.runtime.current();
    match host {
        Some(name) => {
            let host = runtime
                .hosts
                .iter()
                .find(|h| h.name == name)
                .cloned()
                .ok_or_else(|| {
                    ApiError::invalid_field("host", format!("no host is named {name:?}"))
                })?;
            if host.kind != HostKind::Ollama {
                return Err(ApiError::invalid_field(
                    "host",
                    format!(
                        "{name:?} is an OpenAI-compatible server: models are pulled and deleted \
                         on Ollama hosts only (the server serves what it was started with)"
                    ),
                ));
            }
            Ok(vec![host])
        }
        None => {
            let enabled: Vec<Host> = runtime
                .hosts
                .iter()
                .filter(|h| h.enabled && h.kind == HostKind::Ollama)
                .cloned()
                .collect();
            if enabled.is_empty() {
                return Err(ApiError::invalid_field(
                    "host",
                    "the fleet has no enabled Ollama host",
                ));
            }
            Ok(enabled)
        }
    }
}

/// Pulls `model` on `hosts`, one after the other: each host's progress lines carry its name, and
/// only the last host's success says `success` (the others' say `pulled`), so a reader that stops
/// at `success` has seen every host finish. An error ends the stream.
pub fn pull(
    state: &AppState,
    hosts: Vec<Host>,
    model: &str,
) -> impl Stream<Item = Result<Value, ProviderError>> + Send + 'static + use<> {
    let count = hosts.len();
    let model = model.to_owned();
    let clients: Vec<(usize, String, OllamaModels)> = hosts
        .iter()
        .enumerate()
        .map(|(i, host)| (i, host.name.clone(), client(state, host)))
        .collect();
    futures::stream::iter(clients)
        .then(move |(i, name, api)| {
            let model = model.clone();
            async move {
                let last = i + 1 == count;
                match api.pull(&model).await {
                    Ok(lines) => lines
                        .map(move |line| line.map(|line| tagged(line, &name, last)))
                        .left_stream(),
                    Err(error) => futures::stream::once(async { Err(error) }).right_stream(),
                }
            }
        })
        .flatten()
}

fn tagged(mut line: Value, host: &str, last: bool) -> Value {
    if !last && line["status"] == "success" {
        line["status"] = json!("pulled");
    }
    line["host"] = json!(host);
    line
}

/// How a delete went on one host.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = HostDeletion)]
pub struct Deleted {
    pub host: String,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Deletes `model` on `hosts` (all at once), saying how it went on each.
pub async fn delete(state: &AppState, hosts: &[Host], model: &str) -> Vec<Deleted> {
    let asked = hosts.iter().map(|host| async move {
        let (outcome, error) = match client(state, host).delete(model).await {
            Ok(()) => ("deleted", None),
            Err(DeleteError::NotFound(_)) => ("not_found", None),
            Err(DeleteError::Failed(error)) => ("failed", Some(error.message)),
        };
        Deleted {
            host: host.name.clone(),
            outcome,
            error,
        }
    });
    futures::future::join_all(asked).await
}
