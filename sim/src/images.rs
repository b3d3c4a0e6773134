//! Images as each vendor takes them — Ollama's bare standard base64 (a `data:` prefix is its 400,
//! `illegal base64 data at input byte 4`), OpenAI's content parts whose `image_url` is a `data:`
//! URL (the sim takes no other: Tollgate sends the bytes, never a URL) — and what the sim answers
//! when it is shown some: each image's type, size and the start of its SHA-256, so a test can see
//! the very bytes it sent arrive.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Decodes Ollama's `images`, as Ollama does.
pub fn bare(images: &[String]) -> Result<Vec<Vec<u8>>, String> {
    images
        .iter()
        .map(|image| {
            STANDARD
                .decode(image)
                .map_err(|error| format!("illegal base64 data at input byte {}", offset(&error)))
        })
        .collect()
}

fn offset(error: &base64::DecodeError) -> usize {
    match error {
        base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => {
            *at
        }
        _ => 0,
    }
}

/// The images of Chat Completions messages: every `image_url` part's `data:` URL, decoded.
pub fn in_parts(messages: &Value) -> Result<Vec<Vec<u8>>, String> {
    let parts = messages
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|message| message["content"].as_array())
        .flatten()
        .filter(|part| part["type"] == "image_url");
    parts
        .map(|part| {
            let url = part["image_url"]["url"].as_str().unwrap_or_default();
            let data = url
                .strip_prefix("data:image/")
                .and_then(|rest| rest.split_once(";base64,"))
                .map(|(_, data)| data)
                .ok_or_else(|| {
                    "Invalid image_url: the sim takes images only as data: URLs".to_owned()
                })?;
            STANDARD
                .decode(data)
                .map_err(|error| format!("Invalid base64 image data: {error}"))
        })
        .collect()
}

/// What the sim says it sees: `None` when shown no image.
pub fn seen(images: &[Vec<u8>]) -> Option<String> {
    if images.is_empty() {
        return None;
    }
    let each: Vec<String> = images
        .iter()
        .map(|bytes| {
            let digest = hex(&Sha256::digest(bytes)[..4]);
            format!("{} of {} bytes (sha256 {digest})", kind(bytes), bytes.len())
        })
        .collect();
    Some(format!(
        "I see {} image(s): {}.",
        images.len(),
        each.join("; ")
    ))
}

fn kind(bytes: &[u8]) -> &'static str {
    match bytes {
        [0x89, b'P', b'N', b'G', ..] => "a PNG",
        [0xFF, 0xD8, 0xFF, ..] => "a JPEG",
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
        ] => "a WebP",
        [b'G', b'I', b'F', ..] => "a GIF",
        _ => "an unknown image",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
