//! `Prefer: wait=N` (RFC 7240): how long a client would rather wait for the finished job than be
//! answered 202 at once.

use std::time::Duration;

use axum::http::HeaderMap;

/// The longest wait honoured; a client asking for more waits this long.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// The `wait` preference in `headers`, capped at [`MAX_WAIT`]; `None` when absent, zero or not a
/// number (a preference the server cannot honour is ignored, as the RFC says).
pub fn wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|preference| {
            // A preference may carry parameters after `;`; only its own value matters here.
            let preference = preference.split(';').next()?.trim();
            let (name, value) = preference.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("wait")
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
        .next()
        .filter(|&secs| secs > 0)
        .map(|secs| Duration::from_secs(secs).min(MAX_WAIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_of(values: &[&str]) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("prefer", value.parse().expect("header value"));
        }
        wait(&headers)
    }

    #[test]
    fn wait_is_read_among_other_preferences_and_capped() {
        assert_eq!(wait_of(&["wait=5"]), Some(Duration::from_secs(5)));
        assert_eq!(
            wait_of(&["respond-async, Wait=10"]),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            wait_of(&["handling=lenient", "wait=\"3\""]),
            Some(Duration::from_secs(3))
        );
        assert_eq!(wait_of(&["wait=600"]), Some(MAX_WAIT));
    }

    #[test]
    fn absent_zero_or_malformed_waits_are_ignored() {
        assert_eq!(wait_of(&[]), None);
        assert_eq!(wait_of(&["wait=0"]), None);
        assert_eq!(wait_of(&["wait=soon"]), None);
        assert_eq!(wait_of(&["return=minimal"]), None);
    }
}
