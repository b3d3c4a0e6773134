//! Why a job (or one of its calls) failed: one enumerated set of codes, each with its class — whether
//! trying again can help — and a code this release does not know kept as it was written.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use strum::{EnumMessage, IntoEnumIterator};
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{RefOr, schema};

/// What a failure says about trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Timeout, connection failure, 5xx, 429, a busy or resting provider: the same call may well
    /// succeed later.
    Transient,
    /// The provider (or the gateway) cannot serve this for reasons of its own (bad key, broken
    /// response): another provider might, retrying this one will not help.
    Provider,
    /// The request itself is at fault (unknown model, input too long, 400): no provider will do
    /// better, so the job fails at once.
    Client,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Provider => "provider",
            Self::Client => "client",
        }
    }
}

/// A job's (or an attempt's) stable error code, stored as its text (`jobs.error_code`,
/// `job_attempts.error_code`) and written on the wire as that text.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Hash,
    strum::EnumString,
    strum::Display,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::EnumMessage,
)]
#[strum(serialize_all = "snake_case")]
pub enum JobErrorCode {
    /// The job was cancelled (by its client, or its batch's cancel) before it ended.
    Cancelled,
    /// The upstream does not have the model (its 404).
    ModelNotFound,
    /// The upstream refused the request (a 400 or another client error).
    InvalidRequest,
    /// The input is over the model's context (the upstream's 413).
    InputTooLong,
    /// Every provider that could run the job rate limited it (429).
    ProviderRateLimited,
    /// The upstream failed (5xx, 408) or its connection or stream broke.
    ProviderUnavailable,
    /// The upstream did not answer in time.
    ProviderTimeout,
    /// The upstream could not be connected to.
    ProviderUnreachable,
    /// The provider's concurrency limit (or every host's slots) stayed full for the whole wait:
    /// the call never went out; the job waits for another run however many it had.
    ProviderBusy,
    /// The provider (or host) failed too often lately and rests until its cool-down ends.
    ProviderCircuitOpen,
    /// The fleet's shared host slots could not be read (the database was unreachable).
    FleetUnavailable,
    /// The host chosen for the call was removed from the fleet as the call was about to go out.
    HostRemoved,
    /// The upstream refused the gateway's credentials (401, 403).
    ProviderUnauthorized,
    /// The upstream reported a failure in the middle of its answer.
    ProviderError,
    /// The upstream's answer was not what its protocol says it is.
    InvalidProviderResponse,
    /// The answer did not match the JSON schema asked for (or was not one JSON object) on any
    /// of the calls made for it; the message names the first violation.
    InvalidStructuredOutput,
    /// An image the request shows cannot be used: not a PNG, JPEG, WebP or GIF, over the size
    /// limit, or its URL refused (an internal address, a redirect to one, a client error).
    InvalidImage,
    /// An image's URL did not answer with it (a timeout, a failed connection, the server's own
    /// failure): the same request may succeed later.
    ImageUnreachable,
    /// No provider could take the job: none configured or enabled for it, or the fleet lacks the
    /// model and the data policy keeps the job off the cloud.
    NoProviderAvailable,
    /// The worker streaming the job stopped mid-run after text may have reached the client, so it is
    /// not run again.
    StreamInterrupted,
    /// A run's worker died during the call (the attempt's code; its tokens are estimated).
    AbandonedRun,
    /// The job failed inside the gateway (dead-lettered, or abandoned by too many workers).
    InternalError,
    /// A code this release does not know (written by a newer or an older one), kept as it was
    /// written; treated as the provider's failure.
    #[strum(default)]
    Unknown(String),
}

impl JobErrorCode {
    /// The code's text, as stored and written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Unknown(code) => code,
            known => known.into(),
        }
    }

    /// Whether trying again can help, and where.
    pub fn class(&self) -> FailureClass {
        match self {
            Self::Cancelled
            | Self::ModelNotFound
            | Self::InvalidRequest
            | Self::InputTooLong
            | Self::InvalidImage => FailureClass::Client,
            Self::ProviderRateLimited
            | Self::ProviderUnavailable
            | Self::ProviderTimeout
            | Self::ProviderUnreachable
            | Self::ProviderBusy
            | Self::ProviderCircuitOpen
            | Self::FleetUnavailable
            | Self::HostRemoved
            | Self::StreamInterrupted
            | Self::AbandonedRun
            | Self::ImageUnreachable => FailureClass::Transient,
            Self::ProviderUnauthorized
            | Self::ProviderError
            | Self::InvalidProviderResponse
            | Self::InvalidStructuredOutput
            | Self::NoProviderAvailable
            | Self::InternalError
            | Self::Unknown(_) => FailureClass::Provider,
        }
    }

    /// Every code this release knows, in the order above.
    pub fn known() -> impl Iterator<Item = Self> {
        Self::iter().filter(|code| !matches!(code, Self::Unknown(_)))
    }

    /// The code's meaning (its documentation above).
    pub fn description(&self) -> &'static str {
        self.get_documentation().unwrap_or_default()
    }
}

/// Read from its text (`From<&str>`, derived): a code this release does not know is
/// [`JobErrorCode::Unknown`].
impl From<String> for JobErrorCode {
    fn from(text: String) -> Self {
        Self::from(text.as_str())
    }
}

impl Serialize for JobErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Any text reads: a code this release does not know is [`JobErrorCode::Unknown`], never an error.
impl<'de> Deserialize<'de> for JobErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Cow::<str>::deserialize(deserializer)?.as_ref().into())
    }
}

/// In the OpenAPI document: one of the known codes (each described with its class), or a code a
/// newer release wrote.
impl utoipa::PartialSchema for JobErrorCode {
    fn schema() -> RefOr<Schema> {
        let known: Vec<String> = Self::known().map(|code| code.as_str().to_owned()).collect();
        let described: String = Self::known()
            .map(|code| {
                format!(
                    "- `{}` ({}): {}\n",
                    code.as_str(),
                    code.class().as_str(),
                    code.description()
                )
            })
            .collect();
        let known = ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .enum_values(Some(known))
            .description(Some("A code this release knows."));
        let other = ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .description(Some(
                "A code a newer (or older) release wrote: treat it as a provider failure.",
            ));
        let description = format!(
            "Why a job or one of its attempts failed. Its class says whether trying again can \
             help: `transient` (later, or elsewhere), `provider` (another provider might), \
             `client` (the request is at fault).\n\n{described}"
        );
        Schema::AnyOf(
            AnyOfBuilder::new()
                .item(known)
                .item(other)
                .description(Some(description))
                .build(),
        )
        .into()
    }
}

impl utoipa::ToSchema for JobErrorCode {
    fn schemas(_: &mut Vec<(String, RefOr<schema::Schema>)>) {}
}

/// Stored as text; a code this release does not know reads as [`JobErrorCode::Unknown`].
impl sqlx::Type<sqlx::Postgres> for JobErrorCode {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl sqlx::Decode<'_, sqlx::Postgres> for JobErrorCode {
    fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(<&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_reads_back_as_itself() {
        for code in JobErrorCode::known() {
            assert_eq!(JobErrorCode::from(code.as_str()), code);
            assert_eq!(code.to_string(), code.as_str());
            let wire = serde_json::to_value(&code).expect("serializes");
            assert_eq!(wire, code.as_str());
            assert!(!code.description().is_empty(), "{code} is documented");
        }
        assert_eq!(JobErrorCode::known().count(), 22);
    }

    #[test]
    fn a_code_this_release_does_not_know_reads_as_a_provider_failure() {
        let code: JobErrorCode =
            serde_json::from_value(serde_json::json!("some_future_code")).expect("any text reads");
        assert_eq!(code, JobErrorCode::Unknown("some_future_code".into()));
        assert_eq!(code.as_str(), "some_future_code");
        assert_eq!(code.class(), FailureClass::Provider);
        assert_eq!(
            serde_json::to_value(&code).ok(),
            Some("some_future_code".into())
        );
    }

    #[test]
    fn codes_are_classed_by_whether_trying_again_helps() {
        assert_eq!(JobErrorCode::ProviderBusy.class(), FailureClass::Transient);
        assert_eq!(JobErrorCode::ModelNotFound.class(), FailureClass::Client);
        assert_eq!(
            JobErrorCode::ProviderUnauthorized.class(),
            FailureClass::Provider
        );
        assert_eq!(
            JobErrorCode::from("provider_circuit_open"),
            JobErrorCode::ProviderCircuitOpen
        );
    }
}
