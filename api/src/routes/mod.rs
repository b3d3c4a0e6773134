//! The router: every route, the fallbacks that keep even unknown routes problem+json, and the
//! layers every request passes through. Each route is registered from its handler's
//! `#[utoipa::path]` (`utoipa_axum::routes!`), which describes it in the OpenAPI document too
//! ([`openapi`]); `api/clippy.toml` refuses a route added any other way.

mod admin;
mod anthropic;
mod batch_events;
mod batches;
mod dashboard;
mod events;
mod health;
mod job_history;
mod jobs;
mod models;
mod ollama;
mod openai;
mod openapi;
mod paging;
mod tenancy;
mod usage;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Method, header};
use axum::{Extension, Router};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::http::{database, error::ApiError};
use crate::{ApiSettings, AppState};

pub fn router(state: AppState, settings: &ApiSettings) -> Router {
    let metrics = state.metrics.clone();
    let (routes, document) = routes(settings, &state.database).split_for_parts();
    let document = serde_json::to_string(&openapi::complete(document)).unwrap_or_else(|error| {
        tracing::error!(%error, "cannot write the OpenAPI document; /openapi.json answers empty");
        String::new()
    });
    let document = openapi::Document(document.into());
    routes
        .layer(Extension(document))
        .route_layer(axum::middleware::from_fn(crate::http::metrics::mark_route))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(settings.body_limit))
        // A body must arrive by its deadline (else 408); a refusal leaves the connection usable.
        .layer(axum::middleware::from_fn_with_state(
            settings.body_read_timeout,
            crate::http::request_body::guard,
        ))
        .layer(axum::middleware::from_fn(
            crate::access::limits::rate_headers,
        ))
        .layer(cors())
        // Until the response starts (an SSE body streams on past it); long enough for the longest
        // `Prefer: wait` and the longest sync call.
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            crate::http::prefer::MAX_WAIT.max(settings.sync_timeout) + Duration::from_secs(15),
        ))
        // 5xx answers are logged where they arise (internal errors) or are expected (503s).
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::WARN)))
        // Each request's span of its trace, and its count and time: one layer for both.
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::http::metrics::track,
        ))
        .with_state(state)
}

/// Every route, described.
fn routes(settings: &ApiSettings, database: &database::DatabaseHealth) -> OpenApiRouter<AppState> {
    // Every route but health's needs Postgres: while it is known to be down, 503 at once instead
    // of waiting on the pool (the OpenAI surface says so in its own shape).
    let needs_database = OpenApiRouter::new()
        .merge(jobs::router(settings.image_body_limit))
        .merge(job_history::router())
        .merge(events::router())
        .merge(batches::router(settings.batch_body_limit))
        .merge(batch_events::router())
        .merge(usage::router())
        .merge(models::router())
        .merge(admin::router())
        .layer(axum::middleware::from_fn_with_state(
            database.clone(),
            database::gate,
        ));
    OpenApiRouter::new()
        .merge(health::router())
        .merge(dashboard::router())
        .merge(needs_database)
        .nest("/openai/v1", openai::router(settings, database.clone()))
        .nest(
            "/ollama",
            ollama::router(settings.image_body_limit, database.clone()),
        )
        .nest(
            "/anthropic",
            anthropic::router(settings.image_body_limit, database.clone()),
        )
}

/// A route whose body may carry images inline: it takes bodies up to `limit` (the image body
/// limit) where the others take the ordinary limit.
pub(crate) fn images_inline(
    (schemas, paths, route): UtoipaMethodRouter<AppState>,
    limit: usize,
) -> UtoipaMethodRouter<AppState> {
    (schemas, paths, route.layer(DefaultBodyLimit::max(limit)))
}

/// A drop-in surface's routes: answered 503 at once while Postgres is known to be down, with the
/// api's 404 and 405 for what it lacks, and every problem+json answer rewritten in the surface's
/// error shape by `render` (see [`crate::http::error::in_dialect`]).
fn surface(
    routes: OpenApiRouter<AppState>,
    database: database::DatabaseHealth,
    render: fn(axum::http::StatusCode, &crate::http::error::Problem) -> serde_json::Value,
) -> OpenApiRouter<AppState> {
    let (routes, document) = routes.split_for_parts();
    let routes = routes
        .layer(axum::middleware::from_fn_with_state(
            database,
            database::gate,
        ))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::map_response(
            move |response: axum::response::Response| {
                crate::http::error::in_dialect(response, render)
            },
        ));
    OpenApiRouter::with_openapi(document).merge(routes.into())
}

/// CORS for browser clients. A preflight carries no token, so it is answered for any origin; the
/// request itself is then held to its token's allowed domains (403 `origin_not_allowed`), so a
/// browser can only ever use a token from the origins the token allows.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("prefer"),
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("anthropic-version"),
            HeaderName::from_static("anthropic-beta"),
        ])
        .expose_headers([
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("preference-applied"),
        ])
        .max_age(Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde_json::Value;

    use super::*;
    use crate::http::error::ErrorCode;
    use tollgate_core::domain::JobErrorCode;

    /// The document as served, as JSON.
    fn document() -> Value {
        let routes = routes(
            &ApiSettings::default(),
            &database::DatabaseHealth::default(),
        );
        serde_json::to_value(openapi::complete(routes.into_openapi())).expect("serializes")
    }

    /// Every operation: its method, path and description.
    fn operations(document: &Value) -> Vec<(String, String, Value)> {
        let paths = document["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                let item = item.as_object().expect("path item");
                item.iter()
                    .map(|(method, operation)| (method.clone(), path.clone(), operation.clone()))
            })
            .collect()
    }

    /// Every `$ref` in `value`.
    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.push(target);
                }
                map.values().for_each(|v| refs(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_names_a_schema_of_the_document() {
        let document = document();
        let mut found = Vec::new();
        refs(&document, &mut found);
        assert!(found.len() > 100, "the operations refer to their types");
        for target in found {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{target} is a schema reference"));
            assert!(
                document["components"]["schemas"][name].is_object(),
                "{target} is in the document"
            );
        }
    }

    #[test]
    fn every_operation_is_summed_up_answered_and_named_once() {
        let document = document();
        let operations = operations(&document);
        assert!(operations.len() >= 85, "{} operations", operations.len());
        let mut ids = HashSet::new();
        for (method, path, operation) in &operations {
            assert!(
                !path.contains('*'),
                "{path}: OpenAPI's parameters, not axum's"
            );
            let summary = operation["summary"].as_str().unwrap_or_default();
            assert!(!summary.is_empty(), "{method} {path} has a summary");
            let responses = operation["responses"].as_object().expect("responses");
            assert!(
                responses
                    .keys()
                    .any(|status| status.starts_with('2') || status == "308"),
                "{method} {path} says what it answers"
            );
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        response["content"].is_object(),
                        "{method} {path} {status} has a body"
                    );
                }
            }
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "{id} is unique");
        }
    }

    #[test]
    fn every_route_but_the_public_ones_asks_for_a_token() {
        let document = document();
        for (method, path, operation) in operations(&document) {
            let public = openapi::PUBLIC.contains(&path.as_str());
            assert_eq!(operation["security"].is_array(), !public, "{method} {path}");
            if !public {
                assert!(operation["responses"]["401"].is_object(), "{method} {path}");
            }
        }
    }

    #[test]
    fn the_error_codes_are_listed_as_the_enum_writes_them() {
        let document = document();
        let listed = &document["components"]["schemas"]["ErrorCode"]["enum"];
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(listed, &serde_json::json!(codes));
        assert_eq!(
            document["components"]["schemas"]["Problem"]["properties"]["code"]["$ref"],
            "#/components/schemas/ErrorCode"
        );
    }

    #[test]
    fn every_variable_the_document_names_is_one_the_binaries_read() {
        let text = serde_json::to_string(&document()).expect("serializes");
        let known = include_str!("../../../.env.example");
        let named: HashSet<&str> = text
            .match_indices("TOLLGATE_")
            .map(|(at, _)| {
                let rest = &text[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        assert!(!named.is_empty());
        for variable in named {
            assert!(
                known.contains(&format!("{variable}=")),
                "{variable} is not in .env.example"
            );
        }
    }

    #[test]
    fn every_job_error_code_is_listed_and_described() {
        let document = document();
        let schema = &document["components"]["schemas"]["JobErrorCode"];
        let codes: Vec<String> = JobErrorCode::known()
            .map(|code| code.as_str().to_owned())
            .collect();
        assert_eq!(schema["anyOf"][0]["enum"], serde_json::json!(codes));
        let described = schema["description"].as_str().unwrap_or_default();
        for code in JobErrorCode::known() {
            assert!(
                described.contains(&format!("`{}` ({})", code.as_str(), code.class().as_str())),
                "{code} is described with its class"
            );
        }
        assert_eq!(
            document["components"]["schemas"]["JobError"]["properties"]["code"]["$ref"],
            "#/components/schemas/JobErrorCode"
        );
    }

    /// Each `ToSchema` type's name in the document (its `#[schema(as = …)]`, else its own) in the
    /// Rust files under `dir`.
    fn schema_names(dir: &std::path::Path, names: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                schema_names(&path, names);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let mut derived = false;
            let mut renamed = None;
            for line in text.lines().map(str::trim) {
                if line.starts_with("#[derive(") && line.contains("ToSchema") {
                    derived = true;
                } else if let Some(name) = line.strip_prefix("#[schema(as = ") {
                    renamed = Some(name.trim_end_matches(")]").to_owned());
                } else if derived && !line.starts_with("#[") && !line.starts_with("///") {
                    // `pub(super) struct X`: the visibility's parentheses are not the item's.
                    let line = match line.strip_prefix("pub(") {
                        Some(rest) => rest.split_once(") ").map_or(rest, |(_, item)| item),
                        None => line,
                    };
                    let item = line.split(['{', '(', '<', ';']).next().unwrap_or_default();
                    let own = item.split_whitespace().last().unwrap_or_default();
                    let name = renamed.take().unwrap_or_else(|| own.to_owned());
                    names.push((name, path.display().to_string()));
                    derived = false;
                }
            }
        }
    }

    /// utoipa keeps the last schema given a name: two types under one name would have one of
    /// them described as the other.
    #[test]
    fn every_schema_name_belongs_to_one_type() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut names = Vec::new();
        schema_names(&root.join("src"), &mut names);
        schema_names(&root.join("../shared/src"), &mut names);
        assert!(names.len() > 100, "{} types found", names.len());
        let mut seen = std::collections::HashMap::new();
        for (name, file) in names {
            if let Some(first) = seen.insert(name.clone(), file.clone()) {
                panic!("{name} names a type in {first} and one in {file}");
            }
        }
    }
}
