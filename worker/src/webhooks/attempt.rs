//! One signed POST to a receiver, and what its answer means for the delivery.

use std::time::Duration;

use reqwest::StatusCode;
use tollgate_core::provider::parse_retry_after;
use tollgate_core::webhook::{
    SigningSecret, TargetError, check_target, parse_url, signature_header,
};

/// How a receiver answered, or why it could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// The SSRF guard, or a URL that can never be sent to: retrying will not help.
    Refused(String),
    /// No answer: DNS, connection, TLS or timeout. Worth another attempt.
    Unanswered(String),
}

/// What an answer asks of the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    Retry {
        retry_after: Option<Duration>,
    },
    GiveUp,
    /// 410: the receiver is gone for good.
    Gone,
}

/// The answer's status code and error text for the attempt row, and what comes next. Only 2xx
/// delivers; 3xx counts as a failure (redirects are never followed).
pub fn judge(answer: &Answer) -> (Option<u16>, Option<String>, Next) {
    match answer {
        Answer::Status { code, .. } if (200..300).contains(code) => {
            (Some(*code), None, Next::Delivered)
        }
        Answer::Status { code: 410, .. } => (
            Some(410),
            Some("the receiver answered 410 Gone".into()),
            Next::Gone,
        ),
        Answer::Status { code, retry_after } => {
            let error = if (300..400).contains(code) {
                format!("the receiver answered {code}; redirects are not followed")
            } else {
                format!("the receiver answered {code}")
            };
            let retry_after = *retry_after;
            (Some(*code), Some(error), Next::Retry { retry_after })
        }
        Answer::Refused(why) => (None, Some(why.clone()), Next::GiveUp),
        Answer::Unanswered(why) => (None, Some(why.clone()), Next::Retry { retry_after: None }),
    }
}

/// POSTs `payload` to `url` as Standard Webhooks message `message_id`, signed with every secret.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    allow_private: bool,
    message_id: &str,
    payload: &str,
    secrets: &[SigningSecret],
) -> Answer {
    let url = match parse_url(url) {
        Ok(url) => url,
        Err(error) => return Answer::Refused(format!("the URL {error}")),
    };
    // Literal IPs never reach the client's resolver, so they are checked here; names are checked
    // here for a clear refusal and again by the resolver, on the addresses actually connected to.
    match check_target(&url, allow_private).await {
        Ok(()) => {}
        Err(error @ TargetError::Unresolvable(_)) => return Answer::Unanswered(error.to_string()),
        Err(error) => return Answer::Refused(error.to_string()),
    }
    let timestamp = chrono::Utc::now().timestamp();
    let signature = signature_header(secrets, message_id, timestamp, payload.as_bytes());
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(payload.to_owned())
        .send()
        .await;
    match sent {
        Ok(response) => {
            let retry_after = (response.status() == StatusCode::TOO_MANY_REQUESTS
                || response.status() == StatusCode::SERVICE_UNAVAILABLE)
                .then(|| response.headers().get(reqwest::header::RETRY_AFTER))
                .flatten()
                .and_then(|value| value.to_str().ok())
                .and_then(parse_retry_after);
            Answer::Status {
                code: response.status().as_u16(),
                retry_after,
            }
        }
        Err(error) => {
            if let Some(refused) = TargetError::refusal_in(&error) {
                return Answer::Refused(format!("refused: {refused}"));
            }
            let why = if error.is_timeout() {
                "the receiver did not answer in time".to_owned()
            } else if error.is_connect() {
                "cannot connect to the receiver".to_owned()
            } else {
                format!("the request failed: {}", error.without_url())
            };
            Answer::Unanswered(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Answer {
        Answer::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn only_2xx_delivers_and_3xx_is_a_failure() {
        assert_eq!(judge(&status(200)).2, Next::Delivered);
        assert_eq!(judge(&status(204)).2, Next::Delivered);
        let (code, error, next) = judge(&status(302));
        assert_eq!(code, Some(302));
        assert!(
            error
                .expect("an error")
                .contains("redirects are not followed")
        );
        assert_eq!(next, Next::Retry { retry_after: None });
    }

    #[test]
    fn gone_stops_and_refusals_give_up_while_silence_retries() {
        assert_eq!(judge(&status(410)).2, Next::Gone);
        assert_eq!(judge(&Answer::Refused("no".into())).2, Next::GiveUp);
        assert_eq!(
            judge(&Answer::Unanswered("timeout".into())).2,
            Next::Retry { retry_after: None }
        );
        let limited = Answer::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(30)),
        };
        assert_eq!(
            judge(&limited).2,
            Next::Retry {
                retry_after: Some(Duration::from_secs(30))
            }
        );
    }
}
