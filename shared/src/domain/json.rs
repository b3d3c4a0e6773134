//! Checks on JSON text at the edge.
//!
//! - NUL characters: Postgres stores none, in `text` or in a `jsonb` string, so a request carrying
//!   one is refused at the edge, naming where it is, instead of failing at the insert (a 500 that
//!   says nothing).
//! - Where a syntax error is, said once: for one line of a JSONL file serde's `at line 1 column N`
//!   would contradict the file's line number.

use std::fmt::Write as _;

use serde_json::Value;

/// The message every refusal of a NUL character carries.
pub const NUL_REFUSED: &str = "must not contain a NUL character (\\u0000)";

/// Where the first NUL character of a JSON document is: the path of the string holding it, or of
/// the object whose key holds it, written as the 422s name fields (`messages[0].content`,
/// `metadata`; `body` for the document itself). `None` when there is none, and for bytes that are
/// not JSON (their parser reports that).
pub fn nul_in_json(bytes: &[u8]) -> Option<String> {
    // In JSON a NUL can only be written as the escape `\u0000` (a raw control character is not
    // JSON), so a scan of the bytes clears nearly every document without parsing it again.
    memchr::memmem::find(bytes, br"\u0000")?;
    let value: Value = serde_json::from_slice(bytes).ok()?;
    nul_in_value(&value)
}

/// [`nul_in_json`] for a document already parsed.
pub fn nul_in_value(value: &Value) -> Option<String> {
    let mut path = String::new();
    find(value, &mut path).then(|| if path.is_empty() { "body".into() } else { path })
}

/// Whether `value` holds a NUL; if so `path` is left naming where.
fn find(value: &Value, path: &mut String) -> bool {
    let start = path.len();
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => {
            items.iter().enumerate().any(|(index, item)| {
                path.truncate(start);
                let _ = write!(path, "[{index}]");
                find(item, path)
            }) || {
                path.truncate(start);
                false
            }
        }
        Value::Object(fields) => {
            if fields.keys().any(|key| key.contains('\0')) {
                return true;
            }
            fields.iter().any(|(key, item)| {
                path.truncate(start);
                if start > 0 {
                    path.push('.');
                }
                path.push_str(key);
                find(item, path)
            }) || {
                path.truncate(start);
                false
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// A JSON syntax error of one line of a file: its column, and its message without serde's
/// `at line 1 column N`, for the caller to say after the file's own line number.
pub fn line_syntax_error(error: &serde_json::Error) -> (usize, String) {
    let message = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let bare = message.strip_suffix(&suffix).unwrap_or(&message).to_owned();
    (error.column(), bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(json: &str) -> Option<String> {
        nul_in_json(json.as_bytes())
    }

    #[test]
    fn the_string_holding_a_nul_is_named() {
        assert_eq!(
            at(r#"{"model": "m", "prompt": "a\u0000b"}"#),
            Some("prompt".into())
        );
        assert_eq!(
            at(r#"{"messages": [{"content": "ok"}, {"content": "\u0000"}]}"#),
            Some("messages[1].content".into())
        );
        assert_eq!(
            at(r#"{"input": ["a", "b\u0000"]}"#),
            Some("input[1]".into())
        );
        assert_eq!(
            at(r#"{"metadata": {"x": {"y": "\u0000"}}}"#),
            Some("metadata.x.y".into())
        );
        assert_eq!(at(r#""\u0000""#), Some("body".into()));
    }

    #[test]
    fn a_key_holding_a_nul_names_its_object() {
        assert_eq!(
            at(r#"{"metadata": {"k\u0000": 1}}"#),
            Some("metadata".into())
        );
        assert_eq!(at(r#"{"k\u0000": 1}"#), Some("body".into()));
    }

    #[test]
    fn a_lines_syntax_error_names_only_its_column() {
        let error = serde_json::from_str::<Value>(r#"{"a": 1 "b": 2}"#).expect_err("broken");
        assert_eq!(
            line_syntax_error(&error),
            (9, "expected `,` or `}`".to_owned())
        );
    }

    #[test]
    fn documents_without_a_nul_pass() {
        assert_eq!(at(r#"{"prompt": "plain", "n": [1, 2, {"a": null}]}"#), None);
        // An escaped backslash followed by `u0000` is six ordinary characters.
        assert_eq!(at(r#"{"prompt": "\\u0000"}"#), None);
        assert_eq!(at("not json \\u0000"), None);
    }
}
