//! Newtypes for ids, so a tenant id is never passed where a job id belongs.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered (v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// How long ago the id was made, by the time in it (a v7 id's milliseconds); zero
            /// for an id without one, or with a time ahead of this clock.
            pub fn age(&self) -> std::time::Duration {
                let made = self.0.get_timestamp().map(|stamp| {
                    let (seconds, nanos) = stamp.to_unix();
                    std::time::UNIX_EPOCH + std::time::Duration::new(seconds, nanos)
                });
                made.and_then(|made| std::time::SystemTime::now().duration_since(made).ok())
                    .unwrap_or_default()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A job's id: a UUIDv7, so ids sort by creation time.
    JobId
);
id_type!(
    /// A tenant's id.
    TenantId
);
id_type!(
    /// An API token's id (never the token itself).
    TokenId
);
id_type!(
    /// A batch's id: a UUIDv7, like a job's.
    BatchId
);
id_type!(
    /// An uploaded file's id (the input of an OpenAI-style batch).
    FileId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_id_is_young_and_one_without_a_time_has_no_age() {
        assert!(JobId::new().age() < std::time::Duration::from_secs(1));
        assert_eq!(JobId(Uuid::nil()).age(), std::time::Duration::ZERO);
        let old = JobId(Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_000_000_000,
            0,
        )));
        assert!(old.age() > std::time::Duration::from_secs(365 * 24 * 3600));
    }
}
