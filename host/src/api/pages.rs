//! The static pages compiled into the binary from `clients/js`: `GET /demo`, the browser
//! demo (`server.demo`), with the JavaScript SDK it imports at `/demo/notify.js`; and
//! `GET /dashboard`, the operator dashboard, which shows nothing without the admin token.

use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../../../clients/js/demo/index.html");
const SDK: &str = include_str!("../../../clients/js/src/notify.js");
const DASHBOARD: &str = include_str!("../../../clients/js/dashboard/index.html");

/// The browser demo (only where `server.demo` is on).
#[utoipa::path(get, operation_id = "demoPage", path = "/demo", tag = "operations",
    responses((status = OK, description = "An HTML page", content_type = "text/html", body = String)))]
pub(super) async fn demo() -> Response {
    with_type(PAGE, "text/html; charset=utf-8")
}

/// The operator dashboard: a static page that reads the admin API with the admin token.
#[utoipa::path(get, operation_id = "dashboardPage", path = "/dashboard", tag = "operations",
    responses((status = OK, description = "An HTML page", content_type = "text/html", body = String)))]
pub(super) async fn dashboard() -> Response {
    with_type(DASHBOARD, "text/html; charset=utf-8")
}

/// The JavaScript client the demo imports (only where `server.demo` is on).
#[utoipa::path(get, operation_id = "demoClientScript", path = "/demo/notify.js", tag = "operations",
    responses((status = OK, description = "An ES module", content_type = "text/javascript", body = String)))]
pub(super) async fn sdk() -> Response {
    with_type(SDK, "text/javascript; charset=utf-8")
}

fn with_type(body: &'static str, content_type: &'static str) -> Response {
    let mut res = body.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}
