//! The pieces of the api's own event streams: where a reconnecting client resumes, and a piece of
//! a streaming job's text.

use axum::http::HeaderMap;
use axum::response::sse::Event;

/// The `Last-Event-ID` a reconnecting client sent, if it is one of this stream's ids.
pub fn last_event_id<T: std::str::FromStr>(headers: &HeaderMap) -> Option<T> {
    headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<T>().ok())
}

/// A piece of a streaming job's text, as native streams send it.
pub fn delta_event(text: &str) -> Option<Event> {
    Event::default()
        .event("delta")
        .json_data(serde_json::json!({ "text": text }))
        .ok()
}
