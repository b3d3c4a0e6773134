//! What a call answers once its job has ended: its text, tokens and stop reason, a failure as the
//! call's error, and the `x-request-id` naming the job.

use crate::http::error::{ApiError, ErrorCode};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;
use tollgate_core::domain::cache::CacheState;
use tollgate_core::domain::conversation::{Finish, Reply};
use tollgate_core::domain::{Job, JobId};

/// The header naming the job behind a call's answer.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Tells the official SDKs not to retry an answer (they retry 5xx by default).
pub(super) static SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

#[expect(
    clippy::expect_used,
    reason = "a UUID's text is always a valid header value"
)]
pub(super) fn request_id(id: JobId) -> HeaderValue {
    HeaderValue::from_str(&id.to_string()).expect("a job id is a valid header value")
}

/// `response` with the call's `x-request-id`.
pub fn with_request_id(mut response: Response, id: JobId) -> Response {
    response
        .headers_mut()
        .insert(REQUEST_ID.clone(), request_id(id));
    response
}

/// The header saying what the response cache did for a call: `hit`, `miss` or `bypass`.
pub static CACHE: HeaderName = HeaderName::from_static("x-tollgate-cache");

/// `response` saying what the response cache did, when its caller has one.
pub fn with_cache(mut response: Response, cache: Option<CacheState>) -> Response {
    if let Some(cache) = cache {
        response
            .headers_mut()
            .insert(CACHE.clone(), HeaderValue::from_static(cache.as_str()));
    }
    response
}

/// A job that ended without success, as the error its call answers: the status says whose fault
/// it was (the request's, the provider's, or nobody's yet).
pub fn failure(job: &Job) -> ApiError {
    let detail = job.error.as_ref().map_or_else(
        || format!("the job ended {}", job.status.as_str()),
        |e| e.message.clone(),
    );
    let detail = format!("{detail} (job {})", job.id);
    let (status, code) = job.error.as_ref().map_or(
        (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::JobFailed),
        |e| ErrorCode::of_job(&e.code),
    );
    let upstream = job.error.as_ref().and_then(|e| e.upstream.clone());
    ApiError::job_failed(status, code, detail).with_upstream(upstream)
}

/// Why a succeeded answer stopped, as its provider said; for a result written before the reason
/// was kept, `length` when it used all the tokens `max_tokens` allowed, else `stop`.
pub fn finish(job: &Job, max_tokens: Option<u32>) -> Finish {
    let (_, completion) = tokens(job);
    finish_of(job.result.as_ref(), completion, max_tokens)
}

/// [`finish`] of a `result` that took `completion` tokens.
pub fn finish_of(result: Option<&Value>, completion: i64, max_tokens: Option<u32>) -> Finish {
    let said = result
        .and_then(Reply::from_any_result)
        .and_then(|r| r.finish);
    said.unwrap_or(match max_tokens {
        Some(max) if completion >= i64::from(max) => Finish::Length,
        _ => Finish::Stop,
    })
}

/// A succeeded generate or chat job's reply (empty text for anything else).
pub fn reply(job: &Job) -> Reply {
    job.result
        .as_ref()
        .and_then(Reply::from_any_result)
        .unwrap_or_else(|| Reply::text("", None))
}

/// The end of an ended job's text that a client who was `sent` its start has not had; `None` when
/// it had it all, or what it had is not the text's start.
pub fn unsent_text(job: &Job, sent: &str) -> Option<String> {
    let text = reply(job).text;
    let rest = text.strip_prefix(sent)?;
    (!rest.is_empty()).then(|| rest.to_owned())
}

/// The same of its reasoning.
pub fn unsent_thinking(job: &Job, sent: &str) -> Option<String> {
    let thinking = reply(job).thinking?.text;
    let rest = thinking.strip_prefix(sent)?;
    (!rest.is_empty()).then(|| rest.to_owned())
}

/// A job's tokens as the answers show them: prompt and completion, and the parts of them spent
/// reasoning and read from the provider's cache (0 when it has no usage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: i64,
    pub completion: i64,
    pub reasoning: i64,
    pub cached: i64,
    /// Written to the provider's cache (Anthropic's).
    pub cache_written: i64,
}

impl Tokens {
    pub fn of(job: &Job) -> Self {
        job.usage.as_ref().map_or_else(Self::default, |u| Self {
            prompt: i64::from(u.prompt_tokens),
            completion: i64::from(u.completion_tokens),
            reasoning: i64::from(u.reasoning_tokens),
            cached: i64::from(u.cached_tokens),
            cache_written: i64::from(u.cache_write_tokens),
        })
    }
}

/// A job's prompt and completion tokens (0 when it has no usage).
pub fn tokens(job: &Job) -> (i64, i64) {
    job.usage.as_ref().map_or((0, 0), |u| {
        (i64::from(u.prompt_tokens), i64::from(u.completion_tokens))
    })
}
