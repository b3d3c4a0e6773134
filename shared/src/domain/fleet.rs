//! The local fleet's hosts as operators describe them: each host, its kind (Ollama, or a server
//! that speaks the OpenAI API), its slots (and how many batch items may hold), its name rule, and a
//! change to one; what the fleet runs for a model name on each kind of host; and what the enabled
//! hosts' models can do, as their listings said.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Capabilities, SealedKey, ValidationError};

/// How calls are written to a host: Ollama's own API, or the OpenAI API as vLLM, llama.cpp's
/// server, SGLang, TGI and LM Studio serve it (`/chat/completions`, `/embeddings`, `/models`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostKind {
    Ollama,
    OpenaiCompatible,
}

impl HostKind {
    pub const ALL: [Self; 2] = [Self::Ollama, Self::OpenaiCompatible];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ollama => "ollama",
            Self::OpenaiCompatible => "openai_compatible",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// What a person calls it, in messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ollama => "Ollama",
            Self::OpenaiCompatible => "OpenAI-compatible",
        }
    }
}

/// One host of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Host {
    pub id: Uuid,
    pub name: String,
    pub kind: HostKind,
    pub base_url: String,
    /// Calls it serves well at once, across every worker.
    pub slots: u32,
    /// How many of them batch items may hold (see [`bulk_slots`]).
    pub bulk_slots: u32,
    pub enabled: bool,
    /// An OpenAI-compatible server's key, sealed; never shown.
    #[serde(skip)]
    #[schema(ignore)]
    pub api_key: Option<SealedKey>,
}

/// What the fleet runs for a model name: an upstream model per kind of host, since the two name
/// one model differently (`qwen3:32b` on Ollama, `Qwen/Qwen3-32B` on vLLM). A host whose kind has
/// none is never given the model's jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FleetRoute {
    pub ollama: Option<String>,
    pub openai_compatible: Option<String>,
}

impl FleetRoute {
    /// What hosts of `kind` run.
    pub fn on(&self, kind: HostKind) -> Option<&str> {
        match kind {
            HostKind::Ollama => self.ollama.as_deref(),
            HostKind::OpenaiCompatible => self.openai_compatible.as_deref(),
        }
    }

    pub fn set(&mut self, kind: HostKind, upstream_model: String) {
        match kind {
            HostKind::Ollama => self.ollama = Some(upstream_model),
            HostKind::OpenaiCompatible => self.openai_compatible = Some(upstream_model),
        }
    }

    /// Each kind of host with what it runs.
    pub fn kinds(&self) -> impl Iterator<Item = (HostKind, &str)> {
        HostKind::ALL
            .into_iter()
            .filter_map(|kind| Some((kind, self.on(kind)?)))
    }

    /// The upstream model the route is known by where one host's is not known yet: its Ollama
    /// hosts', else its OpenAI-compatible hosts'.
    pub fn first(&self) -> Option<&str> {
        self.kinds().next().map(|(_, model)| model)
    }
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

/// What the fleet can do with each model its enabled hosts have (by kind of host and
/// [`model_key`]): what any of them can (a job goes to a host that can), a host that did not say
/// counting as able to do everything (an OpenAI-compatible server never says).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetModels(HashMap<(HostKind, String), Capabilities>);

impl FleetModels {
    /// A host of `kind` has `model`, able to do `capabilities` (`None`: it did not say).
    pub fn add(&mut self, kind: HostKind, model: &str, capabilities: Option<Capabilities>) {
        let had = self.0.entry((kind, model_key(model))).or_default();
        *had = had.union(capabilities.unwrap_or(Capabilities::ALL));
    }

    /// What hosts of `kind` can do with `model`; `None` when none is known to have it (its
    /// listing may be yet to come: the worker decides then).
    pub fn of(&self, kind: HostKind, model: &str) -> Option<Capabilities> {
        self.0.get(&(kind, model_key(model))).copied()
    }

    /// What the fleet can do with what `route` runs on each kind of host; `None` when no host is
    /// known to have any of it.
    pub fn of_route(&self, route: &FleetRoute) -> Option<Capabilities> {
        route
            .kinds()
            .filter_map(|(kind, model)| self.of(kind, model))
            .reduce(Capabilities::union)
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
    pub kind: HostKind,
    pub base_url: String,
    pub slots: u32,
    pub enabled: bool,
    /// Sealed by the api; only an OpenAI-compatible server takes one.
    pub api_key: Option<SealedKey>,
}

/// The most slots a host may have.
pub const MAX_HOST_SLOTS: u32 = 10_000;

impl HostSpec {
    pub fn parse(
        name: &str,
        kind: HostKind,
        base_url: &str,
        slots: u32,
        enabled: bool,
        api_key: Option<SealedKey>,
    ) -> Result<Self, ValidationError> {
        if api_key.is_some() && kind != HostKind::OpenaiCompatible {
            return Err(ValidationError::new(
                "api_key",
                "only an openai_compatible host takes a key",
            ));
        }
        Ok(Self {
            name: host_name(name)?,
            kind,
            base_url: super::check_base_url("base_url", base_url)?,
            slots: host_slots(slots)?,
            enabled,
            api_key,
        })
    }

    /// The spec with `change` applied (a host's kind stays what it was added as).
    pub fn changed(&self, change: HostChange) -> Result<Self, ValidationError> {
        Self::parse(
            &self.name,
            self.kind,
            change.base_url.as_deref().unwrap_or(&self.base_url),
            change.slots.unwrap_or(self.slots),
            change.enabled.unwrap_or(self.enabled),
            change.api_key.unwrap_or_else(|| self.api_key.clone()),
        )
    }
}

impl From<Host> for HostSpec {
    fn from(host: Host) -> Self {
        Self {
            name: host.name,
            kind: host.kind,
            base_url: host.base_url,
            slots: host.slots,
            enabled: host.enabled,
            api_key: host.api_key,
        }
    }
}

/// A partial change to a host (`PATCH /v1/admin/hosts/{name}`).
#[derive(Debug, Clone, Default)]
pub struct HostChange {
    pub base_url: Option<String>,
    pub slots: Option<u32>,
    pub enabled: Option<bool>,
    /// `Some(None)` removes the key.
    pub api_key: Option<Option<SealedKey>>,
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
    fn a_route_is_served_by_the_kinds_of_host_it_names_a_model_for() {
        let route = FleetRoute {
            ollama: None,
            openai_compatible: Some("Qwen/Qwen3-32B".into()),
        };
        assert_eq!(route.first(), Some("Qwen/Qwen3-32B"));
        assert_eq!(route.on(HostKind::Ollama), None);
        let mut models = FleetModels::default();
        assert_eq!(models.of_route(&route), None);
        // An Ollama host with a model of that name does not serve the server's route.
        let completion = Capabilities::of([crate::domain::Capability::Completion]);
        models.add(HostKind::Ollama, "Qwen/Qwen3-32B", Some(completion));
        assert_eq!(models.of_route(&route), None);
        // A server never says what its models can do: everything, as far as routing knows.
        models.add(HostKind::OpenaiCompatible, "Qwen/Qwen3-32B", None);
        assert_eq!(models.of_route(&route), Some(Capabilities::ALL));
        let both = FleetRoute {
            ollama: Some("qwen3:32b".into()),
            ..route
        };
        assert_eq!(both.first(), Some("qwen3:32b"));
        assert_eq!(both.kinds().count(), 2);
    }

    #[test]
    fn a_key_is_for_an_openai_compatible_host_only() {
        let key = SealedKey {
            sealed: vec![1],
            last4: "abcd".into(),
        };
        let ollama = HostSpec::parse(
            "a",
            HostKind::Ollama,
            "http://x",
            1,
            true,
            Some(key.clone()),
        );
        assert_eq!(ollama.expect_err("a key").field, "api_key");
        let server = HostSpec::parse(
            "b",
            HostKind::OpenaiCompatible,
            "http://x/v1",
            1,
            true,
            None,
        )
        .expect("valid");
        let keyed = server
            .changed(HostChange {
                api_key: Some(Some(key)),
                ..HostChange::default()
            })
            .expect("a key");
        assert_eq!(keyed.kind, HostKind::OpenaiCompatible, "the kind stays");
        assert!(keyed.api_key.is_some());
        let removed = keyed
            .changed(HostChange {
                api_key: Some(None),
                ..HostChange::default()
            })
            .expect("no key");
        assert!(removed.api_key.is_none());
    }

    #[test]
    fn host_names_and_slots_are_checked() {
        assert!(
            HostSpec::parse(
                "gpu-1",
                HostKind::Ollama,
                "http://gpu-1:11434",
                4,
                true,
                None
            )
            .is_ok()
        );
        assert_eq!(
            HostSpec::parse("GPU", HostKind::Ollama, "http://x", 4, true, None)
                .expect_err("upper")
                .field,
            "name"
        );
        assert_eq!(
            HostSpec::parse("a", HostKind::Ollama, "http://x", 0, true, None)
                .expect_err("slots")
                .field,
            "slots"
        );
        assert_eq!(
            HostSpec::parse("a", HostKind::Ollama, "ftp://x", 1, true, None)
                .expect_err("url")
                .field,
            "base_url"
        );
    }
}
