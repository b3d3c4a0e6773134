//! `GET /v1/batches/{id}/events`: a batch's progress as server-sent events.
//!
//! An `event: batch` with the batch (counts by status, usage) is sent at once, then whenever its
//! status or counts have changed, read once a second; the stream ends after the batch has ended,
//! or when the api shuts down. Each event's id is how many items have ended, so a client that
//! reconnects with `Last-Event-ID` is sent the batch only once more has happened (or it ended).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tollgate_core::db::batches::{self, Batch, Counts};
use tollgate_core::domain::{BatchId, TenantId};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::tenancy::ForTenant;
use crate::AppState;
use crate::access::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::QueryParams;
use crate::http::path::{Path, not_found};
use crate::http::sse::{BatchEventName, BatchStreamEvent};

/// How often an open stream reads its batch.
const READ_EVERY: Duration = Duration::from_secs(1);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// Follow a batch
#[utoipa::path(get, path = "/v1/batches/{id}/events", tag = "Batches",
    description = "`event: batch` with the batch (counts by status, usage) at once, then whenever its status or counts change; the stream ends after the batch has ended. Each event's id is how many items have ended (`Last-Event-ID` resumes).",
    params(("id" = BatchId, Path), ForTenant, ("Last-Event-ID" = Option<i64>, Header, description = "How many items had ended at the last event seen")),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = BatchStreamEvent),
        (status = 404, description = "No such batch"),
        (status = 422, description = "`tenant_id` is not a tenant id"),
    ))]
async fn events(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<BatchId>,
    QueryParams(query): QueryParams<ForTenant>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let tenant_id = super::tenancy::tenant(&caller, query.tenant_id.as_deref())?;
    let first = batches::get(&state.pool, tenant_id, id)
        .await?
        .ok_or_else(not_found::<BatchId>)?;
    let last_seen = crate::http::sse::last_event_id::<i64>(&headers);
    let progress = Progress {
        state: state.clone(),
        tenant_id,
        id,
        next: Some(first),
        last_sent: None,
        last_seen,
        ended: false,
    };
    let stream = futures::stream::unfold(progress, |mut progress| async move {
        let event = progress.next_event().await?;
        Some((Ok(event), progress))
    });
    let stream = state.metrics.open("batch_events", stream);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(state.sse_heartbeat)))
}

/// One stream's position: what was last sent, and the batch as last read if not yet looked at.
struct Progress {
    state: AppState,
    tenant_id: TenantId,
    id: BatchId,
    next: Option<Batch>,
    last_sent: Option<(String, Counts)>,
    /// The `Last-Event-ID` the client reconnected with.
    last_seen: Option<i64>,
    ended: bool,
}

impl Progress {
    /// The next event, once the batch has changed; `None` ends the stream.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.ended {
                return None;
            }
            let batch = match self.next.take() {
                Some(batch) => batch,
                None => {
                    tokio::select! {
                        () = self.state.shutdown.cancelled() => return None,
                        () = tokio::time::sleep(READ_EVERY) => {}
                    }
                    match batches::get(&self.state.pool, self.tenant_id, self.id).await {
                        Ok(Some(batch)) => batch,
                        Ok(None) => return None,
                        Err(error) => {
                            tracing::warn!(%error, batch_id = %self.id, "cannot read a watched batch");
                            return None;
                        }
                    }
                }
            };
            self.ended = batch.finished_at.is_some();
            let ended_items = batch.counts.succeeded + batch.counts.failed + batch.counts.cancelled;
            let seen = (batch.status.clone(), batch.counts);
            let news = self.last_sent.as_ref() != Some(&seen)
                && (self.ended || self.last_seen.is_none_or(|n| ended_items > n));
            if news {
                self.last_sent = Some(seen);
                self.last_seen = None;
                return Event::default()
                    .event(BatchEventName::Batch.as_str())
                    .id(ended_items.to_string())
                    .json_data(&batch)
                    .ok();
            }
        }
    }
}
