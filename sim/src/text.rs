//! Deterministic output: the same input always gives the same words, vector and token counts.

use sha2::{Digest as _, Sha256};

const WORDS: [&str; 32] = [
    "the", "gateway", "answers", "every", "request", "with", "care", "and", "a", "steady", "queue",
    "keeps", "work", "moving", "through", "workers", "that", "bill", "tokens", "to", "tenants",
    "while", "models", "run", "locally", "or", "in", "cloud", "fast", "reliable", "clear", "text",
];

/// Dimensions of the sim's embeddings.
pub const EMBEDDING_DIMENSIONS: usize = 16;

/// A reply of 8 to 39 words chosen by the input's hash (or exactly `words`), cut to `max_tokens`
/// words.
pub fn reply(input: &str, max_tokens: Option<u32>, words: Option<u32>) -> Vec<&'static str> {
    let hash = Sha256::digest(input.as_bytes());
    let mut len = words.map_or(8 + usize::from(hash[0] % 32), |w| w as usize);
    if let Some(max) = max_tokens {
        len = len.min(max as usize).max(1);
    }
    (0..len)
        .map(|i| WORDS[usize::from(hash[i % 32] ^ (i as u8)) % WORDS.len()])
        .collect()
}

/// Why a reply of `words` ended: `length` when it reached `max_tokens`, else `stop`.
pub fn stop_reason(words: usize, max_tokens: Option<u32>) -> &'static str {
    match max_tokens {
        Some(max) if words >= max as usize => "length",
        _ => "stop",
    }
}

/// A reply's words as the pieces a stream sends: the first bare, each next one with its space.
pub fn pieces(words: &[&str]) -> Vec<String> {
    words
        .iter()
        .enumerate()
        .map(|(i, word)| match i {
            0 => (*word).to_owned(),
            _ => format!(" {word}"),
        })
        .collect()
}

/// Roughly four characters a token, at least one.
pub fn count_tokens(input: &str) -> i32 {
    i32::try_from(input.chars().count().div_ceil(4).max(1)).unwrap_or(i32::MAX)
}

/// A unit-length vector derived from the text, of `dimensions` (at most the sim's own).
pub fn embedding(input: &str, dimensions: Option<usize>) -> Vec<f32> {
    let hash = Sha256::digest(input.as_bytes());
    let raw: Vec<f32> = hash
        .iter()
        .take(
            dimensions
                .unwrap_or(EMBEDDING_DIMENSIONS)
                .min(EMBEDDING_DIMENSIONS),
        )
        .map(|&b| f32::from(b) - 127.5)
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    raw.into_iter().map(|x| x / norm).collect()
}

/// 24 hex digits derived from `input`: ids that are the same for the same input.
pub fn hex_id(input: &str) -> String {
    Sha256::digest(input.as_bytes())
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Log probabilities for the pieces of an answer, as OpenAI (`logprobs.content`) and Ollama
/// (`logprobs`) both write them: each piece a token with its log probability and bytes, and
/// `top` alternatives, the piece itself the likeliest.
pub fn logprobs(pieces: &[String], top: usize) -> Vec<serde_json::Value> {
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let logprob = -0.05 - 0.25 * (i % 7) as f64;
            let alternatives: Vec<serde_json::Value> = (0..top)
                .map(|k| {
                    let token = if k == 0 {
                        piece.clone()
                    } else {
                        format!("alt{k}")
                    };
                    serde_json::json!({ "token": token, "logprob": logprob - k as f64,
                                        "bytes": token.as_bytes() })
                })
                .collect();
            serde_json::json!({ "token": piece, "logprob": logprob, "bytes": piece.as_bytes(),
                                "top_logprobs": alternatives })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_input_gives_the_same_reply_and_max_tokens_cuts_it() {
        assert_eq!(reply("hello", None, None), reply("hello", None, None));
        assert_ne!(reply("hello", None, None), reply("goodbye", None, None));
        assert_eq!(reply("hello", Some(3), None).len(), 3);
    }

    #[test]
    fn embeddings_have_unit_length() {
        let v = embedding("hello", None);
        assert_eq!(v.len(), EMBEDDING_DIMENSIONS);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}
