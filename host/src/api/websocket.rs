//! `GET /v1/ws/{tenant}`: validates the upgrade request, admits the client (`handshake`),
//! answers `101 Switching Protocols`, and hands the upgrade to the WebSocket transport
//! (`ws`). Every refusal happens before the upgrade, as an HTTP status with a JSON body.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::ApiError;
use super::code::ErrorCode;
use super::error::ErrorBody;
use super::extract::PathParams;
use super::handshake::{self, ConnectQuery, Refusal};
use super::resume;
use crate::addresses::Socket;
use crate::app::App;
use crate::metrics::HandshakeFailure;
use crate::protocol::Dialect;

/// A client connection over WebSocket (docs/PROTOCOL.md). The credentials are the tenant's
/// (a JWT in `token` or `Authorization: Bearer`, or `user` for insecure tenants); its auth
/// plugin may decide instead.
#[utoipa::path(get, operation_id = "connectWebSocket", path = "/v1/ws/{tenant}", tag = "clients",
    params(
        ("tenant" = String, Path, description = "A tenant id"),
        ConnectQuery,
    ),
    responses(
        (status = SWITCHING_PROTOCOLS, description = "Upgraded: frames follow (docs/PROTOCOL.md)"),
        (status = BAD_REQUEST, description = "`bad_request` (a malformed position), `invalid_channel`, `too_many_subscriptions`, `not_websocket` or `missing_key` (not an upgrade request)", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`, `token_expired`, `token_revoked`, or `denied` by the auth plugin", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden_origin`, `forbidden_channel`, or `denied` by the auth plugin", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = UPGRADE_REQUIRED, description = "`unsupported_version`: not a WebSocket version 13 upgrade", body = ErrorBody),
        (status = TOO_MANY_REQUESTS, description = "`too_many_connections`, `too_many_user_connections` or `rate_limited`, with `Retry-After`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`draining`, `over_capacity`, `busy` or `auth_unavailable`", body = ErrorBody),
    ))]
pub(crate) async fn handle(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PathParams(tenant_id): PathParams<String>,
    req: Request,
) -> Response {
    // The body of a GET is empty; the parts are what can be shared across the awaits.
    let (req, _body) = req.into_parts();
    let peer = handshake::client_addr(&app, peer, &req);
    if req.headers.get(header::UPGRADE).is_none() {
        let channels = |tenant: &_, identity: &_| resume::from_request(&app, tenant, identity, &req).map(drop);
        return handshake::diagnose(&app, &tenant_id, peer, &req, channels).await;
    }
    let admitted = handshake::admit(&app, &tenant_id, peer, &req, |tenant, identity| {
        let resume = resume::from_request(&app, tenant, identity, &req)?;
        Ok((resume, check_upgrade(&req)?))
    })
    .await;
    match admitted {
        Ok((mut joining, accept_key)) => {
            // The upgraded socket's place in its address's count moves into the session.
            let socket = req.extensions.get::<Socket>().and_then(Socket::take_hold);
            joining.admitted = joining.admitted.holding(socket);
            let compression = joining.tenant.config.compression.enabled;
            let extension = compression.then(|| crate::ws::extension::negotiate(&req.headers)).flatten();
            crate::ws::spawn(&app, req, joining, (extension.is_some(), Dialect::Native));
            switching_protocols(&accept_key, extension)
        }
        Err(refusal) => handshake::refused(&app, &tenant_id, peer, refusal),
    }
}

fn header_has_token(req: &Parts, name: header::HeaderName, token: &str) -> bool {
    req.headers
        .get_all(name)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))))
}

/// A WebSocket version 13 upgrade request; returns its `Sec-WebSocket-Accept` value.
pub(super) fn check_upgrade(req: &Parts) -> Result<String, Refusal> {
    let bad = |error| Refusal(HandshakeFailure::BadRequest, error);
    if !header_has_token(req, header::UPGRADE, "websocket") || !header_has_token(req, header::CONNECTION, "upgrade") {
        let message = "expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)";
        return Err(bad(ApiError::new(ErrorCode::NotWebsocket, message)));
    }
    if req.headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        let message = "only WebSocket version 13 is supported";
        let error = ApiError::new(ErrorCode::UnsupportedVersion, message)
            .with_header(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Err(bad(error));
    }
    let key = req.headers.get(header::SEC_WEBSOCKET_KEY);
    let key = key.ok_or_else(|| bad(ApiError::new(ErrorCode::MissingKey, "missing Sec-WebSocket-Key")))?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// The 101 answer; `extension`: the accepted `Sec-WebSocket-Extensions`, if any.
pub(super) fn switching_protocols(accept_key: &str, extension: Option<&'static str>) -> Response {
    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(accept_key).expect("base64 is a valid header"));
    if let Some(extension) = extension {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static(extension));
    }
    res
}
