//! The HTTP API: one route table, handlers grouped by resource, typed extractors for
//! credentials, and one error type ([`ApiError`]) for every refusal.
//!
//! The WebSocket upgrade is routed here too, but its handler (`ws::upgrade`) takes the raw
//! socket back from hyper, so nothing of the router stays with a connection.

mod admin;
mod error;
mod extract;
mod handshake;
mod health;
mod pages;
mod presence;
mod publish;
mod sse;
mod streams;
mod tenants;
mod users;
mod websocket;

#[cfg(any(test, fuzzing))]
pub(crate) use extract::{bearer, query_param};

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{delete, get, post, put};
use tower_http::trace::TraceLayer;

pub(crate) use error::ApiError;
pub(crate) use handshake::{Refusal, refused_at_accept};

use crate::app::App;

/// Every route the host serves. Requests are traced (tower-http, at debug level, without
/// their query strings) except WebSocket upgrades and SSE streams, whose handlers log their
/// refusals themselves: the handshake path stays lean.
pub(crate) fn router(app: Arc<App>) -> Router {
    let traced = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/publish", post(publish::one))
        .route("/v1/publish/batch", post(publish::batch))
        .route("/v1/presence/{user}", get(presence::status))
        .route("/v1/channels/{channel}/presence", get(presence::channel))
        .route("/v1/users/{user}/unread", get(users::unread))
        .route("/v1/users/{user}/disconnect", post(users::disconnect))
        .route("/v1/users/{user}/subscriptions", post(users::subscribe))
        .route("/v1/users/{user}/subscriptions/{channel}", delete(users::unsubscribe))
        .route("/v1/streams/users/{user}", get(streams::user))
        .route("/v1/streams/channels/{channel}", get(streams::channel))
        .route("/v1/streams/broadcast", get(streams::broadcast))
        .route("/v1/admin/tenants", get(tenants::list).post(tenants::create))
        .route("/v1/admin/tenants/{tenant}", get(tenants::get).patch(tenants::patch).delete(tenants::delete))
        .route("/v1/admin/tenants/{tenant}/keys/{kind}", post(tenants::rotate))
        .route("/v1/admin/tenants/{tenant}/plugins", get(admin::list))
        .route("/v1/admin/tenants/{tenant}/plugins/{hook}", put(admin::upload).delete(admin::remove))
        .route("/v1/admin/tenants/{tenant}/plugins/{hook}/rollback", post(admin::rollback))
        .route("/dashboard", get(pages::dashboard))
        .layer(TraceLayer::new_for_http().make_span_with(span));
    let traced = if app.config.server.demo {
        traced.route("/demo", get(pages::demo)).route("/demo/notify.js", get(pages::sdk))
    } else {
        traced
    };
    Router::new()
        .route("/v1/ws/{tenant}", get(websocket::handle))
        .route("/v1/sse/{tenant}", get(sse::handle).options(sse::preflight))
        .route("/v1/sse/{tenant}/ack", post(sse::ack).options(sse::preflight))
        .merge(traced)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

/// A request's span names its path only: a query string may carry a credential.
fn span(request: &axum::extract::Request) -> tracing::Span {
    tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found("not_found", format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("method {method} not allowed here"))
}

#[cfg(test)]
mod tests;
