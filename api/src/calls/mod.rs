//! A call on a drop-in surface (or `Prefer: wait`): it submits its job through intake, then waits
//! for the job or feeds its text as it comes, cancelling it when the client goes away ([`feed`]),
//! and answers once the job has ended ([`answer`]). Above both [`crate::intake`] and
//! [`crate::watching`], which know nothing of it.

pub mod answer;
pub mod feed;
