//! What a model can do, as Ollama names it (`/api/show`'s `capabilities`): `completion`, `tools`,
//! `vision`, `thinking`, `embedding`. A request needs some (an image needs `vision`, tools offered
//! need `tools`); a route's step whose model lacks one is skipped, and a request no step can serve
//! is refused at intake naming the field.
//!
//! What is not known counts as had: a host too old to report its models' capabilities, a cloud
//! route an operator said nothing about. A route may declare what its model can do, which bounds
//! what its hosts say.

use serde::{Deserialize, Serialize};

/// One thing a model can do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::EnumIter,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Capability {
    Completion,
    Tools,
    Vision,
    Thinking,
    Embedding,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Its name in Ollama's list; `None` for one Tollgate does not act on (`insert`, `audio`…).
    pub fn parse(name: &str) -> Option<Self> {
        <Self as strum::IntoEnumIterator>::iter().find(|c| c.as_str() == name)
    }
}

/// A set of capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u8);

impl Capabilities {
    /// Every capability: what a model whose capabilities are not known counts as having.
    pub const ALL: Self = Self(0b1_1111);
    pub const NONE: Self = Self(0);

    pub fn of(capabilities: impl IntoIterator<Item = Capability>) -> Self {
        Self(capabilities.into_iter().fold(0, |bits, c| bits | c.bit()))
    }

    /// A list of Ollama's names, the ones Tollgate does not act on left out.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Self {
        Self::of(names.iter().filter_map(|n| Capability::parse(n.as_ref())))
    }

    pub fn has(self, capability: Capability) -> bool {
        self.0 & capability.bit() != 0
    }

    /// Every capability either set has.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The capabilities both sets have.
    pub fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// These capabilities but those of `other`.
    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// What is known a model can do from what its host listed and its route declares (each
    /// bounding the other); `None` when neither says.
    pub fn known(listed: Option<Self>, declared: Option<Self>) -> Option<Self> {
        match (listed, declared) {
            (Some(listed), Some(declared)) => Some(listed.intersection(declared)),
            (listed, declared) => listed.or(declared),
        }
    }

    /// Names as an operator declares them: each must be one Tollgate knows; `Err` names the
    /// first that is not, by its place.
    pub fn parse_names<S: AsRef<str>>(names: &[S]) -> Result<Self, usize> {
        let mut set = Self::NONE;
        for (i, name) in names.iter().enumerate() {
            let capability = Capability::parse(name.as_ref()).ok_or(i)?;
            set = set.union(Self::of([capability]));
        }
        Ok(set)
    }

    /// The first of `needed` this set lacks.
    pub fn lacking(self, needed: Self) -> Option<Capability> {
        <Capability as strum::IntoEnumIterator>::iter().find(|&c| needed.has(c) && !self.has(c))
    }

    /// Their names, in a fixed order.
    pub fn names(self) -> Vec<&'static str> {
        <Capability as strum::IntoEnumIterator>::iter()
            .filter(|&c| self.has(c))
            .map(Capability::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_without_another_keeps_the_rest() {
        let refused = Capabilities::of([Capability::Tools]);
        let left = Capabilities::ALL.without(refused);
        assert!(!left.has(Capability::Tools));
        assert!(left.has(Capability::Completion) && left.has(Capability::Vision));
        assert_eq!(Capabilities::NONE.without(refused), Capabilities::NONE);
    }

    #[test]
    fn ollama_names_read_into_a_set_and_the_unknown_are_left_out() {
        let read = Capabilities::from_names(&["completion", "vision", "insert", "audio"]);
        assert!(read.has(Capability::Vision) && read.has(Capability::Completion));
        assert!(!read.has(Capability::Tools));
        assert_eq!(read.names(), ["completion", "vision"]);
        assert_eq!(
            read.lacking(Capabilities::of([Capability::Vision, Capability::Tools])),
            Some(Capability::Tools)
        );
        assert_eq!(Capabilities::ALL.lacking(read), None);
        assert_eq!(Capabilities::ALL.names().len(), 5);
        assert_eq!(
            Capabilities::parse_names(&["completion", "vision"]),
            Ok(Capabilities::of([
                Capability::Completion,
                Capability::Vision
            ]))
        );
        assert_eq!(Capabilities::parse_names(&["tools", "audio"]), Err(1));
        assert_eq!(
            Capabilities::ALL.intersection(read),
            read,
            "a declaration bounds what a listing says"
        );
    }
}
