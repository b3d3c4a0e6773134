//! Getting a step of the chain ready to call: its circuit closed, a permit or a host slot held
//! (waiting as long as the route allows), the host that has the model chosen.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tollgate_core::db::runs::cancelled_error;
use tollgate_core::domain::{Capabilities, Capability, DataPolicy, JobErrorCode, LocalWait};
use tollgate_core::provider::{Provider, ProviderError};

use super::terms::{Call, Lane, PERMIT_WAIT, withheld};
use crate::fleet::{HostState, NoSlot, SlotGuard, SlotLane};
use crate::providers::{Cloud, Plan, Providers, Step, Target};

/// A call about to go out: the client to call, the model to ask it for, the host it is on (for
/// the fleet), and the slot or permits it holds until it is dropped.
pub(super) struct Ready {
    pub(super) provider: Provider,
    /// The upstream model: the step's, or on the fleet what its route names for the host's kind.
    pub(super) model: String,
    pub(super) host: Option<Arc<HostState>>,
    /// The cloud account it is on (for the cloud).
    pub(super) cloud: Option<Arc<Cloud>>,
    pub(super) _held: Held,
}

/// Held for the call's length, released when dropped.
pub(super) enum Held {
    Permits {
        _bulk: Option<OwnedSemaphorePermit>,
        _any: OwnedSemaphorePermit,
    },
    Slot {
        _slot: SlotGuard,
    },
}

impl Ready {
    /// Whether `step`'s model can reason: as its host reports (for the fleet) and its route
    /// declares; `None` when neither says (a cloud model an operator said nothing about).
    pub(super) fn thinks(&self, step: &Step) -> Option<bool> {
        let listed = self
            .host
            .as_ref()
            .and_then(|host| host.capabilities(&self.model));
        Capabilities::known(listed, step.declared).map(|can| can.has(Capability::Thinking))
    }

    /// Feeds the call's verdict into the circuit of its provider or host.
    pub(super) fn record(&self, providers: &Providers, healthy: bool, plan: &Plan) {
        let settings = &plan.runtime.settings;
        if let Some(host) = &self.host {
            providers.fleet().record(host, healthy, &settings.circuit);
        }
        if let Some(cloud) = &self.cloud {
            cloud.record(healthy, settings);
        }
    }
}

/// Waits for the step's call to be allowed out: its cloud account's circuit and one of this
/// worker's permits for it (a bulk call first takes one of the permits bulk calls may use, so the
/// rest stay free for single jobs), or a slot on a healthy host that has the model (one not in
/// `failed_hosts`, when another can serve). A cancel ends the wait.
/// Long on purpose: the two kinds of wait (an account's permit, a host's slot) side by side, a
/// cancel beside each.
pub(super) async fn ready(
    providers: &Providers,
    plan: &Plan,
    step: &Step,
    call: &Call<'_>,
    failed_hosts: &[uuid::Uuid],
) -> Result<Ready, ProviderError> {
    let settings = &plan.runtime.settings;
    let wait = match step.local_wait {
        LocalWait::Overflow(wait) => wait,
        LocalWait::Patient => PERMIT_WAIT,
    };
    match &step.target {
        Target::Cloud(cloud) => {
            if !cloud.allows(settings) {
                return Err(circuit_open(step.name.as_str()));
            }
            if let Some(lacking) = cloud.refuses(&step.upstream_model, call.request.needs()) {
                return Err(refused_lately(step, lacking));
            }
            let permits = async {
                let bulk = match call.lane {
                    Lane::Bulk => Some(cloud.bulk_limit.clone().acquire_owned().await?),
                    Lane::Interactive => None,
                };
                let any = cloud.limit.clone().acquire_owned().await?;
                Ok::<_, tokio::sync::AcquireError>((bulk, any))
            };
            let permits = tokio::select! {
                permits = tokio::time::timeout(wait, permits) => permits,
                () = call.cancel.cancelled() => return Err(cancelled()),
            };
            let Ok(Ok((bulk, any))) = permits else {
                return Err(busy(format!(
                    "{} has no free call slot (its concurrency limit is reached)",
                    step.name.as_str()
                )));
            };
            Ok(Ready {
                provider: cloud.provider.clone(),
                model: step.upstream_model.clone(),
                host: None,
                cloud: Some(cloud.clone()),
                _held: Held::Permits {
                    _bulk: bulk,
                    _any: any,
                },
            })
        }
        Target::Fleet(route) => {
            let fleet = providers.fleet();
            let model = &step.upstream_model;
            let needs = call.request.needs();
            let serving = fleet.serving(route, needs, &settings.circuit).await;
            if serving.ready.is_empty() {
                return Err(if serving.resting > 0 {
                    circuit_open("every fleet host with this model")
                } else if let Some(lacking) = serving.lacking {
                    incapable_on_fleet(model, lacking, call.policy)
                } else {
                    not_on_fleet(model, call.policy)
                });
            }
            let lane = match call.lane {
                Lane::Interactive => SlotLane::Any,
                Lane::Bulk => SlotLane::Bulk,
            };
            let (fresh, failed): (Vec<_>, Vec<_>) =
                (serving.ready.into_iter()).partition(|host| !failed_hosts.contains(&host.host.id));
            let hosts = if fresh.is_empty() { failed } else { fresh };
            let slot = match fleet
                .take(route, needs, &hosts, lane, wait, call.cancel)
                .await
            {
                Ok(slot) => slot,
                Err(NoSlot::Cancelled) => return Err(cancelled()),
                Err(NoSlot::Busy) => {
                    return Err(busy(format!(
                        "every slot of the fleet hosts with {model:?} stayed busy for {} ms",
                        wait.as_millis()
                    )));
                }
                Err(NoSlot::Unavailable(error)) => {
                    return Err(ProviderError::new(
                        JobErrorCode::FleetUnavailable,
                        format!("the host slots cannot be read: {error}"),
                    ));
                }
            };
            let Some(host) = fleet.host(slot.host_id()) else {
                return Err(ProviderError::new(
                    JobErrorCode::HostRemoved,
                    "the host was removed from the fleet as its call was about to go out",
                ));
            };
            let Some(model) = host.runs(route).map(str::to_owned) else {
                return Err(ProviderError::new(
                    JobErrorCode::HostRemoved,
                    "the host changed kind as its call was about to go out",
                ));
            };
            Ok(Ready {
                provider: host.client.clone(),
                model,
                host: Some(host),
                cloud: None,
                _held: Held::Slot { _slot: slot },
            })
        }
    }
}

pub(super) fn busy(message: String) -> ProviderError {
    ProviderError::new(JobErrorCode::ProviderBusy, message)
}

pub(super) fn circuit_open(what: &str) -> ProviderError {
    ProviderError::new(
        JobErrorCode::ProviderCircuitOpen,
        format!("{what} is failing and rests until its cool-down ends"),
    )
}

/// No enabled host has the model installed: nothing local can serve it (a pull would fix it).
pub(super) fn not_on_fleet(model: &str, policy: DataPolicy) -> ProviderError {
    let mut message = format!("no enabled fleet host has the model {model:?} installed");
    if policy == DataPolicy::LocalOnly {
        message.push_str(&withheld(policy));
    }
    ProviderError::new(JobErrorCode::NoProviderAvailable, message)
}

/// Every enabled host that has `model` says it cannot do what the call needs.
fn incapable_on_fleet(model: &str, lacking: Capability, policy: DataPolicy) -> ProviderError {
    let mut message = format!(
        "no enabled fleet host's {model:?} has the {} capability",
        lacking.as_str()
    );
    if policy == DataPolicy::LocalOnly {
        message.push_str(&withheld(policy));
    }
    ProviderError::new(JobErrorCode::NoProviderAvailable, message)
}

/// A cloud account whose model refused what the call needs a moment ago: not asked again yet.
fn refused_lately(step: &Step, lacking: Capability) -> ProviderError {
    let message = format!(
        "{}'s {:?} refused the {} capability lately",
        step.name.as_str(),
        step.upstream_model,
        lacking.as_str()
    );
    let mut failure = ProviderError::new(JobErrorCode::NoProviderAvailable, message);
    failure.lacks = Some(lacking);
    failure
}

pub(super) fn cancelled() -> ProviderError {
    let error = cancelled_error();
    ProviderError::new(error.code, error.message)
}
