//! A client waiting on its job's answer: a streaming call follows the text as it is generated
//! ([`Feed`]), a sync call waits for the job to end ([`wait_for_end`]). Both cancel the job when
//! the client goes away first ([`CancelOnDrop`]), so nobody pays for text nobody reads, and both
//! give up after the sync timeout with the job left to run to its end.
//!
//! The finished job is the truth: when it ends, whatever of its text (and, before any text, of its
//! reasoning) did not arrive as pieces (lost while the broker reconnected, or still in flight
//! behind the job's event) is sent as one last piece, so the client always ends with the whole
//! text, never with a truncated one.

use std::collections::VecDeque;
use std::time::Duration;

use axum::http::HeaderValue;
use tokio::time::Instant;
use tollgate_core::db::jobs::{self};
use tollgate_core::db::tokens::Principal;
use tollgate_core::domain::cache::CacheState;
use tollgate_core::domain::{Job, JobId, JobRequest, JobStatus, TenantId};
use tollgate_core::queue::StreamPart;

use crate::AppState;
use crate::calls::answer::{
    REQUEST_ID, SHOULD_RETRY, failure, request_id, unsent_text, unsent_thinking,
};
use crate::http::client::ClientInfo;
use crate::http::error::ApiError;
use crate::intake::Call;
use crate::watching::follow::{Following, Heard};
use crate::watching::watch::{Signal, Watch};

/// A call admitted by a drop-in surface, waiting for its job's end or streaming its text.
pub enum Started {
    Waiting(Waiting),
    Streaming(Box<Feed>),
}

impl Started {
    pub fn of(state: &AppState, tenant_id: TenantId, call: Call) -> Self {
        match call.following {
            Some(following) => Self::Streaming(Box::new(Feed::following(
                state, tenant_id, &call.job, following, call.watch,
            ))),
            None => Self::Waiting(Waiting::of(tenant_id, call)),
        }
    }
}

/// Runs a call that does not stream to its end: the succeeded job, or its failure as an error
/// naming the job.
pub async fn call_to_end(
    state: &AppState,
    caller: &Principal,
    client: &ClientInfo,
    request: JobRequest,
) -> Result<Job, ApiError> {
    let asked = crate::intake::Asked::plain(request);
    let call = crate::intake::call(state, caller, client, asked, false).await?;
    Waiting::of(caller.tenant_id, call).answer(state).await
}

/// A sync call's job, watched; or ended already (answered from the cache at intake).
pub struct Waiting {
    tenant_id: TenantId,
    id: JobId,
    watch: Watch,
    ended: Option<Box<Job>>,
}

impl Waiting {
    /// The wait of `call`, whose job may have ended at intake already.
    fn of(tenant_id: TenantId, call: Call) -> Self {
        Self {
            tenant_id,
            id: call.job.id,
            watch: call.watch,
            ended: call.job.status.is_terminal().then(|| Box::new(call.job)),
        }
    }

    /// The job once it succeeded; its failure as an error, as is a job that outlives the sync
    /// timeout (it goes on). The job is cancelled if the caller goes away first.
    pub async fn answer(self, state: &AppState) -> Result<Job, ApiError> {
        let id = self.id;
        let request_id = request_id(id);
        let error = |e: ApiError| e.with_header(REQUEST_ID.clone(), request_id.clone());
        let waited = match self.ended {
            Some(job) => Waited::Ended(job),
            None => wait_for_end(state, self.tenant_id, id, self.watch, state.sync_timeout)
                .await
                .map_err(|e| error(e.into()))?,
        };
        match waited {
            Waited::Ended(job) if job.status == JobStatus::Succeeded => Ok(*job),
            Waited::Ended(job) => Err(error(failure(&job))),
            Waited::StillRunning => Err(error(ApiError::still_running(id))
                // The job goes on: a client retry would start a second one.
                .with_header(SHOULD_RETRY.clone(), HeaderValue::from_static("false"))),
        }
    }
}

/// How long open streams may run on once the api begins shutting down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Cancels its job when dropped armed: the client went away before the job ended.
struct CancelOnDrop {
    state: AppState,
    tenant_id: TenantId,
    id: JobId,
    armed: bool,
}

impl CancelOnDrop {
    fn new(state: &AppState, tenant_id: TenantId, id: JobId) -> Self {
        Self {
            state: state.clone(),
            tenant_id,
            id,
            armed: true,
        }
    }

    /// The client got its answer (or gave up waiting on purpose): the job is left alone.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (state, tenant_id, id) = (self.state.clone(), self.tenant_id, self.id);
        #[expect(
            clippy::disallowed_methods,
            reason = "a cancel left to finish on its own: the client is gone, and a cancel that fails is logged"
        )]
        tokio::spawn(async move {
            tracing::info!(job_id = %id, "the client went away; cancelling its job");
            if let Err(error) = crate::cancelling::job(&state, tenant_id, id).await {
                tracing::warn!(job_id = %id, %error, "cannot cancel an abandoned job");
            }
        });
    }
}

/// What a sync call learned.
enum Waited {
    Ended(Box<Job>),
    /// The sync timeout passed (or the api is shutting down); the job goes on.
    StillRunning,
}

/// Waits for a sync call's job to end, up to `timeout`; the job is cancelled if the caller goes
/// away first (this future dropped).
async fn wait_for_end(
    state: &AppState,
    tenant_id: TenantId,
    id: JobId,
    watch: Watch,
    timeout: Duration,
) -> Result<Waited, sqlx::Error> {
    let mut guard = CancelOnDrop::new(state, tenant_id, id);
    let finished =
        crate::watching::watch::finished_within(&state.pool, tenant_id, id, watch, timeout).await;
    guard.disarm();
    Ok(match finished? {
        Some(job) => Waited::Ended(Box::new(job)),
        None => Waited::StillRunning,
    })
}

/// What a streaming call hears next.
enum Fed {
    /// The next piece of the text.
    Text(String),
    /// The next piece of the model's reasoning (which comes before the text).
    Thinking(String),
    /// The provider's signature of the reasoning, after it.
    Signature(String),
    /// A block the provider wrote, whole (Anthropic's).
    Block(serde_json::Value),
    /// The job ended (its whole text already fed).
    Ended(Box<Job>),
    /// The sync timeout passed, or the api is shutting down: the stream ends, the job goes on.
    StillRunning,
}

/// A streaming job's text as it comes, then its end.
pub struct Feed {
    state: AppState,
    /// The model the client asked for.
    model: String,
    tenant_id: TenantId,
    id: JobId,
    following: Following,
    watch: Watch,
    guard: CancelOnDrop,
    /// The text fed so far, and the reasoning.
    fed: String,
    fed_thinking: String,
    next_seq: u32,
    /// A piece went missing: the rest comes from the finished job.
    lossy: bool,
    /// Whether pieces can still come (the follow ended: only the job's end can).
    following_open: bool,
    closing: bool,
    deadline: Instant,
    /// What the job's end feeds: its reasoning and text not yet fed, then the end itself.
    pending: VecDeque<Fed>,
    done: bool,
}

impl Feed {
    /// The feed of `job`, whose text is followed and whose changes are watched from before it
    /// was published.
    pub fn following(
        state: &AppState,
        tenant_id: TenantId,
        job: &Job,
        following: Following,
        watch: Watch,
    ) -> Self {
        let id = job.id;
        let mut feed = Self {
            state: state.clone(),
            model: job.model.clone(),
            tenant_id,
            id,
            following,
            watch,
            guard: CancelOnDrop::new(state, tenant_id, id),
            fed: String::new(),
            fed_thinking: String::new(),
            next_seq: 0,
            lossy: false,
            following_open: true,
            closing: false,
            deadline: Instant::now() + state.sync_timeout,
            pending: VecDeque::new(),
            done: false,
        };
        if job.status.is_terminal() {
            // Answered from the cache at intake: all there is to feed is its end.
            feed.end(job.clone());
        }
        feed
    }

    pub fn job_id(&self) -> JobId {
        self.id
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The next thing to tell the client; `None` after the end. A database error ends the feed
    /// (the caller reports it; the job goes on).
    async fn next(&mut self) -> Option<Result<Fed, sqlx::Error>> {
        if self.done {
            return None;
        }
        if let Some(fed) = self.pop_pending() {
            return Some(Ok(fed));
        }
        loop {
            let step = tokio::select! {
                heard = self.following.next(), if self.following_open => Step::Heard(heard),
                signal = self.watch.next(), if !self.closing => Step::Signal(signal),
                () = tokio::time::sleep_until(self.deadline) => Step::Timeout,
            };
            let read_job = match step {
                Step::Heard(Some(Heard::Piece(message))) => match message.part {
                    StreamPart::End(_) => true,
                    _ if self.lossy || message.seq != self.next_seq => {
                        self.lossy = true;
                        continue;
                    }
                    StreamPart::Text(text) => {
                        self.next_seq += 1;
                        self.fed.push_str(&text);
                        return Some(Ok(Fed::Text(text)));
                    }
                    StreamPart::Thinking(thought) => {
                        self.next_seq += 1;
                        self.fed_thinking.push_str(&thought);
                        return Some(Ok(Fed::Thinking(thought)));
                    }
                    StreamPart::Signature(signature) => {
                        self.next_seq += 1;
                        return Some(Ok(Fed::Signature(signature)));
                    }
                    StreamPart::Block(block) => {
                        self.next_seq += 1;
                        return Some(Ok(Fed::Block(block)));
                    }
                },
                Step::Heard(Some(Heard::Gap)) => {
                    self.lossy = true;
                    false
                }
                Step::Heard(None) => {
                    self.following_open = false;
                    self.lossy = true;
                    false
                }
                Step::Signal(Signal::Changed(event)) => event.status.is_terminal(),
                Step::Signal(Signal::Reread) => true,
                Step::Signal(Signal::Closing) => {
                    self.closing = true;
                    self.deadline = self.deadline.min(Instant::now() + SHUTDOWN_GRACE);
                    false
                }
                Step::Timeout => {
                    self.done = true;
                    self.guard.disarm();
                    return Some(Ok(Fed::StillRunning));
                }
            };
            if !read_job {
                continue;
            }
            match jobs::get(&self.state.pool, self.tenant_id, self.id).await {
                Err(error) => {
                    self.done = true;
                    self.guard.disarm();
                    return Some(Err(error));
                }
                Ok(Some(job)) if job.status.is_terminal() => {
                    self.end(job);
                    return self.pop_pending().map(Ok);
                }
                Ok(_) => {}
            }
        }
    }

    /// The next of what the job's end queued, if any; the feed is done once it has none left.
    fn pop_pending(&mut self) -> Option<Fed> {
        let fed = self.pending.pop_front()?;
        self.done = self.pending.is_empty();
        Some(fed)
    }

    /// The job ended: queues the part of its reasoning (before any text) and of its text not yet
    /// fed, if any, then its end. A job answered from the cache had nothing streamed: its
    /// answer is fed as a stream of pieces, as it was generated, not as one.
    fn end(&mut self, job: Job) {
        self.guard.disarm();
        let hit = job.cache == Some(CacheState::Hit);
        let cut = |rest: String| if hit { pieces(&rest) } else { vec![rest] };
        if self.fed.is_empty()
            && let Some(rest) = unsent_thinking(&job, &self.fed_thinking)
        {
            self.pending
                .extend(cut(rest).into_iter().map(Fed::Thinking));
        }
        if let Some(rest) = unsent_text(&job, &self.fed) {
            self.fed.push_str(&rest);
            self.pending.extend(cut(rest).into_iter().map(Fed::Text));
        }
        self.pending.push_back(Fed::Ended(Box::new(job)));
    }
}

/// How many words a piece of a replayed answer holds.
const WORDS_PER_PIECE: usize = 4;

/// A stored answer's text cut into pieces of a few words (each with the spaces after them), as
/// a provider streams it.
fn pieces(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(char::is_whitespace).collect();
    words
        .chunks(WORDS_PER_PIECE)
        .map(|chunk| chunk.concat())
        .collect()
}

/// Writes a streamed answer in one surface's dialect (SSE events, NDJSON lines).
pub trait Dialect: Send + 'static {
    type Item: Send + 'static;
    /// The stream's label among the open streams (`tollgate_streams_open`).
    const STREAM: &'static str;
    /// What opens the stream, before any text.
    fn opening(&mut self) -> Vec<Self::Item>;
    fn text(&mut self, text: &str) -> Vec<Self::Item>;
    /// A piece of the model's reasoning, where the dialect puts it.
    fn thinking(&mut self, text: &str) -> Vec<Self::Item>;
    /// The provider's signature of the reasoning so far, which closes it (only Anthropic's
    /// dialect carries one).
    fn signature(&mut self, _signature: &str) -> Vec<Self::Item> {
        Vec::new()
    }
    /// A block the provider wrote, whole (only Anthropic's dialect shows it).
    fn block(&mut self, _block: &serde_json::Value) -> Vec<Self::Item> {
        Vec::new()
    }
    /// What closes the stream once the job ended, however it ended.
    fn ended(&mut self, job: &Job) -> Vec<Self::Item>;
    /// What closes the stream when its job cannot be followed further (it goes on).
    fn failed(&mut self, error: &ApiError) -> Vec<Self::Item>;
}

impl Feed {
    /// The feed written in `dialect`, item by item.
    pub fn written_in<D: Dialect>(
        self: Box<Self>,
        mut dialect: D,
    ) -> impl futures::Stream<Item = D::Item> + Send {
        let queued: VecDeque<D::Item> = dialect.opening().into();
        let metrics = self.state.metrics.clone();
        let items = futures::stream::unfold(
            (self, dialect, queued),
            |(mut feed, mut dialect, mut queued)| async move {
                loop {
                    if let Some(item) = queued.pop_front() {
                        return Some((item, (feed, dialect, queued)));
                    }
                    let more = match feed.next().await? {
                        Ok(Fed::Text(text)) => dialect.text(&text),
                        Ok(Fed::Thinking(text)) => dialect.thinking(&text),
                        Ok(Fed::Signature(signature)) => dialect.signature(&signature),
                        Ok(Fed::Block(block)) => dialect.block(&block),
                        Ok(Fed::Ended(job)) => dialect.ended(&job),
                        Ok(Fed::StillRunning) => {
                            dialect.failed(&ApiError::still_running(feed.job_id()))
                        }
                        Err(error) => dialect.failed(&ApiError::from(error)),
                    };
                    queued.extend(more);
                }
            },
        );
        metrics.open(D::STREAM, items)
    }
}

enum Step {
    Heard(Option<Heard>),
    Signal(Signal),
    Timeout,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_answer_comes_in_pieces_that_add_up_to_it() {
        let text = "The quick brown fox jumps over the lazy dog.\nAgain.";
        let cut = pieces(text);
        assert_eq!(cut.len(), 3);
        assert_eq!(cut[0], "The quick brown fox ");
        assert_eq!(cut.concat(), text);
        assert!(pieces("").is_empty());
    }
}
