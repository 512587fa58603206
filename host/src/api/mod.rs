//! The HTTP API: one route table, handlers grouped by resource, typed extractors for
//! credentials, and one error type ([`ApiError`]) for every refusal.
//!
//! The WebSocket upgrade is routed here too, but its handler (`ws::upgrade`) takes the raw
//! socket back from hyper, so nothing of the router stays with a connection.

mod admin;
mod code;
mod devices;
mod error;
mod extract;
mod handshake;
mod health;
mod nodes;
mod openapi;
mod pages;
mod presence;
mod publish;
mod pusher;
mod pusher_socket;
mod resume;
mod sse;
mod streams;
mod tenants;
mod users;
mod webhooks;
mod websocket;

#[cfg(any(test, fuzzing))]
pub(crate) use extract::{client_token, query_param};

use axum::Router;
use axum::http::{Method, Uri};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) use error::ApiError;
pub(crate) use handshake::{Refusal, refused_at_accept};

use crate::app::App;
use code::ErrorCode;

/// Every route the host serves, built with its description (see [`document`]).
pub(crate) fn router(app: App) -> Router {
    let (router, _) = routes(app.config().server.demo).split_for_parts();
    router.fallback(not_found).method_not_allowed_fallback(method_not_allowed).with_state(app)
}

/// The routes of `server.metrics_listen`: `/metrics` without credentials.
pub(crate) fn metrics_router(app: App) -> Router {
    Router::new().route("/metrics", axum::routing::get(health::scrape)).fallback(not_found).with_state(app)
}

/// The OpenAPI document of the routes a node serves (the demo pages only where `demo` is on).
pub(crate) fn document(demo: bool) -> serde_json::Value {
    openapi::to_json(&routes(demo).into_openapi())
}

/// The route table. Requests are traced (tower-http, at debug level, without their query
/// strings) except WebSocket upgrades and SSE streams, whose handlers log their refusals
/// themselves: the handshake path stays lean.
fn routes(demo: bool) -> OpenApiRouter<App> {
    let traced = OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(nodes::list))
        .routes(routes!(openapi::serve))
        .routes(routes!(publish::one))
        .routes(routes!(publish::batch))
        .routes(routes!(pusher::trigger))
        .routes(routes!(pusher::trigger_batch))
        .routes(routes!(pusher::channels))
        .routes(routes!(pusher::channel))
        .routes(routes!(pusher::channel_users))
        .routes(routes!(pusher::terminate_connections))
        .routes(routes!(pusher::terminate_connections_unprefixed))
        .routes(routes!(presence::status))
        .routes(routes!(presence::channel))
        .routes(routes!(users::unread))
        .routes(routes!(users::disconnect))
        .routes(routes!(users::subscribe))
        .routes(routes!(users::unsubscribe))
        .routes(routes!(devices::register, devices::list))
        .routes(routes!(devices::remove))
        .routes(routes!(devices::preferences, devices::set_preferences))
        .routes(routes!(streams::user))
        .routes(routes!(streams::channel))
        .routes(routes!(streams::broadcast))
        .routes(routes!(tenants::list, tenants::create))
        .routes(routes!(tenants::get, tenants::patch, tenants::delete))
        .routes(routes!(tenants::rotate))
        .routes(routes!(tenants::pusher, tenants::remove_pusher))
        .routes(routes!(tenants::web_push, tenants::remove_web_push))
        .routes(routes!(tenants::fcm, tenants::remove_fcm))
        .routes(routes!(tenants::apns, tenants::remove_apns))
        .routes(routes!(admin::list))
        .routes(routes!(admin::upload, admin::remove))
        .routes(routes!(admin::rollback))
        .routes(routes!(webhooks::list, webhooks::create))
        .routes(routes!(webhooks::change, webhooks::delete))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::resume))
        .routes(routes!(webhooks::dead_letters))
        .routes(routes!(webhooks::replay))
        .routes(routes!(pages::dashboard));
    let traced = if demo { traced.routes(routes!(pages::demo)).routes(routes!(pages::sdk)) } else { traced };
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(websocket::handle))
        .routes(routes!(pusher_socket::connect))
        .routes(routes!(sse::handle, sse::preflight))
        .routes(routes!(sse::ack, sse::ack_preflight))
        .routes(routes!(sse::refresh, sse::refresh_preflight))
        .routes(routes!(devices::register_own, devices::register_preflight))
        .routes(routes!(devices::remove_own, devices::remove_preflight))
        .routes(routes!(devices::web_key))
        .routes(routes!(devices::own_preferences, devices::set_own_preferences, devices::preferences_preflight))
        .merge(traced.layer(TraceLayer::new_for_http().make_span_with(span)))
}

/// A request's span names its path only: a query string may carry a credential.
fn span(request: &axum::extract::Request) -> tracing::Span {
    tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, format!("method {method} not allowed here"))
}

#[cfg(test)]
mod tests;
