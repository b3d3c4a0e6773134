//! The local fleet's Ollama hosts as operators describe them: each host, its slots (and how many
//! batch items may hold), its name rule, and a change to one; and what the enabled hosts' models
//! can do, as their listings said.

use std::collections::HashMap;

use serde::Serialize;
use uuid::Uuid;

use super::{Capabilities, ValidationError};

/// One Ollama host of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Host {
    pub id: Uuid,
    pub name: String,
    pub base_url: String,
    /// Calls it serves well at once, across every worker.
    pub slots: u32,
    /// How many of them batch items may hold (see [`bulk_slots`]).
    pub bulk_slots: u32,
    pub enabled: bool,
}

/// A model's name as Ollama resolves it: a name without a tag is its `latest`, so `llama3` and
/// `llama3:latest` are one model.
pub fn model_key(name: &str) -> String {
    if name.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

/// What the fleet can do with each model its enabled hosts have (by [`model_key`]): what any of
/// them can (a job goes to a host that can), a host that did not say counting as able to do
/// everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetModels(HashMap<String, Capabilities>);

impl FleetModels {
    /// A host has `model`, able to do `capabilities` (`None`: it did not say).
    pub fn add(&mut self, model: &str, capabilities: Option<Capabilities>) {
        let had = self.0.entry(model_key(model)).or_default();
        *had = had.union(capabilities.unwrap_or(Capabilities::ALL));
    }

    /// What the fleet can do with `model`; `None` when no host is known to have it (its listing
    /// may be yet to come: the worker decides then).
    pub fn of(&self, model: &str) -> Option<Capabilities> {
        self.0.get(&model_key(model)).copied()
    }
}

/// How many of `slots` batch items may hold at once: all but a quarter (rounded up), so single
/// jobs always find a slot batch items cannot take; with a single slot, that slot.
pub fn bulk_slots(slots: u32) -> u32 {
    let reserved = if slots >= 2 { slots.div_ceil(4) } else { 0 };
    slots - reserved
}

/// A host as an operator describes it (`POST /v1/admin/hosts`), checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub name: String,
    pub base_url: String,
    pub slots: u32,
    pub enabled: bool,
}

/// The most slots a host may have.
pub const MAX_HOST_SLOTS: u32 = 10_000;

impl HostSpec {
    pub fn parse(
        name: &str,
        base_url: &str,
        slots: u32,
        enabled: bool,
    ) -> Result<Self, ValidationError> {
        Ok(Self {
            name: host_name(name)?,
            base_url: super::check_base_url("base_url", base_url)?,
            slots: host_slots(slots)?,
            enabled,
        })
    }

    /// The spec with `change` applied.
    pub fn changed(&self, change: &HostChange) -> Result<Self, ValidationError> {
        Self::parse(
            &self.name,
            change.base_url.as_deref().unwrap_or(&self.base_url),
            change.slots.unwrap_or(self.slots),
            change.enabled.unwrap_or(self.enabled),
        )
    }
}

impl From<Host> for HostSpec {
    fn from(host: Host) -> Self {
        Self {
            name: host.name,
            base_url: host.base_url,
            slots: host.slots,
            enabled: host.enabled,
        }
    }
}

/// A partial change to a host (`PATCH /v1/admin/hosts/{name}`).
#[derive(Debug, Clone, Default)]
pub struct HostChange {
    pub base_url: Option<String>,
    pub slots: Option<u32>,
    pub enabled: Option<bool>,
}

/// A host name: lowercase letters, digits, `.`, `_`, `-`, starting with a letter or digit, at most
/// 63 characters (it appears in paths and attempt rows).
pub fn host_name(name: &str) -> Result<String, ValidationError> {
    let ok = name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(ValidationError::new(
            "name",
            "must be 1 to 63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
        ))
    }
}

fn host_slots(slots: u32) -> Result<u32, ValidationError> {
    if (1..=MAX_HOST_SLOTS).contains(&slots) {
        Ok(slots)
    } else {
        Err(ValidationError::new(
            "slots",
            format!("must be between 1 and {MAX_HOST_SLOTS}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_items_leave_a_quarter_of_a_hosts_slots_to_single_jobs() {
        assert_eq!(bulk_slots(1), 1, "a single slot is shared");
        assert_eq!(bulk_slots(2), 1);
        assert_eq!(bulk_slots(4), 3);
        assert_eq!(bulk_slots(5), 3);
        assert_eq!(bulk_slots(64), 48);
    }

    #[test]
    fn host_names_and_slots_are_checked() {
        assert!(HostSpec::parse("gpu-1", "http://gpu-1:11434", 4, true).is_ok());
        assert_eq!(
            HostSpec::parse("GPU", "http://x", 4, true)
                .expect_err("upper")
                .field,
            "name"
        );
        assert_eq!(
            HostSpec::parse("a", "http://x", 0, true)
                .expect_err("slots")
                .field,
            "slots"
        );
        assert_eq!(
            HostSpec::parse("a", "ftp://x", 1, true)
                .expect_err("url")
                .field,
            "base_url"
        );
    }
}
