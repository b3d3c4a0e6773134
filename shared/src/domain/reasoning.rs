//! How much a model is asked to reason before it answers, whatever dialect asked: OpenAI's
//! `reasoning_effort` (and the Responses API's `reasoning.effort`), Ollama's `think` (a boolean
//! or a level), mapped to each other by level as Ollama's own OpenAI layer maps them (`none` is
//! off, `minimal` is `low`, `xhigh` is `max`).
//!
//! It is a preference, never a requirement: a step whose model cannot think is called without it
//! (and the job says the reasoning was dropped); a thinking model on Ollama whose client asked
//! for nothing is told not to think, so thinking tokens are never billed unasked.

use serde::{Deserialize, Serialize};

use super::ValidationError;

/// What the request asks of the model's reasoning. Stored as `false`, `true` or a level's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Reasoning {
    /// `false` turns reasoning off; `true` asks for the model's own amount.
    Switch(bool),
    Level(Effort),
}

/// A level of reasoning effort, lowest first.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Effort {
    Minimal,
    Low,
    Medium,
    High,
    /// OpenAI's `xhigh`, Ollama's `max`.
    Max,
}

impl Effort {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl Reasoning {
    pub const OFF: Self = Self::Switch(false);

    /// OpenAI's `reasoning_effort` (or `reasoning.effort`); `field` names it in the error.
    pub fn from_openai(effort: &str, field: &str) -> Result<Self, ValidationError> {
        Ok(match effort {
            "none" => Self::OFF,
            "minimal" => Self::Level(Effort::Minimal),
            "low" => Self::Level(Effort::Low),
            "medium" => Self::Level(Effort::Medium),
            "high" => Self::Level(Effort::High),
            "xhigh" | "max" => Self::Level(Effort::Max),
            _ => {
                return Err(ValidationError::new(
                    field,
                    "must be one of none, minimal, low, medium, high, xhigh",
                ));
            }
        })
    }

    /// Ollama's `think`: a boolean, or `low`, `medium`, `high` or `max`; `null` asks nothing.
    pub fn from_ollama(think: &serde_json::Value) -> Result<Option<Self>, ValidationError> {
        use serde_json::Value;
        let level = |effort| Ok(Some(Self::Level(effort)));
        match think {
            Value::Null => Ok(None),
            Value::Bool(on) => Ok(Some(Self::Switch(*on))),
            Value::String(name) => match name.as_str() {
                "low" => level(Effort::Low),
                "medium" => level(Effort::Medium),
                "high" => level(Effort::High),
                "max" => level(Effort::Max),
                _ => Err(ValidationError::new(
                    "think",
                    "must be true, false, \"low\", \"medium\", \"high\" or \"max\"",
                )),
            },
            _ => Err(ValidationError::new(
                "think",
                "must be a boolean or a level (\"low\", \"medium\", \"high\", \"max\")",
            )),
        }
    }

    /// Whether the model is asked to reason at all.
    pub fn is_on(self) -> bool {
        self != Self::OFF
    }

    /// Its level; `None` when off or left to the model.
    pub fn effort(self) -> Option<Effort> {
        match self {
            Self::Level(effort) => Some(effort),
            Self::Switch(_) => None,
        }
    }

    /// As Ollama's `think`: `minimal` is `low`, and `max` is sent as `high` (only Ollama 0.22
    /// and later take `max`, and a host's version is not known when it is called).
    pub fn to_ollama(self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Self::Switch(on) => json!(on),
            Self::Level(Effort::Minimal | Effort::Low) => json!("low"),
            Self::Level(Effort::Medium) => json!("medium"),
            Self::Level(Effort::High | Effort::Max) => json!("high"),
        }
    }

    /// As OpenAI's `reasoning_effort`; `None` (not sent) when left to the model.
    pub fn to_openai(self) -> Option<&'static str> {
        match self {
            Self::Switch(false) => Some("none"),
            Self::Switch(true) => None,
            Self::Level(Effort::Max) => Some("xhigh"),
            Self::Level(effort) => Some(effort.as_str()),
        }
    }
}

/// What a call to one step sends, given what the request asks (`asked`), whether the step's
/// model can think (`thinks`: known for a host that reports its models' capabilities or a route
/// that declares them; `None` counts as able) and whether the step is on Ollama (`ollama`), and
/// whether the request's reasoning was dropped for it.
pub fn for_call(
    asked: Option<Reasoning>,
    thinks: Option<bool>,
    ollama: bool,
) -> (Option<Reasoning>, bool) {
    let able = thinks != Some(false);
    match asked {
        Some(reasoning) if reasoning.is_on() && !able => (None, true),
        Some(reasoning) => (Some(reasoning), false),
        // Thinking tokens are not billed unasked: a model on Ollama known to think (which it
        // does by default) is told not to. A cloud model is sent nothing: not every one takes
        // `none`, and those that reason bill it whatever they are sent.
        None if ollama && thinks == Some(true) => (Some(Reasoning::OFF), false),
        None => (None, false),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn openai_efforts_map_to_ollama_levels_as_ollama_maps_them() {
        let cases = [
            ("none", json!(false), Some("none")),
            ("minimal", json!("low"), Some("minimal")),
            ("low", json!("low"), Some("low")),
            ("medium", json!("medium"), Some("medium")),
            ("high", json!("high"), Some("high")),
            ("xhigh", json!("high"), Some("xhigh")),
        ];
        for (effort, think, back) in cases {
            let reasoning = Reasoning::from_openai(effort, "reasoning_effort").expect(effort);
            assert_eq!(reasoning.to_ollama(), think, "{effort}");
            assert_eq!(reasoning.to_openai(), back, "{effort}");
        }
        let refused = Reasoning::from_openai("extreme", "reasoning_effort").unwrap_err();
        assert_eq!(refused.field, "reasoning_effort");
    }

    #[test]
    fn ollama_think_reads_booleans_and_levels() {
        assert_eq!(Reasoning::from_ollama(&json!(null)), Ok(None));
        assert_eq!(
            Reasoning::from_ollama(&json!(true)),
            Ok(Some(Reasoning::Switch(true)))
        );
        assert_eq!(
            Reasoning::from_ollama(&json!("max")),
            Ok(Some(Reasoning::Level(Effort::Max)))
        );
        assert_eq!(Reasoning::Switch(true).to_openai(), None, "the model's own");
        assert!(Reasoning::from_ollama(&json!("lots")).is_err());
        assert!(Reasoning::from_ollama(&json!(3)).is_err());
    }

    #[test]
    fn reasoning_is_stored_as_a_boolean_or_a_level() {
        for (reasoning, stored) in [
            (Reasoning::OFF, json!(false)),
            (Reasoning::Level(Effort::High), json!("high")),
        ] {
            assert_eq!(serde_json::to_value(reasoning).expect("writable"), stored);
            assert_eq!(
                serde_json::from_value::<Reasoning>(stored).expect("readable"),
                reasoning
            );
        }
    }

    #[test]
    fn a_call_drops_reasoning_a_model_cannot_do_and_switches_off_what_was_not_asked() {
        let high = Some(Reasoning::Level(Effort::High));
        assert_eq!(for_call(high, Some(true), true), (high, false));
        let unknown = for_call(high, None, false);
        assert_eq!(unknown, (high, false), "unknown counts as able");
        assert_eq!(for_call(high, Some(false), false), (None, true), "dropped");
        let off = Some(Reasoning::OFF);
        assert_eq!(
            for_call(off, Some(false), true),
            (off, false),
            "off is never dropped"
        );
        let unasked = for_call(None, Some(true), true);
        assert_eq!(
            unasked,
            (off, false),
            "a model on Ollama known to think is told not to"
        );
        let cloud = for_call(None, Some(true), false);
        assert_eq!(
            cloud,
            (None, false),
            "a cloud model is sent nothing unasked"
        );
        assert_eq!(for_call(None, None, true), (None, false));
    }
}
