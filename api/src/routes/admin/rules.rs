//! The access rules a tenant and its tokens carry, as an admin changes them.

use serde::Deserialize;
use tollgate_core::db::access::Holder;
use tollgate_core::domain::cache::CachePolicy;
use tollgate_core::domain::{AccessChange, DataPolicy, RateLimit};
use utoipa::ToSchema;

use crate::http::error::ApiError;

/// A change of access rules: a list replaces, `null` clears, an absent field is left alone.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AccessPatch {
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    pub(super) allowed_domains: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    pub(super) allowed_ips: Option<Option<Vec<String>>>,
    /// `{per_minute, burst}`; a token's applies to it alone, a tenant's to all its tokens together.
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    pub(super) rate_limit: Option<Option<RateLimit>>,
    /// `any` or `local_only`: whether the jobs may leave the local fleet. A token's `null` goes
    /// back to its tenant's.
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    pub(super) data_policy: Option<Option<String>>,
    /// A tenant's alone: whether its batch items may overflow to the cloud under hybrid routing.
    pub(super) batch_overflow: Option<bool>,
    /// The response cache: `{"enabled", "ttl_secs", "sampled"}`. A token's overrides its
    /// tenant's, and its `null` goes back to it; a tenant's `null` turns it off.
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    pub(super) cache: Option<Option<CachePolicy>>,
}

impl AccessPatch {
    pub(super) fn parse(self, holder: Holder) -> Result<AccessChange, ApiError> {
        const POLICY: &str = "data_policy";
        let data_policy = match (self.data_policy, holder) {
            (Some(None), Holder::Tenant) => {
                return Err(ApiError::invalid_field(
                    POLICY,
                    "a tenant's must be \"any\" or \"local_only\"",
                ));
            }
            (policy, _) => policy
                .map(|p| p.map(|p| DataPolicy::parse(POLICY, &p)).transpose())
                .transpose()?,
        };
        if self.batch_overflow.is_some() && matches!(holder, Holder::Token) {
            return Err(ApiError::invalid_field(
                "batch_overflow",
                "is a tenant's setting, not a token's",
            ));
        }
        let cache = self
            .cache
            .map(|c| c.map(|c| c.check("cache")).transpose())
            .transpose()?;
        Ok(AccessChange {
            data_policy,
            batch_overflow: self.batch_overflow,
            cache,
            ..AccessChange::parse(self.allowed_domains, self.allowed_ips, self.rate_limit)?
        })
    }
}
