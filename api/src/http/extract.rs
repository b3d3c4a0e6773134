//! The JSON body extractor: every way a body can be wrong becomes the right problem+json answer.
//!
//! 415 for a non-JSON content type, 413 over the body limit, 408 for a body that stalls, 400 for
//! JSON that does not parse, and 422 naming the field for JSON of the wrong shape (missing, unknown
//! or mistyped field) or holding a NUL character (Postgres stores none); and the query-string
//! extractor that answers a query of the wrong shape with a 422 on `query`, and one holding a NUL
//! with a 422 naming the parameter.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use tollgate_core::domain::{NUL_REFUSED, line_syntax_error, nul_in_json};

use crate::AppState;
use crate::http::error::ApiError;
use crate::http::request_body::BodyDeadline;

pub struct JsonBody<T>(pub T);

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>` field: tells a
/// field given as `null` (`Some(None)`) from one left out (`None`).
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(d).map(Some)
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::unsupported_media_type());
        }
        let bytes = body_bytes(req, state, state.body_limit).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// A JSON body that may carry images inline, with its size: its route takes bodies up to the
/// image body limit, and intake holds one past the ordinary limit to the images it carries
/// ([`crate::intake::images::read`]).
pub struct JsonWithImages<T> {
    pub body: T,
    pub size: usize,
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonWithImages<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::unsupported_media_type());
        }
        let bytes = body_bytes(req, state, state.image_body_limit).await?;
        refuse_large_without_images(&bytes, state)?;
        let body = parse(&bytes)?;
        Ok(Self {
            body,
            size: bytes.len(),
        })
    }
}

/// A body past the ordinary limit is refused at once, as any other route would, unless it may
/// carry images inline (a `data:` URL, or Ollama's `images`): then intake judges it by the
/// images it holds ([`crate::intake::images::read`]).
pub fn refuse_large_without_images(bytes: &[u8], state: &AppState) -> Result<(), ApiError> {
    let may_carry_images = || {
        memchr::memmem::find(bytes, b"data:").is_some()
            || memchr::memmem::find(bytes, b"\"images\"").is_some()
    };
    if bytes.len() > state.body_limit && !may_carry_images() {
        return Err(ApiError::too_large(state.body_limit));
    }
    Ok(())
}

/// The whole body: 413 over `limit` (the route's), 408 if it stalls, 400 if the client broke off.
pub async fn body_bytes(req: Request, state: &AppState, limit: usize) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(limit)
        } else if timed_out(&rejection) {
            ApiError::body_timeout()
        } else {
            ApiError::malformed(rejection.body_text())
        }
    })
}

/// Whether reading the body failed because the client did not send it in time.
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<BodyDeadline>())
}

pub fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(mime) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Deserializes, telling bad JSON (400) from JSON of the wrong shape (422 with the field's path).
/// Every JSON body and JSONL line passes here, so this is where a NUL character is refused (422
/// naming the field), before anything could try to store it.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_as(bytes, |e| format!("the body is not valid JSON: {e}"))
}

/// [`parse`] for one line of a JSONL body: a syntax error names the line and column once
/// (`line 150, column 50: not valid JSON: …`), not serde's `line 1` of the line alone.
pub fn parse_line<T: DeserializeOwned>(line: &str, number: usize) -> Result<T, ApiError> {
    parse_as(line.as_bytes(), |e| {
        let (column, message) = line_syntax_error(e);
        format!("line {number}, column {column}: not valid JSON: {message}")
    })
}

fn parse_as<T: DeserializeOwned>(
    bytes: &[u8],
    syntax: impl Fn(&serde_json::Error) -> String,
) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| shape_error(e, &syntax))?;
    deserializer
        .end()
        .map_err(|e| ApiError::malformed(syntax(&e)))?;
    if let Some(field) = nul_in_json(bytes) {
        return Err(ApiError::invalid_field(field, NUL_REFUSED));
    }
    Ok(value)
}

fn shape_error(
    error: serde_path_to_error::Error<serde_json::Error>,
    syntax: impl Fn(&serde_json::Error) -> String,
) -> ApiError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    if !inner.is_data() {
        return ApiError::malformed(syntax(&inner));
    }
    let message = inner.to_string();
    // serde reports missing and unknown fields at the parent's path, naming the field in backticks.
    let named = message
        .starts_with("missing field")
        .then_some(())
        .or_else(|| message.starts_with("unknown field").then_some(()))
        .and_then(|()| message.split('`').nth(1));
    let field = match (named, path.as_str()) {
        (Some(name), ".") => name.to_owned(),
        // An unknown field's path already ends with it; a missing one's is its parent.
        (Some(name), path) if path.ends_with(name) => path.to_owned(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, ".") => "body".to_owned(),
        (None, path) => path.to_owned(),
    };
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    ApiError::invalid_field(field, message)
}

/// A query string of the handler's shape; one that does not fit is a 422 on `query`, one with a
/// NUL character in a parameter a 422 naming it.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(name) = parts.uri.query().and_then(nul_parameter) {
            return Err(ApiError::invalid_field(name, NUL_REFUSED));
        }
        let Query(query) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid_field("query", e.body_text()))?;
        Ok(Self(query))
    }
}

/// The name of the first query parameter holding a NUL (`%00`), if any.
fn nul_parameter(query: &str) -> Option<String> {
    if !query.contains("%00") {
        return None;
    }
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, value)| name.contains('\0') || value.contains('\0'))
        .map(|(name, _)| name.replace('\0', ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only parsed: the test is about the refusals")]
    struct Body {
        model: String,
        messages: Vec<Message>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only parsed: the test is about the refusals")]
    struct Message {
        role: String,
    }

    fn status_of(json: &str) -> u16 {
        parse::<Body>(json.as_bytes())
            .unwrap_err()
            .status()
            .as_u16()
    }

    #[test]
    fn broken_json_is_400_and_wrong_shapes_are_422() {
        assert_eq!(status_of("{\"model\": "), 400);
        assert_eq!(status_of("{\"model\": 5, \"messages\": []}"), 422);
        assert_eq!(
            status_of("{\"model\": \"m\", \"messages\": []} trailing"),
            400
        );
    }

    #[test]
    fn the_field_at_fault_is_named() {
        let field = |json: &str| parse::<Body>(json.as_bytes()).unwrap_err().field_name();
        assert_eq!(field("{\"messages\": []}"), Some("model".into()));
        assert_eq!(
            field("{\"model\": \"m\", \"messages\": [], \"extra\": 1}"),
            Some("extra".into())
        );
        assert_eq!(
            field("{\"model\": \"m\", \"messages\": [{\"role\": 1}]}"),
            Some("messages[0].role".into())
        );
        assert_eq!(
            field("{\"model\": \"m\", \"messages\": [{}]}"),
            Some("messages[0].role".into())
        );
    }

    #[test]
    fn a_nul_character_is_refused_naming_its_field() {
        let error = parse::<serde_json::Value>(br#"{"a": {"b": ["x\u0000"]}}"#).unwrap_err();
        assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error.field_name(), Some("a.b[0]".into()));
        assert_eq!(nul_parameter("limit=5&cursor=a%00b"), Some("cursor".into()));
        assert_eq!(nul_parameter("limit=5&cursor=ab"), None);
    }

    #[test]
    fn json_content_types_are_recognised() {
        let is = |v: &'static str| is_json(Some(&header::HeaderValue::from_static(v)));
        assert!(is("application/json"));
        assert!(is("application/json; charset=utf-8"));
        assert!(is("application/merge-patch+json"));
        assert!(!is("text/plain"));
        assert!(!is_json(None));
    }
}
