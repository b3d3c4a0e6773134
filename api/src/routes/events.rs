//! `GET /v1/jobs/{id}/events`: a job's status changes as server-sent events, and for a streaming
//! job its text as `event: delta` while it runs (from whichever api instance serves the stream;
//! deltas carry no id, and the ended job holds the whole text).
//!
//! A stream watches the job before reading it (see [`crate::watching::watch`]), so no change can slip
//! between the read and the subscription. Each event's id is the job's revision: a client that
//! reconnects with `Last-Event-ID` is sent only what is newer.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::time::Instant;
use tollgate_core::db::jobs;
use tollgate_core::domain::{Job, JobId, TenantId};
use tollgate_core::queue::StreamPart;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::access::auth::Caller;
use crate::http::error::ApiError;
use crate::http::path::{Path, missing_job};
use crate::http::sse::{JobEventName, JobStreamEvent};
use crate::watching::follow::{Following, Heard};
use crate::watching::watch::{Signal, Watch};

/// How often a stream re-reads its job even without an event: a safety net for an event lost while
/// the broker was away, not the way changes normally arrive.
const REREAD_EVERY: Duration = Duration::from_secs(15);
/// How often a stream re-reads a batch item, whose changes workers do not broadcast.
const BATCH_ITEM_REREAD_EVERY: Duration = Duration::from_secs(1);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// Follow a job
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "Jobs",
    description = "The job's status changes as server-sent events (`event: job`, each id the job's revision; `Last-Event-ID` resumes), and for a streaming job its text as `event: delta` (`{\"text\"}`) while it runs. The stream ends after the job has ended.",
    params(("id" = JobId, Path), ("Last-Event-ID" = Option<i32>, Header, description = "The last revision seen: only newer is sent")),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = JobStreamEvent),
        (status = 404, description = "No such job"),
        (status = 410, description = "`job_expired`: the id is older than the jobs kept (`job_retention_days`)"),
    ))]
async fn events(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<JobId>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last_seen = crate::http::sse::last_event_id::<i32>(&headers).unwrap_or(0);
    let watch = state.watchers.watch(id);
    let first = jobs::get_with_revision(&state.pool, caller.tenant_id, id)
        .await?
        .ok_or_else(|| missing_job(id, &state.runtime.current().settings.retention))?;
    // A streaming job's text as it comes, from whichever instance this is.
    let following = match first.0.stream && !first.0.status.is_terminal() {
        true => state.followers.follow_job(id).await.ok(),
        false => None,
    };
    let reread_every = if first.0.batch_id.is_some() {
        BATCH_ITEM_REREAD_EVERY
    } else {
        REREAD_EVERY
    };
    let follow = Follow {
        state: state.clone(),
        tenant_id: caller.tenant_id,
        id,
        watch,
        reread_every,
        last_sent: last_seen,
        next: Some(first),
        ended: false,
        following,
        text: TextSeen::default(),
    };
    let stream = futures::stream::unfold(follow, |mut follow| async move {
        let event = follow.next_event().await?;
        Some((Ok(event), follow))
    });
    let stream = state.metrics.open("job_events", stream);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(state.sse_heartbeat)))
}

/// One stream's position: the last revision sent, and the job as last read if not yet sent.
struct Follow {
    state: AppState,
    tenant_id: TenantId,
    id: JobId,
    watch: Watch,
    /// When to read the job again without an event.
    reread_every: Duration,
    last_sent: i32,
    next: Option<(Job, i32)>,
    ended: bool,
    /// A streaming job's text, followed while it runs.
    following: Option<Following>,
    text: TextSeen,
}

/// The text a stream has sent as deltas.
#[derive(Default)]
struct TextSeen {
    sent: String,
    /// The next piece expected; `None` before the first.
    next_seq: Option<u32>,
    /// The pieces sent start at the text's beginning (the stream joined before any was sent).
    from_start: bool,
    /// A piece went missing: no more are sent.
    lossy: bool,
}

impl TextSeen {
    /// Whether the piece numbered `seq` (text or reasoning) follows what was sent.
    fn accept(&mut self, seq: u32) -> bool {
        let expected = *self.next_seq.get_or_insert_with(|| {
            self.from_start = seq == 0;
            seq
        });
        if self.lossy || seq != expected {
            self.lossy = true;
            return false;
        }
        self.next_seq = Some(seq + 1);
        true
    }

    /// The part of an ended job's text not yet sent as deltas, when what was sent is its start.
    fn rest_of(&mut self, job: &Job) -> Option<String> {
        if self.next_seq.is_some() && !self.from_start {
            return None;
        }
        let rest = crate::calls::answer::unsent_text(job, &self.sent)?;
        self.sent.push_str(&rest);
        Some(rest)
    }
}

/// What woke a stream.
enum Wake {
    /// The job may have changed: read it.
    Reread,
    /// A piece of its text.
    Delta(String),
    /// A piece of its reasoning.
    Thinking(String),
    /// The api is shutting down.
    Closing,
}

impl Follow {
    /// The next event to send, waiting for the job to change; `None` ends the stream (after a
    /// terminal state, or if the job can no longer be read: the client reconnects and resumes).
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.ended {
                return None;
            }
            let (job, revision) = match self.next.take() {
                Some(read) => read,
                None => {
                    match self.changed().await {
                        Wake::Closing => return None,
                        Wake::Delta(text) => return crate::http::sse::delta_event(&text),
                        Wake::Thinking(text) => return crate::http::sse::thinking_event(&text),
                        Wake::Reread => {}
                    }
                    match jobs::get_with_revision(&self.state.pool, self.tenant_id, self.id).await {
                        Ok(Some(read)) => read,
                        Ok(None) => return None,
                        Err(error) => {
                            tracing::warn!(%error, job_id = %self.id, "cannot read a watched job");
                            return None;
                        }
                    }
                }
            };
            if job.stream
                && job.status.is_terminal()
                && revision > self.last_sent
                && let Some(rest) = self.text.rest_of(&job)
            {
                // The end of the text first, then the ended job.
                self.next = Some((job, revision));
                return crate::http::sse::delta_event(&rest);
            }
            self.ended = job.status.is_terminal();
            if revision > self.last_sent {
                self.last_sent = revision;
                let event = Event::default()
                    .event(JobEventName::Job.as_str())
                    .id(revision.to_string())
                    .json_data(&job)
                    .ok()?;
                return Some(event);
            }
        }
    }

    /// Waits until the job may have moved past what was sent (an event newer than that, a request
    /// to re-read, the end of its text, or the periodic re-read), a piece of its text comes, or
    /// the api shuts down.
    async fn changed(&mut self) -> Wake {
        let deadline = Instant::now() + self.reread_every;
        loop {
            let signal = tokio::select! {
                signal = self.watch.next() => signal,
                heard = next_heard(&mut self.following) => {
                    match heard {
                        Some(Heard::Piece(message)) => match message.part {
                            StreamPart::End(_) => return Wake::Reread,
                            _ if !self.text.accept(message.seq) => continue,
                            StreamPart::Text(text) => {
                                self.text.sent.push_str(&text);
                                return Wake::Delta(text);
                            }
                            StreamPart::Thinking(text) => return Wake::Thinking(text),
                            // The job's result carries the reasoning's signature.
                            StreamPart::Signature(_) | StreamPart::Block(_) => continue,
                        },
                        Some(Heard::Gap) => self.text.lossy = true,
                        None => self.following = None,
                    }
                    continue;
                }
                () = tokio::time::sleep_until(deadline) => return Wake::Reread,
            };
            match signal {
                Signal::Changed(event) if event.revision <= self.last_sent => continue,
                Signal::Closing => return Wake::Closing,
                Signal::Changed(_) | Signal::Reread => return Wake::Reread,
            }
        }
    }
}

/// What the follow of a streaming job's text hears next; never, without one.
async fn next_heard(following: &mut Option<Following>) -> Option<Heard> {
    match following {
        Some(following) => following.next().await,
        None => std::future::pending().await,
    }
}
