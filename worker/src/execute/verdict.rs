//! What a run's end means for its job — finish it, or park it for another run (its
//! [`Outcome`]) — and what its calls cost: pure decisions, tested below.

use chrono::Utc;
use tollgate_core::billing;
use tollgate_core::db::job_attempts::AttemptRecord;
use tollgate_core::db::runs::{Outcome, Partial};
use tollgate_core::domain::{JobErrorCode, JobRequest, ProviderName, Runtime};

use crate::chain::RunEnd;
use crate::retry;

/// Prices the run at the prices in force now, from the in-memory price list (no query): the
/// answer's bill, and every call that reported tokens (the gateway's spend, failed calls
/// included).
pub(super) fn price_run(runtime: &Runtime, outcome: &mut Outcome, attempts: &mut [AttemptRecord]) {
    let now = Utc::now();
    for attempt in attempts.iter_mut() {
        if attempt.prompt_tokens.is_none() && attempt.completion_tokens.is_none() {
            continue;
        }
        if let Some(price) = runtime
            .prices
            .at(attempt.provider, &attempt.upstream_model, now)
        {
            let tokens = |t: Option<i32>| i64::from(t.unwrap_or(0));
            let cache = billing::Cache {
                read: i64::from(attempt.details.cached),
                written: i64::from(attempt.details.cache_written),
            };
            attempt.cost = Some(billing::cost_with_cache(
                tokens(attempt.prompt_tokens),
                cache,
                tokens(attempt.completion_tokens),
                &price,
            ));
        }
    }
    match outcome {
        Outcome::Succeeded {
            provider,
            routed_model,
            price,
            ..
        } => *price = runtime.prices.at(*provider, routed_model, now),
        Outcome::Stopped {
            provider: Some(provider),
            partial: Some(partial),
            ..
        } => partial.price = runtime.prices.at(*provider, &partial.routed_model, now),
        _ => {}
    }
}

/// What a run's end means for a job that had `retries` delayed runs before: its outcome, or
/// another run after a delay when every provider failed transiently and runs are left
/// (`max_runs` in all).
pub(super) fn decide(end: RunEnd, request: &JobRequest, retries: i32, max_runs: u32) -> Outcome {
    let failed = |provider: Option<(ProviderName, String)>, error| {
        let (provider, upstream_model) = provider.unzip();
        Outcome::Failed {
            provider,
            upstream_model,
            error,
        }
    };
    match end {
        // The job shows the model the provider says answered.
        RunEnd::Succeeded {
            provider,
            reason,
            routed_model,
            completion,
            latency,
        } => Outcome::Succeeded {
            provider,
            reason,
            upstream_model: completion.upstream_model.clone(),
            routed_model,
            tokens: completion.token_counts(request),
            result: completion.result,
            price: None,
            latency,
        },
        RunEnd::Failed { provider, error } => failed(provider, error),
        RunEnd::Stopped {
            status,
            provider,
            reason,
            error,
            partial,
        } => {
            let (provider, upstream_model) = provider.unzip();
            let partial = partial.map(|(text, tokens, latency)| Partial {
                routed_model: upstream_model.clone().unwrap_or_default(),
                result: tollgate_core::provider::text_result(request, text),
                tokens,
                price: None,
                latency,
            });
            Outcome::Stopped {
                status,
                provider,
                reason: Some(reason),
                upstream_model,
                error,
                partial,
            }
        }
        RunEnd::NoProvider { message } => {
            Outcome::failed_without_call(JobErrorCode::NoProviderAvailable, message)
        }
        RunEnd::Transient {
            provider,
            error,
            retry_after,
        } => {
            // Found only busy providers: nothing failed, the job waits its turn however long.
            if error.code == JobErrorCode::ProviderBusy {
                return Outcome::Parked {
                    error,
                    delay: retry::before_next_run(0, retry_after),
                };
            }
            let runs_so_far = u32::try_from(retries.saturating_add(1)).unwrap_or(u32::MAX);
            if runs_so_far < max_runs {
                let delay = retry::before_next_run(retries, retry_after);
                Outcome::Parked { error, delay }
            } else {
                failed(provider, error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tollgate_core::domain::JobError;

    use super::*;
    use tollgate_core::domain::GenerateRequest;

    fn request() -> JobRequest {
        JobRequest::Generate(GenerateRequest::parse("llama3", "hi".into(), None).expect("valid"))
    }

    fn transient(retry_after: Option<Duration>) -> RunEnd {
        RunEnd::Transient {
            provider: Some((ProviderName::LOCAL, "llama3".into())),
            error: JobError::new(JobErrorCode::ProviderUnavailable, "upstream answered 503"),
            retry_after,
        }
    }

    #[test]
    fn a_transient_end_parks_the_job_while_runs_are_left_then_fails_it() {
        match decide(transient(None), &request(), 0, 3) {
            Outcome::Parked { error, delay } => {
                assert_eq!(error.code, JobErrorCode::ProviderUnavailable);
                assert_eq!(delay, Duration::from_secs(1));
            }
            _ => panic!("the first of three runs parks"),
        }
        assert!(matches!(
            decide(transient(None), &request(), 1, 3),
            Outcome::Parked { delay, .. } if delay == Duration::from_secs(5)
        ));
        match decide(transient(None), &request(), 2, 3) {
            Outcome::Failed {
                provider, error, ..
            } => {
                assert_eq!(provider, Some(ProviderName::LOCAL));
                assert_eq!(error.code, JobErrorCode::ProviderUnavailable);
            }
            _ => panic!("the third of three runs fails the job"),
        }
    }

    #[test]
    fn a_long_retry_after_picks_a_longer_delay_queue() {
        assert!(matches!(
            decide(transient(Some(Duration::from_secs(45))), &request(), 0, 5),
            Outcome::Parked { delay, .. } if delay == Duration::from_secs(120)
        ));
    }

    #[test]
    fn a_run_that_found_only_busy_providers_waits_however_many_runs_it_had() {
        let busy = || RunEnd::Transient {
            provider: Some((ProviderName::LOCAL, "llama3".into())),
            error: JobError::new(JobErrorCode::ProviderBusy, "every slot stayed busy"),
            retry_after: None,
        };
        assert!(matches!(
            decide(busy(), &request(), 2, 3),
            Outcome::Parked { delay, .. } if delay == Duration::from_secs(1)
        ));
        assert!(matches!(
            decide(busy(), &request(), 40, 3),
            Outcome::Parked { .. }
        ));
    }

    #[test]
    fn no_provider_and_client_errors_end_the_job_at_once() {
        let none = RunEnd::NoProvider {
            message: "nothing".into(),
        };
        assert!(matches!(
            decide(none, &request(), 0, 5),
            Outcome::Failed { error, .. } if error.code == JobErrorCode::NoProviderAvailable
        ));
    }
}
