//! An image in a message: the bytes Tollgate keeps (named by their SHA-256, stored once per
//! tenant and day outside the job's row and its queue message), or a URL not fetched yet (a batch
//! item's, which the worker fetches before the item's first call).
//!
//! A client gives an image as a `data:` URL, as bare base64 (Ollama) or as an `http(s)` URL; the
//! bytes must be a PNG, JPEG, WebP or GIF (told by their first bytes, whatever a client declared).
//! A job's row holds `{"type": "image", "media_type", "sha256"}`; the worker loads the bytes into
//! [`KeptImage::data`] before a provider call, and each provider client writes them in its form
//! (bare base64 for Ollama, a `data:` URL for OpenAI).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The default for the largest image taken, in bytes (settable per deployment).
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 20 * 1024 * 1024;
/// Longest image URL taken (a `data:` URL excepted: its length is its image's).
pub const MAX_IMAGE_URL_LEN: usize = 2048;

/// An image, and how closely the model should look at it (OpenAI's `detail`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ImageFields", into = "ImageFields")]
pub struct Image {
    pub source: ImageSource,
    pub detail: Option<ImageDetail>,
}

/// Where an image's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Bytes Tollgate keeps.
    Kept(KeptImage),
    /// A URL to fetch: as a client gave it until intake reads it (a `data:` URL is decoded and an
    /// `http(s)` one fetched there), and a batch item's until the worker fetches it.
    Url(String),
}

/// An image's bytes as Tollgate keeps them: their type and hash, and the bytes themselves once
/// read (at intake) or loaded (by the worker, for the call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptImage {
    pub media_type: MediaType,
    /// The bytes' SHA-256, in lowercase hex: the image's name within its tenant's day.
    pub sha256: String,
    pub data: Option<Bytes>,
}

/// How closely the model looks at an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageDetail {
    Auto,
    Low,
    High,
    /// The Responses API's: the image as sent, not resized.
    Original,
}

impl ImageDetail {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Low => "low",
            Self::High => "high",
            Self::Original => "original",
        }
    }
}

/// The image types every provider takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum MediaType {
    #[serde(rename = "image/png")]
    Png,
    #[serde(rename = "image/jpeg")]
    Jpeg,
    #[serde(rename = "image/webp")]
    Webp,
    #[serde(rename = "image/gif")]
    Gif,
}

impl MediaType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
            Self::Gif => "image/gif",
        }
    }

    /// The type the bytes are, by their signature; `None` for anything else.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some(Self::Png),
            [0xFF, 0xD8, 0xFF, ..] => Some(Self::Jpeg),
            [
                b'R',
                b'I',
                b'F',
                b'F',
                _,
                _,
                _,
                _,
                b'W',
                b'E',
                b'B',
                b'P',
                ..,
            ] => Some(Self::Webp),
            [b'G', b'I', b'F', b'8', b'7' | b'9', b'a', ..] => Some(Self::Gif),
            _ => None,
        }
    }

    /// A type as a `Content-Type` or a `data:` URL names it (parameters ignored).
    pub fn from_name(name: &str) -> Option<Self> {
        let essence = name.split(';').next()?.trim().to_ascii_lowercase();
        match essence.as_str() {
            "image/png" => Some(Self::Png),
            "image/jpeg" | "image/jpg" => Some(Self::Jpeg),
            "image/webp" => Some(Self::Webp),
            "image/gif" => Some(Self::Gif),
            _ => None,
        }
    }
}

/// Why an image was refused; the text says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ImageRefused(pub String);

impl KeptImage {
    /// Bytes a client sent (or a URL answered with): a PNG, JPEG, WebP or GIF of at most
    /// `max_bytes`, named by its hash.
    pub fn read(data: Bytes, max_bytes: usize) -> Result<Self, ImageRefused> {
        if data.len() > max_bytes {
            return Err(ImageRefused(format!(
                "the image is {} bytes, over the limit of {max_bytes}",
                data.len()
            )));
        }
        let media_type = MediaType::sniff(&data)
            .ok_or_else(|| ImageRefused("is not a PNG, JPEG, WebP or GIF image".to_owned()))?;
        Ok(Self {
            media_type,
            sha256: hex::encode(Sha256::digest(&data)),
            data: Some(data),
        })
    }

    /// Bare standard base64 (Ollama's `images`), whose decoded size is at most `max_bytes`.
    pub fn decode(base64: &str, max_bytes: usize) -> Result<Self, ImageRefused> {
        // Four characters make three bytes: a text this long cannot fit, and is not decoded.
        let longest = max_bytes.div_ceil(3) * 4;
        if base64.len() > longest {
            return Err(ImageRefused(format!(
                "the image is over the limit of {max_bytes} bytes"
            )));
        }
        let data = STANDARD.decode(base64.trim()).map_err(|error| {
            ImageRefused(format!(
                "is not standard base64 (without a data: prefix): {error}"
            ))
        })?;
        Self::read(Bytes::from(data), max_bytes)
    }

    /// The bytes in standard base64, as providers take them; `None` until they are loaded.
    pub fn base64(&self) -> Option<String> {
        self.base64_after("")
    }

    /// `prefix` and then the bytes in standard base64, in one string sized for both (a `data:`
    /// URL); `None` until the bytes are loaded.
    pub fn base64_after(&self, prefix: &str) -> Option<String> {
        let data = self.data.as_ref()?;
        let mut text = String::with_capacity(prefix.len() + data.len().div_ceil(3) * 4);
        text.push_str(prefix);
        STANDARD.encode_string(data, &mut text);
        Some(text)
    }

    /// The hash as bytes, as `images` keys them.
    pub fn digest(&self) -> Vec<u8> {
        hex::decode(&self.sha256).unwrap_or_default()
    }
}

impl Image {
    /// An image a client gave by URL: a `data:` URL is read at once (its bytes kept); an
    /// `http(s)` URL is checked for its form and left to be fetched.
    pub fn from_url(
        url: &str,
        detail: Option<ImageDetail>,
        max_bytes: usize,
    ) -> Result<Self, ImageRefused> {
        let source = match url.strip_prefix("data:") {
            Some(data) => ImageSource::Kept(read_data_url(data, max_bytes)?),
            None => ImageSource::Url(web_url(url)?),
        };
        Ok(Self { source, detail })
    }

    /// The image's bytes, if they are kept (and loaded).
    pub fn kept(&self) -> Option<&KeptImage> {
        match &self.source {
            ImageSource::Kept(kept) => Some(kept),
            ImageSource::Url(_) => None,
        }
    }
}

/// `<media type>[;base64],<data>` after `data:`: base64 only (a percent-encoded image is not
/// something clients send); the bytes decide the type.
fn read_data_url(data: &str, max_bytes: usize) -> Result<KeptImage, ImageRefused> {
    let (head, body) = data
        .split_once(',')
        .ok_or_else(|| ImageRefused("is a data: URL without a comma before its data".into()))?;
    if !head.ends_with(";base64") {
        return Err(ImageRefused(
            "is a data: URL that is not base64 (`data:image/png;base64,…`)".into(),
        ));
    }
    KeptImage::decode(body, max_bytes)
}

/// An image URL to fetch: absolute `http` or `https` with a host and no credentials.
fn web_url(raw: &str) -> Result<String, ImageRefused> {
    let refused = |why: &str| Err(ImageRefused(why.to_owned()));
    if raw.len() > MAX_IMAGE_URL_LEN {
        return refused("is a URL of more than 2048 characters");
    }
    let Ok(url) = url::Url::parse(raw) else {
        return refused("must be a data: URL or an absolute http(s) URL");
    };
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return refused("must be a data: URL or an absolute http(s) URL");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return refused("must not carry credentials");
    }
    Ok(url.to_string())
}

/// An image as `jobs.request` holds it (and the native API takes it: `url` only).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ConversationImage)]
#[serde(deny_unknown_fields)]
struct ImageFields {
    /// A `data:` URL or an `http(s)` URL (the native API's form), or a batch item's URL not yet
    /// fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    /// A kept image's type and hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<MediaType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<ImageDetail>,
}

// An image is written as its fields.
super::schema_as_written!(Image, ImageFields, "ConversationImage");

impl TryFrom<ImageFields> for Image {
    type Error = String;

    fn try_from(fields: ImageFields) -> Result<Self, String> {
        let source = match fields {
            ImageFields {
                url: Some(url),
                media_type: None,
                sha256: None,
                ..
            } => ImageSource::Url(url),
            ImageFields {
                url: None,
                media_type: Some(media_type),
                sha256: Some(sha256),
                ..
            } if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) => {
                ImageSource::Kept(KeptImage {
                    media_type,
                    sha256: sha256.to_ascii_lowercase(),
                    data: None,
                })
            }
            _ => return Err("an image is given by its `url`".to_owned()),
        };
        Ok(Self {
            source,
            detail: fields.detail,
        })
    }
}

impl From<Image> for ImageFields {
    fn from(image: Image) -> Self {
        let (url, media_type, sha256) = match image.source {
            ImageSource::Url(url) => (Some(url), None, None),
            ImageSource::Kept(kept) => (None, Some(kept.media_type), Some(kept.sha256)),
        };
        Self {
            url,
            media_type,
            sha256,
            detail: image.detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The smallest PNG: a 1×1 transparent pixel.
    pub const PIXEL_PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

    #[test]
    fn a_data_url_is_read_into_kept_bytes_named_by_their_hash() {
        let url = format!("data:image/png;base64,{PIXEL_PNG}");
        let image = Image::from_url(&url, Some(ImageDetail::Low), 1024).expect("an image");
        let kept = image.kept().expect("kept");
        assert_eq!(kept.media_type, MediaType::Png);
        assert_eq!(kept.sha256.len(), 64);
        assert_eq!(kept.base64().as_deref(), Some(PIXEL_PNG));
        let stored = serde_json::to_value(&image).expect("writable");
        assert_eq!(
            stored,
            json!({ "media_type": "image/png", "sha256": kept.sha256, "detail": "low" }),
            "the row holds the hash, never the bytes"
        );
        let read: Image = serde_json::from_value(stored).expect("readable");
        assert_eq!(read.kept().map(|k| &k.sha256), Some(&kept.sha256));
        assert_eq!(read.kept().and_then(|k| k.data.as_ref()), None);
    }

    #[test]
    fn the_bytes_decide_the_type_and_the_limit_holds() {
        let declared_jpeg = format!("data:image/jpeg;base64,{PIXEL_PNG}");
        let image = Image::from_url(&declared_jpeg, None, 1024).expect("an image");
        assert_eq!(image.kept().map(|k| k.media_type), Some(MediaType::Png));
        let text = format!("data:image/png;base64,{}", STANDARD.encode("not an image"));
        assert!(Image::from_url(&text, None, 1024).is_err());
        let too_big = Image::from_url(&format!("data:image/png;base64,{PIXEL_PNG}"), None, 10)
            .expect_err("over 10 bytes");
        assert!(too_big.0.contains("over the limit"), "{too_big}");
        assert!(KeptImage::decode("data:image/png;base64,AAAA", 1024).is_err());
        assert!(Image::from_url("data:image/png,%89PNG", None, 1024).is_err());
    }

    #[test]
    fn a_web_url_is_kept_to_be_fetched_and_others_are_refused() {
        let image = Image::from_url("https://example.com/a.png", None, 1024).expect("a URL");
        assert_eq!(
            image.source,
            ImageSource::Url("https://example.com/a.png".into())
        );
        for bad in [
            "ftp://example.com/a.png",
            "a.png",
            "https://u:p@example.com/a.png",
        ] {
            assert!(Image::from_url(bad, None, 1024).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stored_image_names_either_a_url_or_a_hash() {
        assert!(serde_json::from_value::<Image>(json!({ "url": "https://a.b/c.png" })).is_ok());
        assert!(serde_json::from_value::<Image>(json!({ "sha256": "ab" })).is_err());
        assert!(serde_json::from_value::<Image>(json!({})).is_err());
    }

    #[test]
    fn signatures_tell_the_four_types() {
        assert_eq!(
            MediaType::sniff(b"\xFF\xD8\xFF\xE0rest"),
            Some(MediaType::Jpeg)
        );
        assert_eq!(MediaType::sniff(b"GIF89a...."), Some(MediaType::Gif));
        assert_eq!(
            MediaType::sniff(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(MediaType::Webp)
        );
        assert_eq!(MediaType::sniff(b"BM...."), None);
        assert_eq!(
            MediaType::from_name("image/JPG; q=1"),
            Some(MediaType::Jpeg)
        );
    }
}
