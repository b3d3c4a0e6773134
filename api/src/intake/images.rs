//! A request's images, read at intake: each `data:` URL (or Ollama's bare base64) decoded, its
//! type told by its bytes and its size held to the limit; each `http(s)` URL of a single job
//! fetched (through the SSRF guard, see [`tollgate_core::image_fetch`]), so a bad URL is refused
//! before anything is written; a batch item's left to its worker, so a large batch is accepted
//! as fast as one without images. The bytes then go into Postgres with the job, never into its
//! row or its message.
//!
//! A body may be larger than the ordinary limit only for the images it carries inline.

use tollgate_core::domain::conversation::{Image, ImageSource, Part};
use tollgate_core::domain::{JobRequest, ValidItem};
use tollgate_core::image_fetch::FetchFailed;

use crate::AppState;
use crate::http::error::{ApiError, ErrorCode};

/// Where each image of a request was given, in the order the request shows them, as the
/// client's dialect names it (`messages[0].content[1]`, `input[2].content[0]`,
/// `messages[1].images[0]`); the surfaces note them as they translate.
#[derive(Debug, Default)]
pub struct ImagePlaces(Vec<String>);

impl ImagePlaces {
    pub fn note(&mut self, at: String) {
        self.0.push(at);
    }

    /// The places of a request given in Tollgate's own form (the native API's).
    pub fn native(request: &JobRequest) -> Self {
        let places = match request {
            JobRequest::Chat(chat) => chat
                .conversation
                .messages
                .iter()
                .enumerate()
                .flat_map(|(i, message)| {
                    message
                        .parts
                        .iter()
                        .enumerate()
                        .filter(|(_, part)| matches!(part, Part::Image(_)))
                        .map(move |(j, _)| format!("messages[{i}].content[{j}]"))
                })
                .collect(),
            JobRequest::Generate(generate) => (0..generate.images.len())
                .map(|k| format!("images[{k}]"))
                .collect(),
            JobRequest::Embedding(_) => Vec::new(),
        };
        Self(places)
    }

    /// The places of batch item `i`'s request (in the native API's form).
    pub fn of_item(i: usize, request: &JobRequest) -> Self {
        let places = Self::native(request).0;
        let within = |place| format!("items[{i}].{place}");
        Self(places.into_iter().map(within).collect())
    }

    /// Where image `k` was given.
    pub fn of(&self, k: usize) -> String {
        self.0
            .get(k)
            .cloned()
            .unwrap_or_else(|| format!("images[{k}]"))
    }
}

/// Reads `request`'s images (see the module's docs), fetching those given by URL; `body` is the
/// size of the body it came in, which only images sent inline may take past the ordinary limit.
pub async fn read(
    state: &AppState,
    request: &mut JobRequest,
    places: &ImagePlaces,
    body: usize,
) -> Result<(), ApiError> {
    let inline = read_given(state, request, places)?;
    if body > state.body_limit && !inline {
        return Err(ApiError::too_large(state.body_limit));
    }
    state
        .image_fetcher
        .fetch_all(request)
        .await
        .map_err(|(k, failed)| unfetched(places.of(k), failed))?;
    let total: usize = request
        .images()
        .iter()
        .filter_map(|image| image.kept().and_then(|kept| kept.data.as_ref()))
        .map(|data| data.len())
        .sum();
    if total > state.image_body_limit {
        return Err(refused(
            "messages".to_owned(),
            format!(
                "the request's images are {total} bytes in all, over the limit of {}",
                state.image_body_limit
            ),
        ));
    }
    Ok(())
}

/// Reads a batch's items' images: each `data:` URL decoded, each `http(s)` URL checked for its
/// form and left for the item's worker to fetch. A refusal names the item.
pub fn read_batch(state: &AppState, items: &mut [ValidItem]) -> Result<(), ApiError> {
    for (i, item) in items.iter_mut().enumerate() {
        let places = ImagePlaces::of_item(i, &item.request);
        read_given(state, &mut item.request, &places)?;
    }
    Ok(())
}

/// Decodes the images given inline and checks the form of the URLs to fetch; whether any was
/// given inline.
fn read_given(
    state: &AppState,
    request: &mut JobRequest,
    places: &ImagePlaces,
) -> Result<bool, ApiError> {
    let max_bytes = state.image_fetcher.limits().max_bytes;
    let mut inline = false;
    for (k, image) in request.images_mut().into_iter().enumerate() {
        let ImageSource::Url(url) = &image.source else {
            return Err(refused(places.of(k), "an image is given by its `url`"));
        };
        inline |= url.starts_with("data:");
        *image = Image::from_url(url, image.detail, max_bytes)
            .map_err(|why| refused(places.of(k), why.0))?;
    }
    Ok(inline)
}

/// Bare base64 (Ollama's `images`) as an image, read as a `data:` URL would be.
pub fn bare(base64: String) -> Image {
    Image {
        source: ImageSource::Url(format!("data:;base64,{base64}")),
        detail: None,
    }
}

fn refused(field: String, why: impl Into<String>) -> ApiError {
    ApiError::invalid_field(field, why).with_code(ErrorCode::InvalidImage)
}

fn unfetched(field: String, failed: FetchFailed) -> ApiError {
    let code = match failed.retryable {
        true => ErrorCode::ImageUnreachable,
        false => ErrorCode::InvalidImage,
    };
    ApiError::invalid_field(field, failed.message).with_code(code)
}
