//! OpenAI's objects written from Tollgate's: the batch, the file, and the lines of a batch's output
//! and error files (each succeeded item's answer in the shape its endpoint answers).

use axum::body::Bytes;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tollgate_core::db::batches::{Batch, ItemResult};
use tollgate_core::db::files::StoredFile;
use tollgate_core::domain::conversation::{Finish, Reply, replies_of};
use tollgate_core::domain::openai_batch::Endpoint;
use tollgate_core::domain::{Job, JobId};
use utoipa::ToSchema;

use super::{OpenAiBatchId, OpenAiFileId, replies};
use crate::calls::answer::Tokens;

/// How long OpenAI gives a batch: the only `completion_window` there is.
pub const COMPLETION_WINDOW: &str = "24h";

fn unix(at: DateTime<Utc>) -> i64 {
    at.timestamp()
}

/// Whether an item's line belongs in the output file (it succeeded) or the error file.
fn in_output(item: &ItemResult) -> bool {
    item.status == "succeeded"
}

/// The items that end in the error file: failed, or cancelled with their batch.
fn failed(batch: &Batch) -> i64 {
    batch.counts.failed + batch.counts.cancelled
}

/// A batch as OpenAI shows it. Tollgate validates the input file before accepting a batch, so a
/// batch is never `validating` or `failed`; it does not expire either (items run until done).
/// Output and error files appear once the batch has ended, each when it has lines.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiBatch {
    /// `batch_` and 32 hex digits.
    id: String,
    /// `batch`.
    object: &'static str,
    endpoint: Option<String>,
    model: String,
    /// Always `null`: a bad input file is refused when the batch is made.
    #[schema(value_type = Option<Object>)]
    errors: Option<()>,
    input_file_id: Option<String>,
    /// `24h`.
    completion_window: &'static str,
    /// `in_progress`, `completed`, `cancelling` or `cancelled`.
    status: String,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    /// Unix seconds, as every time here.
    created_at: i64,
    in_progress_at: i64,
    expires_at: i64,
    finalizing_at: Option<i64>,
    completed_at: Option<i64>,
    failed_at: Option<i64>,
    expired_at: Option<i64>,
    cancelling_at: Option<i64>,
    cancelled_at: Option<i64>,
    request_counts: RequestCounts,
    usage: OpenAiBatchUsage,
    metadata: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RequestCounts {
    total: i64,
    completed: i64,
    failed: i64,
}

/// The batch's tokens so far, in the Responses API's terms.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiBatchUsage {
    input_tokens: i64,
    input_tokens_details: InputTokensDetails,
    output_tokens: i64,
    output_tokens_details: OutputTokensDetails,
    total_tokens: i64,
}

/// Of the input tokens, those the providers read from their caches (nothing is written to one).
#[derive(Debug, Serialize, ToSchema)]
pub struct InputTokensDetails {
    cached_tokens: i64,
    cache_write_tokens: i64,
}

/// Of the output tokens, those spent reasoning.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutputTokensDetails {
    reasoning_tokens: i64,
}

pub fn batch(batch: &Batch) -> OpenAiBatch {
    let ended = batch.finished_at;
    let file =
        |lines: i64, id: OpenAiFileId| (ended.is_some() && lines > 0).then(|| id.to_string());
    let when = |status: &str| ended.filter(|_| batch.status == status).map(unix);
    OpenAiBatch {
        id: OpenAiBatchId(batch.id).to_string(),
        object: "batch",
        endpoint: batch.openai_endpoint.clone(),
        model: batch.model.clone(),
        errors: None,
        input_file_id: batch
            .input_file_id
            .map(|id| OpenAiFileId::Upload(id).to_string()),
        completion_window: COMPLETION_WINDOW,
        status: batch.status.clone(),
        output_file_id: file(batch.counts.succeeded, OpenAiFileId::Output(batch.id)),
        error_file_id: file(failed(batch), OpenAiFileId::Errors(batch.id)),
        created_at: unix(batch.created_at),
        in_progress_at: unix(batch.created_at),
        expires_at: unix(batch.created_at + Duration::hours(24)),
        finalizing_at: ended.map(unix),
        completed_at: when("completed"),
        failed_at: None,
        expired_at: None,
        cancelling_at: batch.cancelled_at.map(unix),
        cancelled_at: when("cancelled"),
        request_counts: RequestCounts {
            total: batch.counts.total,
            completed: batch.counts.succeeded,
            failed: failed(batch),
        },
        usage: OpenAiBatchUsage {
            input_tokens: batch.usage.prompt_tokens,
            input_tokens_details: InputTokensDetails {
                cached_tokens: batch.usage.cached_tokens,
                cache_write_tokens: 0,
            },
            output_tokens: batch.usage.completion_tokens,
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: batch.usage.reasoning_tokens,
            },
            total_tokens: batch.usage.total_tokens,
        },
        metadata: batch.metadata.clone(),
    }
}

/// A page of a list as OpenAI shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiList<T> {
    /// `list`.
    object: &'static str,
    data: Vec<T>,
    first_id: Option<String>,
    last_id: Option<String>,
    has_more: bool,
}

/// A page of a list as OpenAI shows it, from what was read for it: one more than `limit`, when
/// there are more.
pub fn page<T, O>(
    mut found: Vec<T>,
    limit: i64,
    id: impl Fn(&T) -> String,
    object: impl Fn(&T) -> O,
) -> OpenAiList<O> {
    let has_more = found.len() as i64 > limit;
    found.truncate(usize::try_from(limit).unwrap_or(0));
    OpenAiList {
        object: "list",
        data: found.iter().map(object).collect(),
        first_id: found.first().map(&id),
        last_id: found.last().map(&id),
        has_more,
    }
}

/// A file as OpenAI shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiFile {
    /// `file-` and 32 hex digits; a batch's output and error files end `-output` and `-errors`.
    id: String,
    /// `file`.
    object: &'static str,
    bytes: i64,
    /// Unix seconds.
    created_at: i64,
    /// Unix seconds: a batch's output and error files from when its items may be gone (the end of
    /// the batch's UTC day plus `job_retention_days`); `null` for an upload.
    expires_at: Option<i64>,
    filename: String,
    /// `batch` for an upload, `batch_output` for a batch's output and error files.
    purpose: String,
    /// `processed`.
    status: &'static str,
    #[schema(value_type = Option<String>)]
    status_details: Option<()>,
}

/// An uploaded file as OpenAI shows it.
pub fn uploaded_file(file: &StoredFile) -> OpenAiFile {
    file_object(
        OpenAiFileId::Upload(file.id),
        file.bytes,
        file.created_at,
        &file.filename,
        &file.purpose,
    )
}

/// A batch's output or error file as OpenAI shows it, `bytes` long.
pub fn generated_file(id: OpenAiFileId, batch: &Batch, bytes: i64) -> OpenAiFile {
    let name = match id {
        OpenAiFileId::Errors(_) => "errors",
        _ => "output",
    };
    let mut file = file_object(
        id,
        bytes,
        batch.finished_at.unwrap_or(batch.created_at),
        &format!("{}_{name}.jsonl", OpenAiBatchId(batch.id)),
        "batch_output",
    );
    file.expires_at = Some(unix(batch.results_expire_at));
    file
}

fn file_object(
    id: OpenAiFileId,
    bytes: i64,
    created_at: DateTime<Utc>,
    filename: &str,
    purpose: &str,
) -> OpenAiFile {
    OpenAiFile {
        id: id.to_string(),
        object: "file",
        bytes,
        created_at: unix(created_at),
        expires_at: None,
        filename: filename.to_owned(),
        purpose: purpose.to_owned(),
        status: "processed",
        status_details: None,
    }
}

/// An item's line of the output file (`errors == false`) or of the error file, if it belongs in
/// that one: `{"id", "custom_id", "response": {status_code, request_id, body} | null, "error":
/// {code, message} | null}`, newline-terminated.
pub fn result_line(
    endpoint: Endpoint,
    model: &str,
    item: &ItemResult,
    errors: bool,
) -> Option<Bytes> {
    if in_output(item) == errors {
        return None;
    }
    let hex = item.job_id.0.simple();
    let line = if errors {
        let (code, message) = match &item.error {
            Some(error) => (error.code.as_str(), error.message.as_str()),
            None => ("failed", "the request failed"),
        };
        let code = if item.status == "cancelled" {
            "batch_cancelled"
        } else {
            code
        };
        json!({
            "id": format!("batch_req_{hex}"),
            "custom_id": item.custom_id,
            "response": null,
            "error": { "code": code, "message": message },
        })
    } else {
        json!({
            "id": format!("batch_req_{hex}"),
            "custom_id": item.custom_id,
            "response": {
                "status_code": 200,
                "request_id": item.job_id.to_string(),
                "body": response_body(endpoint, model, item),
            },
            "error": null,
        })
    };
    let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
    bytes.push(b'\n');
    Some(Bytes::from(bytes))
}

/// What the endpoint itself would have answered for a succeeded item.
fn response_body(endpoint: Endpoint, model: &str, item: &ItemResult) -> Value {
    let tokens = item
        .usage
        .as_ref()
        .map_or_else(Tokens::default, |u| Tokens {
            prompt: u.prompt_tokens,
            completion: u.completion_tokens,
            reasoning: u.reasoning_tokens,
            cached: u.cached_tokens,
            cache_written: 0,
        });
    let answered = Answered {
        job_id: item.job_id,
        model,
        created: item.finished_at.map(unix).unwrap_or_default(),
        tokens,
        finish: crate::calls::answer::finish_of(item.result.as_ref(), tokens.completion, None),
        result: item.result.as_ref().unwrap_or(&Value::Null),
    };
    answer(endpoint, &answered)
}

/// A succeeded job's answer in `endpoint`'s shape (`max_tokens`: what the request allowed).
pub fn job_answer(endpoint: Endpoint, job: &Job, max_tokens: Option<u32>) -> Value {
    let answered = Answered {
        job_id: job.id,
        model: &job.model,
        created: job.finished_at.unwrap_or(job.created_at).timestamp(),
        tokens: Tokens::of(job),
        finish: crate::calls::answer::finish(job, max_tokens),
        result: job.result.as_ref().unwrap_or(&Value::Null),
    };
    answer(endpoint, &answered)
}

/// Chat Completions' `choices`: each reply the result holds (several when the request asked for
/// `n`), with its log probabilities; `finish` is the first's, which a result written before
/// replies kept theirs needs.
fn chat_choices(result: &Value, finish: Finish) -> Vec<Value> {
    let mut replies = replies_of(result);
    if replies.is_empty() {
        replies.push(Reply::text("", None));
    }
    replies
        .iter()
        .enumerate()
        .map(|(index, reply)| {
            let finish = match index {
                0 => finish,
                _ => reply.finish.unwrap_or(Finish::Stop),
            };
            json!({
                "index": index,
                "message": replies::chat_message(reply),
                "logprobs": replies::chat_logprobs(reply),
                "finish_reason": finish.as_str(),
            })
        })
        .collect()
}

/// Chat Completions' `usage`, with the reasoning and cached parts of its counts.
pub fn chat_usage(tokens: Tokens) -> Value {
    json!({
        "prompt_tokens": tokens.prompt,
        "completion_tokens": tokens.completion,
        "total_tokens": tokens.prompt + tokens.completion,
        "prompt_tokens_details": { "cached_tokens": tokens.cached },
        "completion_tokens_details": { "reasoning_tokens": tokens.reasoning },
    })
}

/// The Responses API's `usage`, likewise.
pub fn response_usage(tokens: Tokens) -> Value {
    json!({
        "input_tokens": tokens.prompt,
        "input_tokens_details": { "cached_tokens": tokens.cached, "cache_write_tokens": 0 },
        "output_tokens": tokens.completion,
        "output_tokens_details": { "reasoning_tokens": tokens.reasoning },
        "total_tokens": tokens.prompt + tokens.completion,
    })
}

/// A job's answer, for writing in an endpoint's shape.
pub struct Answered<'a> {
    pub job_id: JobId,
    pub model: &'a str,
    pub created: i64,
    pub tokens: Tokens,
    /// Why the answer stopped.
    pub finish: Finish,
    pub result: &'a Value,
}

/// A succeeded job's answer as `endpoint` answers (ids from the job's: `chatcmpl-{hex}`,
/// `resp_{hex}`).
pub fn answer(endpoint: Endpoint, answered: &Answered<'_>) -> Value {
    let hex = answered.job_id.0.simple();
    let (created, model, result) = (answered.created, answered.model, answered.result);
    let tokens = answered.tokens;
    let reply = Reply::from_result(result).unwrap_or_else(|| Reply::text("", None));
    let hex = hex.to_string();
    let (status, incomplete) = replies::response_status(answered.finish);
    match endpoint {
        Endpoint::ChatCompletions => json!({
            "id": format!("chatcmpl-{hex}"),
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": chat_choices(result, answered.finish),
            "usage": chat_usage(tokens),
        }),
        Endpoint::Responses => json!({
            "id": format!("resp_{hex}"),
            "object": "response",
            "created_at": created,
            "status": status,
            "model": model,
            "output": replies::response_output(&hex, &reply),
            "parallel_tool_calls": true,
            "tool_choice": "auto",
            "tools": [],
            "error": null,
            "incomplete_details": incomplete,
            "usage": response_usage(tokens),
        }),
        Endpoint::Embeddings => {
            let vectors = result["embeddings"].as_array().cloned().unwrap_or_default();
            let data: Vec<Value> = vectors
                .into_iter()
                .enumerate()
                .map(|(index, embedding)| {
                    json!({ "object": "embedding", "index": index, "embedding": embedding })
                })
                .collect();
            json!({
                "object": "list",
                "data": data,
                "model": model,
                "usage": { "prompt_tokens": tokens.prompt, "total_tokens": tokens.prompt },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use tollgate_core::db::batches::BatchUsage;
    use tollgate_core::domain::{JobError, JobErrorCode, JobId};

    use super::*;

    fn item(status: &str, result: Option<Value>, error: Option<JobError>) -> ItemResult {
        ItemResult {
            custom_id: "sku-1".into(),
            job_id: JobId::new(),
            status: status.into(),
            result,
            error,
            usage: Some(BatchUsage {
                prompt_tokens: 7,
                completion_tokens: 3,
                total_tokens: 10,
                reasoning_tokens: 2,
                cached_tokens: 0,
                cost: "0".into(),
            }),
            finished_at: Some(Utc::now()),
        }
    }

    fn parse(line: Option<Bytes>) -> Value {
        let line = line.expect("a line");
        assert_eq!(line.last(), Some(&b'\n'));
        serde_json::from_slice(&line).expect("JSON")
    }

    #[test]
    fn a_succeeded_item_is_answered_as_its_endpoint_answers() {
        let chat = item(
            "succeeded",
            Some(json!({ "message": { "role": "assistant", "content": "Hi" } })),
            None,
        );
        assert!(result_line(Endpoint::ChatCompletions, "m", &chat, true).is_none());
        let line = parse(result_line(Endpoint::ChatCompletions, "m", &chat, false));
        assert_eq!(line["custom_id"], "sku-1");
        assert_eq!(line["error"], Value::Null);
        assert_eq!(line["response"]["status_code"], 200);
        let body = &line["response"]["body"];
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["message"]["content"], "Hi");
        assert_eq!(body["usage"]["total_tokens"], 10);

        let body = &parse(result_line(Endpoint::Responses, "m", &chat, false))["response"]["body"];
        assert_eq!(body["object"], "response");
        assert_eq!(body["output"][0]["content"][0]["text"], "Hi");
        assert_eq!(body["usage"]["input_tokens"], 7);

        let embedding = item(
            "succeeded",
            Some(json!({ "embeddings": [[0.5, 1.0], [2.0, 0.0]] })),
            None,
        );
        let body =
            &parse(result_line(Endpoint::Embeddings, "m", &embedding, false))["response"]["body"];
        assert_eq!(body["data"][1]["index"], 1);
        assert_eq!(body["data"][0]["embedding"], json!([0.5, 1.0]));
        assert_eq!(body["usage"]["prompt_tokens"], 7);
    }

    #[test]
    fn failed_and_cancelled_items_go_to_the_error_file() {
        let failed = item(
            "failed",
            None,
            Some(JobError::new(JobErrorCode::ModelNotFound, "no such model")),
        );
        assert!(result_line(Endpoint::ChatCompletions, "m", &failed, false).is_none());
        let line = parse(result_line(Endpoint::ChatCompletions, "m", &failed, true));
        assert_eq!(line["response"], Value::Null);
        assert_eq!(line["error"]["code"], "model_not_found");
        let cancelled = item(
            "cancelled",
            None,
            Some(JobError::new(
                JobErrorCode::Cancelled,
                "the batch was cancelled",
            )),
        );
        let line = parse(result_line(Endpoint::Embeddings, "m", &cancelled, true));
        assert_eq!(line["error"]["code"], "batch_cancelled");
    }
}
