//! The console's static files, compiled into the binary.

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};

/// The one page; everything else is drawn by `app.js`.
const INDEX_HTML: &str = include_str!("../assets/index.html");
/// The whole client: no framework, no build step.
const APP_JS: &str = include_str!("../assets/app.js");
/// The styles; none inline, which the policy below would refuse.
const APP_CSS: &str = include_str!("../assets/app.css");

/// Only the console's own files may run, load or be framed: an injected
/// `<script>` or inline handler does nothing, and no page elsewhere can
/// frame the console to trick an operator into clicking its buttons.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One static file with the headers every console file carries.
fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Revalidated each time, so a server upgrade is never served
            // with the previous version's script.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /console`: the page lives at `/console/`, where its relative
/// links resolve.
pub(crate) async fn to_index() -> Redirect {
    Redirect::permanent(crate::CONSOLE_PATH)
}

/// `GET /console/`.
pub(crate) async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /console/app.js`.
pub(crate) async fn script() -> Response {
    file("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /console/app.css`.
pub(crate) async fn style() -> Response {
    file("text/css; charset=utf-8", APP_CSS)
}
