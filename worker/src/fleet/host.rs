//! One host of the fleet as a worker knows it: its client, its listing client, and what the
//! worker learned of it (its circuit, its models and what each can do, what it refused lately).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tollgate_core::db::host_models::{self, Listed};
use tollgate_core::domain::{Capabilities, FleetRoute, Host};
use tollgate_core::provider::{HostListing, InstalledModel, Provider, model_key};

use super::slots::Usable;
use crate::circuit::Circuit;
use crate::refusals::Refusals;

/// Longest a listing of a host's models may take.
const LISTING_TIMEOUT: Duration = Duration::from_secs(2);

/// One host, as configured now.
pub struct HostState {
    pub host: Host,
    /// A client for the host, of its kind.
    pub client: Provider,
    pub(super) models_api: HostListing,
    pub(super) health: Arc<Health>,
}

/// The installed models (by [`model_key`]) and what each can do.
type Installed = HashMap<String, Capabilities>;

/// What `/api/show` said each model (by name and digest) can do.
type Shown = HashMap<(String, Option<String>), Option<Vec<String>>>;

/// What a worker has learned about a host; kept while its address stays the same.
#[derive(Default)]
pub(super) struct Health {
    circuit: Mutex<Circuit>,
    /// The installed models and when they were listed; `None` before the first listing.
    pub(super) models: RwLock<Option<(Instant, Installed)>>,
    shown: Mutex<Shown>,
    /// The listing last recorded in `host_models`.
    recorded: Mutex<Option<Vec<Listed>>>,
    /// What the host's models refused to do lately.
    pub(super) refused: Refusals,
}

impl HostState {
    pub(super) fn usable(&self) -> Usable {
        Usable {
            host_id: self.host.id,
            slots: self.host.slots,
            bulk_slots: self.host.bulk_slots,
        }
    }

    pub(super) fn circuit(&self) -> std::sync::MutexGuard<'_, Circuit> {
        tollgate_core::sync::lock(&self.health.circuit)
    }

    /// The host's last listing: when, and the models in it.
    fn listing(&self) -> std::sync::RwLockReadGuard<'_, Option<(Instant, Installed)>> {
        tollgate_core::sync::read(&self.health.models)
    }

    /// What the host's `model` can do (less what it refused lately); `None` when the host does
    /// not have it.
    pub fn capabilities(&self, model: &str) -> Option<Capabilities> {
        let key = model_key(model);
        let listed = self.listing().as_ref()?.1.get(&key).copied()?;
        Some(listed.without(self.health.refused.of(model)))
    }

    /// What the host runs for `route`: its kind's model, if the route names one.
    pub fn runs<'a>(&self, route: &'a FleetRoute) -> Option<&'a str> {
        route.on(self.host.kind)
    }

    /// What the host's model for `route` can do; `None` when the route names none for its kind
    /// or the host does not have it.
    pub(super) fn capabilities_for(&self, route: &FleetRoute) -> Option<Capabilities> {
        self.capabilities(self.runs(route)?)
    }

    pub(super) fn has(&self, route: &FleetRoute) -> bool {
        self.capabilities_for(route).is_some()
    }

    /// Whether the host has its model for `route` and it can do what `needs` says.
    pub(super) fn can(&self, route: &FleetRoute, needs: Capabilities) -> bool {
        self.capabilities_for(route)
            .is_some_and(|has| has.lacking(needs).is_none())
    }

    pub(super) fn listed_within(&self, age: Duration) -> bool {
        self.listing()
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < age)
    }

    pub(super) fn listed(&self) -> bool {
        self.listing().is_some()
    }

    /// Lists the host's models and what each can do, and records the listing when it changed;
    /// `false` when the host did not answer.
    pub(super) async fn list(&self, pool: &PgPool) -> bool {
        let installed =
            match tokio::time::timeout(LISTING_TIMEOUT, self.models_api.installed()).await {
                Ok(Ok(installed)) => installed,
                _ => return false,
            };
        let mut listed = Vec::with_capacity(installed.len());
        for model in installed {
            listed.push(self.read(model).await);
        }
        let models = listed
            .iter()
            .map(|m| {
                let capabilities = m.capabilities.as_deref().map(Capabilities::from_names);
                (
                    model_key(&m.model),
                    capabilities.unwrap_or(Capabilities::ALL),
                )
            })
            .collect();
        *tollgate_core::sync::write(&self.health.models) = Some((Instant::now(), models));
        self.record(pool, listed).await;
        true
    }

    /// One model of a listing, with what it can do: as the listing says, else as `/api/show`
    /// said for its digest (asked now if it never was; a host that does not answer is asked
    /// again at the next listing).
    async fn read(&self, model: InstalledModel) -> Listed {
        let name = model_key(&model.name);
        if model.capabilities.is_some() {
            return Listed {
                model: name,
                digest: model.digest,
                capabilities: model.capabilities,
            };
        }
        let key = (name.clone(), model.digest.clone());
        let known = tollgate_core::sync::lock(&self.health.shown)
            .get(&key)
            .cloned();
        let capabilities = match known {
            Some(capabilities) => capabilities,
            None => {
                let asked = self.models_api.capabilities(&model.name);
                match tokio::time::timeout(LISTING_TIMEOUT, asked).await {
                    Ok(Ok(capabilities)) => {
                        let mut shown = tollgate_core::sync::lock(&self.health.shown);
                        shown.insert(key, capabilities.clone());
                        capabilities
                    }
                    _ => None,
                }
            }
        };
        Listed {
            model: name,
            digest: model.digest,
            capabilities,
        }
    }

    /// Writes the listing to `host_models` unless it is the one this worker recorded last.
    async fn record(&self, pool: &PgPool, listed: Vec<Listed>) {
        if tollgate_core::sync::lock(&self.health.recorded).as_ref() == Some(&listed) {
            return;
        }
        match host_models::record(pool, self.host.id, &listed).await {
            Ok(_) => *tollgate_core::sync::lock(&self.health.recorded) = Some(listed),
            Err(error) => {
                tracing::warn!(host = self.host.name, %error, "cannot record the host's models");
            }
        }
    }
}
