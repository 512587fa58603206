//! `GET /v1/ws/{tenant}`: validates the upgrade request, authenticates the client, answers
//! `101 Switching Protocols`, and hands the upgrade to the WebSocket transport (`ws`). Every
//! refusal happens before the upgrade, as an HTTP status with a JSON body.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::ApiError;
use super::extract::{PathParams, bearer, query_param};
use crate::app::App;
use crate::auth::{AuthError, Verified};
use crate::metrics::HandshakeFailure;
use crate::plugin::Hook;
use crate::plugin::bindings::types;
use crate::plugin::hooks::{self, AuthOutcome};
use crate::quota;
use crate::stream::Position;
use crate::tenant::Tenant;
use crate::ws::{Joining, Resume};

/// Why a handshake was refused: the metric it counts under and the answer.
struct Refusal(HandshakeFailure, ApiError);

type Attributes = Vec<(String, String)>;

/// Handles an upgrade request for the `{tenant}` path parameter.
pub(crate) async fn handle(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PathParams(tenant_id): PathParams<String>,
    req: Request,
) -> Response {
    match accept(&app, &tenant_id, peer, req).await {
        Ok(switching) => switching,
        Err(Refusal(why, error)) => {
            match app.tenants.get(&tenant_id) {
                Some(t) => t.metrics.handshake_failed(why),
                None => app.metrics.handshake_failed(why),
            }
            tracing::debug!(tenant = tenant_id, %peer, reason = error.code(), "handshake refused: {error}");
            error.into_response()
        }
    }
}

/// The checks in the order clients meet them, then the connection task.
async fn accept(app: &Arc<App>, tenant_id: &str, peer: SocketAddr, req: Request) -> Result<Response, Refusal> {
    // The body of a GET is empty; the parts are what can be shared across the awaits.
    let (req, _body) = req.into_parts();
    if app.drain.is_draining() {
        let message = "this node is shutting down; connect to another node";
        return Err(Refusal(HandshakeFailure::Draining, ApiError::unavailable("draining", message)));
    }
    let tenant = app.tenants.get(tenant_id).ok_or_else(|| {
        let error = ApiError::not_found("unknown_tenant", format!("no tenant {tenant_id:?}"));
        Refusal(HandshakeFailure::UnknownTenant, error)
    })?;
    check_origin(&tenant, &req)?;
    let (Verified { identity, issued_at }, attributes) = authenticate(app, &tenant, &req, peer).await?;
    let now = crate::clock::now_millis() / 1000;
    if app.revocations.refuses(&tenant.id, &identity.user, issued_at, now) {
        let message = "these credentials were revoked; sign in again";
        let error = ApiError::new(StatusCode::UNAUTHORIZED, "token_revoked", message);
        return Err(Refusal(HandshakeFailure::Unauthorized, error));
    }
    let resume = resume_positions(&req)?;
    // After the credentials: a plain GET of the same URL tells a client that cannot see
    // why its upgrade failed whether the credentials are the reason.
    let accept_key = check_upgrade(&req)?;
    let admitted = app.admission.try_admit().ok_or_else(|| {
        let message = "this node is at its connection limit; retry on another node";
        Refusal(HandshakeFailure::OverCapacity, ApiError::unavailable("over_capacity", message))
    })?;
    let quota = tenant.quota.admit(&identity.user).map_err(|why| over_quota(&tenant, why))?;
    crate::ws::spawn(app, req, Joining { tenant, identity, attributes, resume, admitted, quota, peer });
    Ok(switching_protocols(&accept_key))
}

/// A tenant at one of its connection quotas: 429, retry later.
fn over_quota(tenant: &Tenant, why: quota::Refusal) -> Refusal {
    let limits = tenant.quota.limits();
    let (failure, code, message) = match why {
        quota::Refusal::Connections => (
            HandshakeFailure::TenantConnections,
            "too_many_connections",
            format!("the tenant is at its max_connections ({}) on this node", limits.max_connections),
        ),
        quota::Refusal::UserConnections => (
            HandshakeFailure::UserConnections,
            "too_many_user_connections",
            format!("this user is at the tenant's max_connections_per_user ({})", limits.max_connections_per_user),
        ),
    };
    let error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"));
    Refusal(failure, error)
}

fn header_has_token(req: &Parts, name: header::HeaderName, token: &str) -> bool {
    req.headers
        .get_all(name)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))))
}

/// A WebSocket version 13 upgrade request; returns its `Sec-WebSocket-Accept` value.
fn check_upgrade(req: &Parts) -> Result<String, Refusal> {
    let bad = |error| Refusal(HandshakeFailure::BadRequest, error);
    if !header_has_token(req, header::UPGRADE, "websocket") || !header_has_token(req, header::CONNECTION, "upgrade") {
        let message = "expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)";
        return Err(bad(ApiError::bad_request("not_websocket", message)));
    }
    if req.headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        let message = "only WebSocket version 13 is supported";
        let error = ApiError::new(StatusCode::UPGRADE_REQUIRED, "unsupported_version", message)
            .with_header(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Err(bad(error));
    }
    let key = req.headers.get(header::SEC_WEBSOCKET_KEY);
    let key = key.ok_or_else(|| bad(ApiError::bad_request("missing_key", "missing Sec-WebSocket-Key")))?;
    Ok(derive_accept_key(key.as_bytes()))
}

fn check_origin(tenant: &Tenant, req: &Parts) -> Result<(), Refusal> {
    let origin = req.headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if tenant.origin_allowed(origin) {
        return Ok(());
    }
    let message = format!("origin {:?} is not allowed for this tenant", origin.unwrap_or(""));
    Err(Refusal(HandshakeFailure::ForbiddenOrigin, ApiError::new(StatusCode::FORBIDDEN, "forbidden_origin", message)))
}

/// The client's identity from the tenant's auth plugin, or from its configured auth.
async fn authenticate(
    app: &App,
    tenant: &Tenant,
    req: &Parts,
    peer: SocketAddr,
) -> Result<(Verified, Attributes), Refusal> {
    let unauthorized = |error| Refusal(HandshakeFailure::Unauthorized, error);
    let Some(plugin) = app.plugins.get(&tenant.id, Hook::Auth) else {
        let query = req.uri.query();
        let token = query_param(query, "token").or_else(|| bearer(&req.headers).map(str::to_owned));
        let user = query_param(query, "user");
        return match tenant.auth.authenticate(token.as_deref(), user.as_deref()) {
            Ok(verified) => Ok((verified, Vec::new())),
            Err(e) => {
                let code = if e == AuthError::Expired { "token_expired" } else { "unauthorized" };
                Err(unauthorized(ApiError::new(StatusCode::UNAUTHORIZED, code, e.to_string())))
            }
        };
    };
    match hooks::authenticate(plugin, connect_request(req, &tenant.id, peer)).await {
        AuthOutcome::Allow(identity, attributes) => Ok((Verified { identity, issued_at: None }, attributes)),
        AuthOutcome::Deny { status, reason } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            Err(unauthorized(ApiError::new(status, "denied", reason)))
        }
        AuthOutcome::Failed(why) => {
            tracing::warn!(tenant = &*tenant.id, %peer, "auth plugin failed, refusing the connection: {why}");
            let message = "authentication is temporarily unavailable";
            Err(unauthorized(ApiError::unavailable("auth_unavailable", message)))
        }
    }
}

/// `user_since` and `broadcast_since`, each optional.
fn resume_positions(req: &Parts) -> Result<Resume, Refusal> {
    let query = req.uri.query();
    let since = |name: &'static str| query_param(query, name).map(|v| Position::parse(&v).ok_or(name)).transpose();
    match (since("user_since"), since("broadcast_since")) {
        (Ok(user), Ok(broadcast)) => Ok(Resume { user, broadcast }),
        (Err(name), _) | (_, Err(name)) => {
            let message = format!("{name} must be EPOCH:OFFSET, as in the stream positions of event frames");
            Err(Refusal(HandshakeFailure::BadRequest, ApiError::bad_request("bad_request", message)))
        }
    }
}

fn switching_protocols(accept_key: &str) -> Response {
    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(accept_key).expect("base64 is a valid header"));
    res
}

/// The handshake as an auth plugin sees it.
fn connect_request(req: &Parts, tenant: &str, peer: SocketAddr) -> types::ConnectRequest {
    let headers = req
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let query = req
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default();
    types::ConnectRequest {
        tenant: tenant.to_owned(),
        path: req.uri.path().to_owned(),
        headers,
        query,
        remote_addr: peer.to_string(),
    }
}
