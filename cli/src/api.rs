//! The CLI's client of Tollgate's batch API, and its one error type.

use std::path::Path;

use futures::{Stream, StreamExt as _, TryStreamExt as _};
use reqwest::{Response, StatusCode, header};
use serde::Deserialize;
use serde_json::Value;
use tokio_util::io::ReaderStream;

/// What can go wrong talking to Tollgate.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Tollgate refused the request; `detail` says why (a bad line names it).
    #[error("{status}: {detail} ({code})")]
    Refused {
        status: StatusCode,
        code: String,
        detail: String,
    },
    /// The request did not get an answer; `cause` is the innermost reason (connection refused, a
    /// name that does not resolve, a timeout).
    #[error("cannot reach Tollgate at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    /// The command line lacks something it needs.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("an unexpected answer from Tollgate: {0}")]
    Unexpected(String),
}

impl CliError {
    fn unreachable(url: &str, error: &reqwest::Error) -> Self {
        Self::Unreachable {
            url: url.to_owned(),
            cause: innermost_cause(error),
        }
    }
}

/// The last of an error's causes: what actually went wrong under the layers that wrap it
/// (`Connection refused (os error 111)`, not `error sending request for url`).
fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(error), |e| e.source())
        .last()
        .map_or_else(|| error.to_string(), ToString::to_string)
}

/// How many of a batch's items are in each state, as `GET /v1/batches/{id}` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Counts {
    pub total: u64,
    pub pending: u64,
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl Counts {
    pub fn ended(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }
}

/// A batch as Tollgate shows it: what the CLI reads of it, and the whole object to print.
#[derive(Debug, Clone)]
pub struct Batch {
    pub id: String,
    pub status: String,
    pub counts: Counts,
    pub raw: Value,
}

impl Batch {
    fn from_json(raw: Value) -> Result<Self, CliError> {
        #[derive(Deserialize)]
        struct Fields {
            id: String,
            status: String,
            counts: Counts,
        }
        let fields = Fields::deserialize(&raw)
            .map_err(|e| CliError::Unexpected(format!("not a batch: {e}")))?;
        Ok(Self {
            id: fields.id,
            status: fields.status,
            counts: fields.counts,
            raw,
        })
    }

    pub fn has_ended(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "cancelled")
    }
}

/// What a JSONL batch is submitted with.
pub struct Submission<'a> {
    pub file: &'a Path,
    pub kind: &'a str,
    pub model: &'a str,
    pub template: Option<&'a str>,
    pub metadata: Option<&'a str>,
    pub webhook_url: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
}

/// A Tollgate api and the token to call it with.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Response, CliError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|error| CliError::unreachable(&self.base, &error))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let problem: Value = response.json().await.unwrap_or_default();
        let mut detail = problem["detail"]
            .as_str()
            .unwrap_or("no detail given")
            .to_owned();
        // A 404 that is not Tollgate's for a missing thing (a batch), or from a URL with a path:
        // most likely the URL is not Tollgate's root.
        let misrouted = problem["code"] != "not_found" || self.has_path();
        if status == StatusCode::NOT_FOUND && misrouted {
            detail.push_str(&format!(
                "; is {} Tollgate's address? Give it without a path (no /v1), e.g. \
                 http://127.0.0.1:8080",
                self.base
            ));
        }
        Err(CliError::Refused {
            status,
            code: problem["code"].as_str().unwrap_or("unknown").to_owned(),
            detail,
        })
    }

    /// Whether the base URL has a path (`…/v1`): Tollgate's routes start at its root.
    fn has_path(&self) -> bool {
        reqwest::Url::parse(&self.base).is_ok_and(|url| url.path() != "/")
    }

    async fn batch_from(response: Response) -> Result<Batch, CliError> {
        let raw: Value = response
            .json()
            .await
            .map_err(|e| CliError::Unexpected(e.to_string()))?;
        Batch::from_json(raw)
    }

    /// Submits a JSONL file as a batch, streaming it from disk.
    pub async fn submit(&self, submission: &Submission<'_>) -> Result<Batch, CliError> {
        let unreadable =
            |e: String| CliError::Usage(format!("cannot read {}: {e}", submission.file.display()));
        let metadata = tokio::fs::metadata(submission.file)
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        if metadata.is_dir() {
            return Err(unreadable("it is a directory, not a JSONL file".into()));
        }
        let file = tokio::fs::File::open(submission.file)
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        let mut query = vec![("kind", submission.kind), ("model", submission.model)];
        for (name, value) in [
            ("template", submission.template),
            ("metadata", submission.metadata),
            ("webhook_url", submission.webhook_url),
        ] {
            if let Some(value) = value {
                query.push((name, value));
            }
        }
        let mut request = self
            .http
            .post(self.url("/v1/batches"))
            .query(&query)
            .header(header::CONTENT_TYPE, "application/jsonl")
            .body(reqwest::Body::wrap_stream(ReaderStream::new(file)));
        if let Some(key) = submission.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        Self::batch_from(self.send(request).await?).await
    }

    pub async fn batch(&self, id: &str) -> Result<Batch, CliError> {
        let response = self
            .send(self.http.get(self.url(&format!("/v1/batches/{id}"))))
            .await?;
        Self::batch_from(response).await
    }

    pub async fn cancel(&self, id: &str) -> Result<Batch, CliError> {
        let response = self
            .send(
                self.http
                    .post(self.url(&format!("/v1/batches/{id}/cancel"))),
            )
            .await?;
        Self::batch_from(response).await
    }

    /// The batch's results, JSONL as it streams in.
    pub async fn results(
        &self,
        id: &str,
    ) -> Result<impl Stream<Item = Result<bytes::Bytes, CliError>> + use<>, CliError> {
        let response = self
            .send(
                self.http
                    .get(self.url(&format!("/v1/batches/{id}/results"))),
            )
            .await?;
        let base = self.base.clone();
        Ok(response
            .bytes_stream()
            .map_err(move |error| CliError::unreachable(&base, &error)))
    }

    /// The batch's progress events (SSE), from after `last_event_id` when resuming. The stream
    /// ends when the batch has ended or the connection drops; each item is the batch and its
    /// event id.
    pub async fn progress(
        &self,
        id: &str,
        last_event_id: Option<&str>,
    ) -> Result<impl Stream<Item = Result<(Batch, String), CliError>> + use<>, CliError> {
        use eventsource_stream::Eventsource as _;
        let mut request = self
            .http
            .get(self.url(&format!("/v1/batches/{id}/events")))
            .header(header::ACCEPT, "text/event-stream");
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last);
        }
        let events = self.send(request).await?.bytes_stream().eventsource();
        Ok(events.filter_map(|event| async move {
            match event {
                Ok(event) if event.event == "batch" => Some(
                    serde_json::from_str(&event.data)
                        .map_err(|e| CliError::Unexpected(e.to_string()))
                        .and_then(Batch::from_json)
                        .map(|batch| (batch, event.id)),
                ),
                Ok(_) => None,
                Err(error) => Some(Err(CliError::Unexpected(error.to_string()))),
            }
        }))
    }
}
