//! One call of a step that is ready: made (streamed when the job streams), its answer checked
//! against the format the request asks for, timed, recorded as an attempt, and aborted by a
//! cancel.

use std::time::Instant;

use chrono::Utc;
use tollgate_core::db::job_attempts::{AttemptOutcome, AttemptRecord};
use tollgate_core::domain::reasoning;
use tollgate_core::domain::{FailureClass, HostKind, JobErrorCode};
use tollgate_core::provider::{
    Completion, Delta, ProviderError, TokenCounts, mark_reasoning_dropped,
};
use tollgate_core::telemetry;
use tracing::Instrument as _;

use crate::providers::Step;

use super::ready::Ready;
use super::ready::cancelled;
use super::terms::{Call, job_error};

/// One call on its way out (see [`super::ready::ready`]), recorded as an attempt. A cancel aborts it.
/// Long on purpose: the call, its timing and its attempt record read top to bottom, streamed or not.
pub(super) async fn call_once(
    ready: &Ready,
    step: &Step,
    call: &Call<'_>,
    attempts: &mut Vec<AttemptRecord>,
) -> Result<Completion, ProviderError> {
    // A route's own `max_tokens` stands in for the client's when it gave none.
    let defaulted = step
        .default_max_tokens
        .and_then(|max| call.request.with_default_max_tokens(max));
    let request = defaulted.as_ref().unwrap_or(call.request);
    let started_at = Utc::now();
    let clock = Instant::now();
    let provider = &ready.provider;
    let model = &ready.model;
    let host = ready.host.as_ref().map(|h| h.host.name.clone());
    let in_flight = call.metrics.in_flight(step.name.as_str(), host.as_deref());
    let span = tracing::info_span!(
        "provider call",
        provider = step.name.as_str(),
        model = model.as_str(),
        host = host.as_deref().unwrap_or_default(),
    );
    let passed_on = telemetry::passed_on(&span, &call.trace);
    let mut first_piece = None;
    let on_ollama = (ready.host.as_ref()).is_some_and(|h| h.host.kind == HostKind::Ollama);
    let (reasoning, dropped) =
        reasoning::for_call(request.reasoning(), ready.thinks(step), on_ollama);
    let answer = tokio::select! {
        answer = tollgate_core::provider::traced(passed_on, async {
            match call.relay {
                Some(relay) => {
                    let mut piece = |piece: Delta<'_>| {
                        first_piece.get_or_insert_with(|| clock.elapsed());
                        relay.piece(piece)
                    };
                    provider.stream(request, model, reasoning, &mut piece).await
                }
                None => provider.run(request, model, reasoning).await,
            }
        }).instrument(span) => answer,
        () = call.cancel.cancelled() => Err(cancelled()),
    };
    let answer = answer.map(|mut completion| {
        if dropped {
            mark_reasoning_dropped(&mut completion.result);
        }
        completion
    });
    let latency = clock.elapsed();
    drop(in_flight);
    // An answer that does not match its format fails the call; its tokens were spent all the same.
    let (answer, spent) = match answer.map(|completion| checked(call, completion)) {
        Ok(Ok(completion)) => (Ok(completion), None),
        Ok(Err((failure, tokens))) => (Err(failure), Some(tokens)),
        Err(failure) => (Err(failure), None),
    };
    if let Some(after) = first_piece {
        call.metrics.first_token(step.name.as_str(), model, after);
    }
    let record = match &answer {
        Ok(completion) => {
            let tokens = completion.token_counts(request);
            AttemptRecord {
                provider: step.name,
                host: host.clone(),
                upstream_model: ready.model.clone(),
                started_at,
                latency,
                status_code: Some(completion.status_code),
                outcome: AttemptOutcome::Succeeded,
                error: None,
                prompt_tokens: Some(tokens.prompt),
                completion_tokens: Some(tokens.completion),
                details: tokens.details,
                cost: None,
            }
        }
        Err(failure) => {
            tracing::info!(
                provider = step.name.as_str(),
                code = failure.code.as_str(),
                "provider call failed"
            );
            // A call cut short after streaming text is billed for that text (estimated).
            let tokens = spent.or_else(|| call.streamed().map(|(_, tokens)| tokens));
            AttemptRecord {
                provider: step.name,
                host: host.clone(),
                upstream_model: ready.model.clone(),
                started_at,
                latency,
                status_code: failure.status_code,
                outcome: match failure.class() {
                    _ if failure.code == JobErrorCode::Cancelled => AttemptOutcome::Cancelled,
                    FailureClass::Transient => AttemptOutcome::TransientError,
                    FailureClass::Provider | FailureClass::Client => AttemptOutcome::PermanentError,
                },
                error: Some(job_error(failure)),
                prompt_tokens: tokens.map(|t| t.prompt),
                completion_tokens: tokens.map(|t| t.completion),
                details: tokens.map(|t| t.details).unwrap_or_default(),
                cost: None,
            }
        }
    };
    call.metrics.call(&record);
    attempts.push(record);
    answer
}

/// The answer, or — when the request asks for a JSON schema or object and an answer is a whole
/// text that does not match — the failure naming its first violation, with the tokens it cost.
/// An answer cut short, refused or calling tools is passed on as it is: there is nothing to check.
fn checked(
    call: &Call<'_>,
    completion: Completion,
) -> Result<Completion, (ProviderError, TokenCounts)> {
    let Some(schema) = call.answer_schema else {
        return Ok(completion);
    };
    // Every answer (a request may ask for several) must match.
    let mut verdict = Ok(());
    for reply in completion.replies().iter().filter(|r| r.is_checkable()) {
        let started = Instant::now();
        verdict = schema.check(&reply.text);
        call.metrics
            .answer_checked(started.elapsed(), verdict.is_ok());
        if verdict.is_err() {
            break;
        }
    }
    match verdict {
        Ok(()) => Ok(completion),
        Err(violation) => {
            let mut failure =
                ProviderError::new(JobErrorCode::InvalidStructuredOutput, violation.to_string());
            failure.status_code = Some(completion.status_code);
            Err((failure, completion.token_counts(call.request)))
        }
    }
}
