//! `GET /dashboard`: the operators' dashboard, a page and its ES modules built into the binary
//! (nothing is fetched from anywhere at run time). It is a client of the public JSON API only: it
//! signs in with a token kept in the browser session and calls the same routes any client can.
//! Served with a strict Content-Security-Policy: scripts, styles and connections from this origin
//! only, no inline script or style, no frames, no forms posting elsewhere.

use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;
use crate::http::error::ApiError;

/// Every file of the dashboard: its path under `/dashboard/`, its content type and its text.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", JS, include_str!("../../dashboard/app.js")),
    ("api.js", JS, include_str!("../../dashboard/api.js")),
    ("ui.js", JS, include_str!("../../dashboard/ui.js")),
    ("style.css", CSS, include_str!("../../dashboard/style.css")),
    (
        "pages/overview.js",
        JS,
        include_str!("../../dashboard/pages/overview.js"),
    ),
    (
        "pages/settings.js",
        JS,
        include_str!("../../dashboard/pages/settings.js"),
    ),
    (
        "pages/usage.js",
        JS,
        include_str!("../../dashboard/pages/usage.js"),
    ),
    (
        "pages/jobs.js",
        JS,
        include_str!("../../dashboard/pages/jobs.js"),
    ),
    (
        "pages/batches.js",
        JS,
        include_str!("../../dashboard/pages/batches.js"),
    ),
    (
        "pages/operations.js",
        JS,
        include_str!("../../dashboard/pages/operations.js"),
    ),
    (
        "pages/models.js",
        JS,
        include_str!("../../dashboard/pages/models.js"),
    ),
    (
        "pages/tenants.js",
        JS,
        include_str!("../../dashboard/pages/tenants.js"),
    ),
    (
        "pages/audit.js",
        JS,
        include_str!("../../dashboard/pages/audit.js"),
    ),
];

const INDEX: &str = include_str!("../../dashboard/index.html");
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Only this origin's scripts, styles and API; nothing inline, no frames, no plugins.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(slash))
        .routes(routes!(asset))
}

/// The dashboard
///
/// The operator's pages: one HTML page whose scripts sign in with an admin token.
#[utoipa::path(get, path = "/dashboard", tag = "Dashboard", responses(
    (status = 200, description = "The page", content_type = "text/html", body = String),
))]
async fn index() -> Response {
    page(INDEX, "text/html; charset=utf-8")
}

/// The dashboard, with a trailing slash
///
/// Redirects to `/dashboard`.
#[utoipa::path(get, path = "/dashboard/", tag = "Dashboard", responses(
    (status = 308, description = "Redirects to `/dashboard`", headers(("Location" = String))),
))]
async fn slash() -> Redirect {
    Redirect::permanent("/dashboard")
}

/// A dashboard file
///
/// One of the page's scripts or styles.
#[utoipa::path(get, path = "/dashboard/{*file}", tag = "Dashboard",
    params(("file" = String, Path, description = "The file, as the page names it (`app.js`, `pages/jobs.js`)")),
    responses(
        (status = 200, description = "The file", content((String = "text/javascript"), (String = "text/css"))),
        (status = 404, description = "No such file"),
    ),
)]
async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, text)) => page(text, content_type),
        None => ApiError::not_found("no such dashboard file").into_response(),
    }
}

/// A file with the dashboard's security headers. Not cached across versions: the binary is the
/// version, and the files are small.
fn page(text: &'static str, content_type: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (headers, text).into_response()
}
