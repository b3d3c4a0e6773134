//! The OpenAPI 3.1 document at `GET /openapi.json`, derived rather than kept by hand: each route's
//! `#[utoipa::path]` (beside its handler) and the types it reads and answers (`ToSchema`) make the
//! operations, and the router is built from those same annotations (`utoipa_axum::routes!`), so a
//! route cannot be served without being described.
//!
//! This module adds what every operation shares: the document's title, the bearer scheme on every
//! route but the public ones, the error answers each surface gives to any request (401, 429, 503;
//! 403 on admin routes), and the body of every error answer in its surface's shape: problem+json
//! natively, OpenAI's `{"error": {…}}` under `/openai/v1`, Ollama's `{"error"}` under `/ollama`.

use axum::body::Bytes;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Components, Content, InfoBuilder, OpenApi, Ref, RefOr, Response, Tag};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::anthropic::AnthropicError;
use super::ollama::OllamaError;
use super::openai::OpenAiError;
use crate::http::error::Problem;

/// The document as served, written once when the router is built (shared, not copied, by each
/// request).
#[derive(Clone)]
pub struct Document(pub Bytes);

/// The headers a job's submission may carry.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(
    dead_code,
    reason = "describes headers the handlers read from the request"
)]
pub struct Submitting {
    /// A retry with the same key and body gets the first answer instead of a second job; the
    /// same key with another body is 422 `idempotency_key_reused`, and while the first request
    /// is still handled, 409 `idempotency_key_in_use`.
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
    /// `wait=N` (at most 60): answer 200 with the finished job if it ends within N seconds
    /// (`Preference-Applied` says so), else 202 as usual.
    #[param(rename = "Prefer")]
    prefer: Option<String>,
}

/// The routes anyone may call: no bearer token.
pub const PUBLIC: [&str; 8] = [
    "/anthropic",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/dashboard",
    "/dashboard/",
    "/dashboard/{file}",
];

/// The tags, in the order a reader meets them.
const TAGS: [(&str, &str); 9] = [
    (
        "Jobs",
        "Submit generation, chat and embedding jobs; read, follow and cancel them",
    ),
    (
        "Batches",
        "Many items of one kind, scheduled fairly, with their results",
    ),
    ("Usage", "Tokens and spend, for the caller's tenant"),
    (
        "Admin",
        "Operators only: settings, routes, hosts, tenants, tokens, prices, webhooks, dead letters",
    ),
    (
        "OpenAI",
        "OpenAI's API under /openai/v1: change only the base URL and the key",
    ),
    (
        "Ollama",
        "Ollama's API under /ollama: change only the host (and send a bearer token)",
    ),
    (
        "Anthropic",
        "Anthropic's Messages API under /anthropic: change only the base URL and the key (Claude Code too)",
    ),
    ("Dashboard", "The operator's pages in the browser"),
    ("Service", "Liveness, readiness, metrics and this document"),
];

/// The surface a path belongs to, which decides its error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Surface {
    Native,
    OpenAi,
    Ollama,
    Anthropic,
}

impl Surface {
    fn of(path: &str) -> Self {
        if path.starts_with("/openai/") {
            Self::OpenAi
        } else if path.starts_with("/ollama/") {
            Self::Ollama
        } else if path.starts_with("/anthropic") {
            Self::Anthropic
        } else {
            Self::Native
        }
    }

    /// The content of this surface's error answers.
    fn error_content(self) -> (&'static str, Content) {
        let (media, schema) = match self {
            Self::Native => ("application/problem+json", Problem::name()),
            Self::OpenAi => ("application/json", OpenAiError::name()),
            Self::Ollama => ("application/json", OllamaError::name()),
            Self::Anthropic => ("application/json", AnthropicError::name()),
        };
        let schema = RefOr::Ref(Ref::from_schema_name(schema));
        (media, Content::new(Some(schema)))
    }
}

/// Completes the document the routes made: its frame, the bearer scheme, the shared error
/// answers and their bodies, and OpenAPI's `{name}` for axum's catch-all `{*name}` segments.
pub fn complete(mut api: OpenApi) -> OpenApi {
    api.info = InfoBuilder::new()
        .title("Tollgate")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Queue-based AI gateway: submit generation, chat and embedding jobs; read their \
             results. Operators switch providers, manage aliases and requeue dead letters at run \
             time. Every error answer carries a stable `code` (the `ErrorCode` schema lists them).",
        ))
        .build();
    api.tags = Some(
        TAGS.iter()
            .map(|(name, about)| {
                let mut tag = Tag::new(*name);
                tag.description = Some((*about).to_owned());
                tag
            })
            .collect(),
    );
    let components = api.components.get_or_insert_with(Components::new);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    for (name, schema) in [
        (Problem::name(), Problem::schema()),
        (OpenAiError::name(), OpenAiError::schema()),
        (OllamaError::name(), OllamaError::schema()),
        (AnthropicError::name(), AnthropicError::schema()),
    ] {
        components.schemas.insert(name.into_owned(), schema);
    }
    let mut schemas = Vec::new();
    Problem::schemas(&mut schemas);
    OpenAiError::schemas(&mut schemas);
    AnthropicError::schemas(&mut schemas);
    components.schemas.extend(schemas);
    api.paths.paths = std::mem::take(&mut api.paths.paths)
        .into_iter()
        .map(|(path, mut item)| {
            let path = openapi_path(&path);
            let surface = Surface::of(&path);
            let public = PUBLIC.contains(&path.as_str());
            for (method, operation) in operations(&mut item) {
                operation.operation_id = Some(operation_id(method, &path));
                let admin = operation
                    .tags
                    .as_ref()
                    .is_some_and(|tags| tags.iter().any(|tag| tag == "Admin"));
                complete_operation(operation, surface, public, admin);
            }
            (path, item)
        })
        .collect();
    api
}

/// A path's operations with their methods, whichever it has.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("patch", &mut item.patch),
    ]
    .into_iter()
    .filter_map(|(method, operation)| Some((method, operation.as_mut()?)))
}

/// An operation's id from its method and path (`get_v1_jobs_id`): unique, as OpenAPI requires,
/// where handler names repeat from one file to the next (`list`, `show`).
fn operation_id(method: &str, path: &str) -> String {
    let words = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty());
    let slash = (path.len() > 1 && path.ends_with('/')).then_some("slash");
    std::iter::once(method)
        .chain(words)
        .chain(slash)
        .collect::<Vec<_>>()
        .join("_")
}

/// axum's catch-all segment `{*name}` is OpenAPI's `{name}` (its value may hold `/`).
fn openapi_path(path: &str) -> String {
    path.replace("{*", "{")
}

fn complete_operation(operation: &mut Operation, surface: Surface, public: bool, admin: bool) {
    if !public {
        operation.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        let forbidden = if admin { ADMIN_403 } else { CLIENT_403 };
        for (status, description) in SHARED_ERRORS.iter().chain([&forbidden]) {
            operation
                .responses
                .responses
                .entry((*status).to_owned())
                .or_insert_with(|| RefOr::T(Response::new(*description)));
        }
    }
    let (media, content) = surface.error_content();
    for (status, response) in operation.responses.responses.iter_mut() {
        let is_error = status.starts_with('4') || status.starts_with('5');
        if let (true, RefOr::T(response)) = (is_error, response)
            && response.content.is_empty()
        {
            response.content.insert(media.to_owned(), content.clone());
        }
    }
}

/// The error answers any request with a token may get, whatever its route.
const SHARED_ERRORS: [(&str, &str); 3] = [
    (
        "401",
        "No token, or an unknown, revoked or disabled one (`missing_token`, `invalid_token`)",
    ),
    (
        "429",
        "A rate limit or quota is reached (`rate_limited`, `quota_exceeded`); `Retry-After` says \
         when to come back",
    ),
    (
        "503",
        "Postgres or RabbitMQ is unavailable (`service_unavailable`): nothing was written; \
         `Retry-After` says when to retry",
    ),
];

const ADMIN_403: (&str, &str) = (
    "403",
    "A client token on an operator's route (`forbidden`), or the token's origin or address rules \
     refused the request",
);

const CLIENT_403: (&str, &str) = (
    "403",
    "The token's origin or address rules refused the request (`origin_required`, \
     `origin_not_allowed`, `ip_not_allowed`)",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_id_is_its_method_and_path() {
        assert_eq!(operation_id("get", "/v1/jobs/{id}"), "get_v1_jobs_id");
        assert_eq!(
            operation_id("post", "/openai/v1/chat/completions"),
            "post_openai_v1_chat_completions"
        );
        assert_eq!(operation_id("get", "/dashboard/"), "get_dashboard_slash");
    }

    #[test]
    fn a_catch_all_segment_is_an_openapi_parameter() {
        assert_eq!(openapi_path("/v1/models/{*model}"), "/v1/models/{model}");
        assert_eq!(openapi_path("/v1/jobs/{id}"), "/v1/jobs/{id}");
    }

    #[test]
    fn each_surface_answers_errors_in_its_own_shape() {
        assert_eq!(Surface::of("/v1/jobs"), Surface::Native);
        assert_eq!(Surface::of("/openai/v1/models"), Surface::OpenAi);
        assert_eq!(Surface::of("/ollama/api/chat"), Surface::Ollama);
        assert_eq!(Surface::of("/anthropic/v1/messages"), Surface::Anthropic);
        let (media, _) = Surface::Native.error_content();
        assert_eq!(media, "application/problem+json");
    }
}
