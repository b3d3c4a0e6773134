//! Fetching an image a client gave by URL, once: the api fetches a single job's at intake, the
//! worker a batch item's before its first call, and the bytes are then kept with the job (retries
//! and fallback never fetch again).
//!
//! A fetch goes only where a webhook may (the SSRF guard of [`crate::webhook`], after DNS
//! resolution, the connection made to a checked address); a redirect is followed only once its
//! target passed the same check, at most [`MAX_REDIRECTS`] of them. The answer must be a 2xx of
//! an image type (a `Content-Type` naming another type is refused; the bytes decide), at most the
//! size limit (read no further than that), within the timeout for the whole fetch.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::join_all;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use url::Url;

use crate::domain::JobRequest;
use crate::domain::conversation::{ImageSource, KeptImage, MediaType};
use crate::webhook::{GuardedResolver, Reach, TargetError, check_target_within};

/// Most redirects followed for one image.
pub const MAX_REDIRECTS: usize = 3;

/// How big and how slow an image may be, and which addresses it may come from.
#[derive(Debug, Clone)]
pub struct ImageLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
    pub reach: Reach,
}

/// Why an image URL gave no image: the text says what happened; `retryable` when trying again
/// later may help (a timeout, a connection that failed, the server's own failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FetchFailed {
    pub message: String,
    pub retryable: bool,
}

impl FetchFailed {
    fn final_(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }

    fn passing(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }
}

/// Fetches images through the guard.
#[derive(Clone)]
pub struct ImageFetcher {
    http: reqwest::Client,
    limits: ImageLimits,
}

impl ImageFetcher {
    /// A client that follows no redirect itself (each is checked here first), uses no proxy from
    /// the environment (it would connect on the guard's behalf to anything), and connects only to
    /// addresses the guard checked.
    #[expect(
        clippy::expect_used,
        reason = "the settings are plain values; only a TLS backend that cannot start fails, at start-up"
    )]
    pub fn new(limits: ImageLimits) -> Self {
        let resolver = GuardedResolver {
            reach: limits.reach.clone(),
        };
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(resolver))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(limits.timeout)
            .user_agent(concat!("Tollgate-Images/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the image client's settings are valid");
        Self { http, limits }
    }

    pub fn limits(&self) -> &ImageLimits {
        &self.limits
    }

    /// Fetches every image `request` names by URL, all at once, keeping each with its bytes; a
    /// failure says which image (its position among the request's images) and why.
    pub async fn fetch_all(&self, request: &mut JobRequest) -> Result<(), (usize, FetchFailed)> {
        let urls: Vec<(usize, String)> = request
            .images()
            .iter()
            .enumerate()
            .filter_map(|(k, image)| match &image.source {
                ImageSource::Url(url) => Some((k, url.clone())),
                ImageSource::Kept(_) => None,
            })
            .collect();
        let fetched = join_all(urls.iter().map(|(_, url)| self.fetch(url))).await;
        let mut images = request.images_mut();
        for ((k, _), result) in urls.into_iter().zip(fetched) {
            let kept = result.map_err(|failed| (k, failed))?;
            if let Some(image) = images.get_mut(k) {
                image.source = ImageSource::Kept(kept);
            }
        }
        Ok(())
    }

    /// The image at `url`, read and named by its hash.
    pub async fn fetch(&self, url: &str) -> Result<KeptImage, FetchFailed> {
        let url = Url::parse(url).map_err(|_| FetchFailed::final_("is not an absolute URL"))?;
        tokio::time::timeout(self.limits.timeout, self.follow(url))
            .await
            .unwrap_or_else(|_| {
                Err(FetchFailed::passing(format!(
                    "the image did not arrive within {} s",
                    self.limits.timeout.as_secs()
                )))
            })
    }

    /// Fetches `url`, following at most [`MAX_REDIRECTS`] redirects, each target checked.
    async fn follow(&self, mut url: Url) -> Result<KeptImage, FetchFailed> {
        for _ in 0..=MAX_REDIRECTS {
            check_target_within(&url, &self.limits.reach)
                .await
                .map_err(|error| refusal(&url, &error))?;
            let response = self
                .http
                .get(url.clone())
                .send()
                .await
                .map_err(|error| failed_send(&url, &error))?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| FetchFailed::final_(format!("{url} redirects nowhere")))?;
                url = url.join(location).map_err(|_| {
                    FetchFailed::final_(format!("{url} redirects to an unreadable location"))
                })?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(FetchFailed::final_(format!(
                        "redirects to {url}, which is not an http(s) URL"
                    )));
                }
                continue;
            }
            return self.read(&url, response).await;
        }
        Err(FetchFailed::final_(format!(
            "redirects more than {MAX_REDIRECTS} times"
        )))
    }

    /// The image in a final answer: a 2xx of an image type, no bigger than the limit.
    async fn read(&self, url: &Url, response: reqwest::Response) -> Result<KeptImage, FetchFailed> {
        let status = response.status();
        if !status.is_success() {
            let message = format!("{url} answered {status}");
            let passing = status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT;
            return Err(match passing {
                true => FetchFailed::passing(message),
                false => FetchFailed::final_(message),
            });
        }
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
        if let Some(declared) = header(CONTENT_TYPE)
            && MediaType::from_name(declared).is_none()
            && !declared.starts_with("application/octet-stream")
        {
            return Err(FetchFailed::final_(format!(
                "{url} is {declared}, not a PNG, JPEG, WebP or GIF image"
            )));
        }
        let max = self.limits.max_bytes;
        let declared_len = header(CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
        if declared_len.is_some_and(|len| len > max) {
            return Err(too_big(url, max));
        }
        let mut data = Vec::with_capacity(declared_len.unwrap_or(0));
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| failed_send(url, &error))?;
            if data.len() + chunk.len() > max {
                return Err(too_big(url, max));
            }
            data.extend_from_slice(&chunk);
        }
        KeptImage::read(data.into(), max)
            .map_err(|refused| FetchFailed::final_(format!("{url} {refused}")))
    }
}

fn too_big(url: &Url, max: usize) -> FetchFailed {
    FetchFailed::final_(format!("{url} is over the image limit of {max} bytes"))
}

fn refusal(url: &Url, error: &TargetError) -> FetchFailed {
    match error {
        TargetError::Unresolvable(_) => FetchFailed::passing(format!("{url}: {error}")),
        _ => FetchFailed::final_(format!("{url} may not be fetched: {error}")),
    }
}

/// A request that failed before an answer: refused by the guard at connect time (a name that
/// re-resolved to an internal address), or a network failure.
fn failed_send(url: &Url, error: &reqwest::Error) -> FetchFailed {
    if let Some(refused) = TargetError::refusal_in(error) {
        return FetchFailed::final_(format!("{url} may not be fetched: refused: {refused}"));
    }
    let what = if error.is_timeout() {
        "did not answer in time"
    } else if error.is_connect() {
        "could not be connected to"
    } else {
        "broke off its answer"
    };
    FetchFailed::passing(format!("{url} {what}"))
}
