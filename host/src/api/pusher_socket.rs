//! `GET /app/{key}`: a Pusher client's WebSocket connection (docs/PUSHER.md), for the tenant
//! whose `pusher.key` it names. The client is anonymous (its private and presence channels
//! are signed per subscription), so it passes the checks every connect passes but the
//! credentials. Refusals the client must act on (an unknown key, a protocol version not
//! served, a refused origin, a tenant at its quota) come as Pusher sends them: the upgrade is
//! answered, then a `pusher:error` and a close code say whether to retry; the rest (a node
//! draining or full, an address over its limits) are HTTP answers, which clients retry.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::response::Response;

use super::ApiError;
use super::code::ErrorCode;
use super::extract::{PathParams, query_param};
use super::handshake::{self, Refusal};
use super::websocket::{check_upgrade, switching_protocols};
use crate::addresses::Socket;
use crate::app::App;
use crate::metrics::HandshakeFailure;
use crate::protocol::Dialect;
use crate::protocol::pusher::{VERSIONS, close};
use crate::session::Joining;

/// How a connect is refused: in the Pusher protocol (a close code), or over HTTP.
enum Refused {
    /// The tenant (if known), the refusal as counted, and the Pusher close code.
    Close(String, Refusal, u16),
    Http(String, Refusal),
}

/// What a Pusher client's connect URL carries, for the document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct PusherConnectQuery {
    /// The protocol version: 5 to 7 (pusher-js sends 7).
    protocol: Option<u32>,
    /// The client library (`js`), not checked.
    client: Option<String>,
    /// The client library's version, not checked.
    version: Option<String>,
}

/// A Pusher client connection (pusher-js, Laravel Echo, the mobile libraries).
#[utoipa::path(get, operation_id = "pusherConnect", path = "/app/{key}", tag = "pusher",
    params(("key" = String, Path, description = "The tenant's `pusher.key`"), PusherConnectQuery),
    responses(
        (status = SWITCHING_PROTOCOLS, description = "Upgraded: Pusher protocol frames follow, starting with `pusher:connection_established`, or a `pusher:error` and a close code when refused (docs/PUSHER.md)"),
        (status = BAD_REQUEST, description = "`not_websocket` or `missing_key` (not an upgrade request)", body = super::error::ErrorBody),
        (status = UPGRADE_REQUIRED, description = "`unsupported_version`: not a WebSocket version 13 upgrade", body = super::error::ErrorBody),
        (status = TOO_MANY_REQUESTS, description = "`too_many_connections` or `rate_limited` (the client address), with `Retry-After`", body = super::error::ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`draining`, `over_capacity` or `busy`", body = super::error::ErrorBody),
    ))]
pub(super) async fn connect(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PathParams(key): PathParams<String>,
    req: Request,
) -> Response {
    let (req, _body) = req.into_parts();
    let peer = handshake::client_addr(&app, peer, &req);
    let accept_key = match check_upgrade(&req) {
        Ok(accept_key) => accept_key,
        Err(refusal) => return handshake::refused(&app, "", peer, refusal),
    };
    match admit(&app, &key, peer, &req) {
        Ok(mut joining) => {
            let socket = req.extensions.get::<Socket>().and_then(Socket::take_hold);
            joining.admitted = joining.admitted.holding(socket);
            crate::ws::spawn(&app, req, joining, (false, Dialect::Pusher));
        }
        Err(Refused::Close(tenant, refusal, code)) => {
            handshake::count_refusal(&app, &tenant, peer, &refusal);
            crate::ws::refuse_pusher(&app, req, code, refusal.1.message().to_owned());
        }
        Err(Refused::Http(tenant, refusal)) => return handshake::refused(&app, &tenant, peer, refusal),
    }
    switching_protocols(&accept_key, None)
}

/// The tenant of `key`, a protocol version served, and the checks of an anonymous client.
fn admit(app: &App, key: &str, peer: SocketAddr, req: &Parts) -> Result<Joining, Refused> {
    let refusal = |why, code, message: String| Refusal(why, ApiError::new(code, message));
    let Some((tenant, _)) = app.tenants().with_pusher(|p| p.key == key) else {
        let refusal = refusal(
            HandshakeFailure::UnknownTenant,
            ErrorCode::UnknownTenant,
            format!("App key {key} not in this cluster"),
        );
        return Err(Refused::Close(String::new(), refusal, close::UNKNOWN_APP));
    };
    let id = tenant.id.to_string();
    let bad = |message: &str, code| Refused::Close(id.clone(), Refusal::bad_request(message), code);
    match query_param(req.uri.query(), "protocol").map(|v| v.parse::<u32>()) {
        None => return Err(bad("No protocol version supplied", close::NO_PROTOCOL)),
        Some(Ok(v)) if VERSIONS.contains(&v) => {}
        Some(_) => return Err(bad("Unsupported protocol version", close::UNSUPPORTED_PROTOCOL)),
    }
    handshake::admit_anonymous(app, tenant, peer, req).map_err(|refusal| match refusal.0 {
        HandshakeFailure::ForbiddenOrigin => Refused::Close(id.clone(), refusal, close::UNAUTHORIZED),
        HandshakeFailure::TenantConnections => Refused::Close(id.clone(), refusal, close::OVER_QUOTA),
        _ => Refused::Http(id.clone(), refusal),
    })
}
