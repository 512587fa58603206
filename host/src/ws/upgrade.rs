//! `GET /v1/ws/{tenant}`: validates the upgrade request, authenticates the client, answers
//! `101 Switching Protocols`, and hands the raw socket to the connection loop. Every refusal
//! happens before the upgrade, as an HTTP status with a JSON body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::conn::Resume;
use crate::app::App;
use crate::auth::AuthError;
use crate::history::Position;
use crate::http::{self, Body};
use crate::hub::Conn;
use crate::metrics::HandshakeFailure;
use crate::plugin::Hook;
use crate::plugin::bindings::types;
use crate::plugin::hooks::{self, AuthOutcome};

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))))
}

/// Handles an upgrade request for `tenant_id`.
pub async fn handle(app: &Arc<App>, req: Request<Incoming>, tenant_id: &str, peer: SocketAddr) -> Response<Body> {
    let refuse = |why: HandshakeFailure, status: StatusCode, code: &str, message: String| {
        match app.tenants.get(tenant_id) {
            Some(t) => t.metrics.handshake_failed(why),
            None => app.metrics.handshake_failed(why),
        }
        tracing::debug!(tenant = tenant_id, %peer, reason = code, "handshake refused: {message}");
        http::error(status, code, message)
    };
    if app.draining.is_cancelled() {
        return refuse(
            HandshakeFailure::Draining,
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this node is shutting down; connect to another node".into(),
        );
    }
    if !header_has_token(&req, header::UPGRADE, "websocket") || !header_has_token(&req, header::CONNECTION, "upgrade") {
        return refuse(
            HandshakeFailure::BadRequest,
            StatusCode::BAD_REQUEST,
            "not_websocket",
            "expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)".into(),
        );
    }
    if req.headers().get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        let mut res = refuse(
            HandshakeFailure::BadRequest,
            StatusCode::UPGRADE_REQUIRED,
            "unsupported_version",
            "only WebSocket version 13 is supported".into(),
        );
        res.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return res;
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return refuse(
            HandshakeFailure::BadRequest,
            StatusCode::BAD_REQUEST,
            "missing_key",
            "missing Sec-WebSocket-Key".into(),
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let Some(tenant) = app.tenants.get(tenant_id).cloned() else {
        return refuse(
            HandshakeFailure::UnknownTenant,
            StatusCode::NOT_FOUND,
            "unknown_tenant",
            format!("no tenant {tenant_id:?}"),
        );
    };
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !tenant.origin_allowed(origin) {
        return refuse(
            HandshakeFailure::ForbiddenOrigin,
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            format!("origin {:?} is not allowed for this tenant", origin.unwrap_or("")),
        );
    }
    let (identity, attributes) = match app.plugins.get(&tenant.id, Hook::Auth) {
        Some(plugin) => match hooks::authenticate(plugin, connect_request(&req, &tenant.id, peer)).await {
            AuthOutcome::Allow(identity, attributes) => (identity, attributes),
            AuthOutcome::Deny { status, reason } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
                return refuse(HandshakeFailure::Unauthorized, status, "denied", reason);
            }
            AuthOutcome::Failed(why) => {
                tracing::warn!(tenant = tenant_id, %peer, "auth plugin failed, refusing the connection: {why}");
                return refuse(
                    HandshakeFailure::Unauthorized,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "auth_unavailable",
                    "authentication is temporarily unavailable".into(),
                );
            }
        },
        None => {
            let query = req.uri().query();
            let token = http::query_param(query, "token").or_else(|| http::bearer(req.headers()).map(str::to_owned));
            let user = http::query_param(query, "user");
            match tenant.auth.authenticate(token.as_deref(), user.as_deref()) {
                Ok(identity) => (identity, Vec::new()),
                Err(e) => {
                    let code = if e == AuthError::Expired { "token_expired" } else { "unauthorized" };
                    return refuse(HandshakeFailure::Unauthorized, StatusCode::UNAUTHORIZED, code, e.to_string());
                }
            }
        }
    };
    let query = req.uri().query();
    let since =
        |name: &'static str| http::query_param(query, name).map(|v| Position::parse(&v).ok_or(name)).transpose();
    let resume = match (since("user_since"), since("broadcast_since")) {
        (Ok(user), Ok(broadcast)) => Resume { user, broadcast },
        (Err(name), _) | (_, Err(name)) => {
            return refuse(
                HandshakeFailure::BadRequest,
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{name} must be EPOCH:OFFSET, as in the stream positions of event frames"),
            );
        }
    };
    let max = app.config.server.max_connections;
    let open = app.open_connections.fetch_add(1, SeqCst);
    if max > 0 && open >= max {
        app.open_connections.fetch_sub(1, SeqCst);
        return refuse(
            HandshakeFailure::OverCapacity,
            StatusCode::SERVICE_UNAVAILABLE,
            "over_capacity",
            "this node is at its connection limit; retry on another node".into(),
        );
    }

    // Only what the connection needs survives; the request (headers, URI) is dropped here.
    let on_upgrade = hyper::upgrade::on(req);
    let conn = Arc::new(Conn {
        id: app.hub.next_conn_id(),
        tenant: tenant.clone(),
        user: identity.user.clone().into_boxed_str(),
        segment: tenant.segments.intern(attributes),
        outbox: Default::default(),
        gates: Default::default(),
    });
    let task_app = app.clone();
    app.connections.spawn(async move {
        let app = task_app;
        let upgraded = tokio::time::timeout(app.config.server.handshake_timeout, on_upgrade).await;
        match upgraded {
            Ok(Ok(upgraded)) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    let ws = websocket(&app, parts.io.into_inner(), parts.read_buf).await;
                    conn.tenant.metrics.handshakes.fetch_add(1, Relaxed);
                    super::conn::run(ws, conn, identity, resume, &app).await;
                }
                Err(_) => tracing::error!("upgraded connection is not a TCP stream"),
            },
            Ok(Err(e)) => {
                conn.tenant.metrics.handshake_failed(HandshakeFailure::BadRequest);
                tracing::debug!(%peer, "upgrade failed: {e}");
            }
            Err(_) => conn.tenant.metrics.handshake_failed(HandshakeFailure::Timeout),
        }
        app.open_connections.fetch_sub(1, SeqCst);
    });

    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept).expect("base64 is a valid header"));
    res
}

/// The handshake as an auth plugin sees it.
fn connect_request(req: &Request<Incoming>, tenant: &str, peer: SocketAddr) -> types::ConnectRequest {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let query = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default();
    types::ConnectRequest {
        tenant: tenant.to_owned(),
        path: req.uri().path().to_owned(),
        headers,
        query,
        remote_addr: peer.to_string(),
    }
}

/// Wraps the socket with small buffers: tungstenite's defaults would allocate 128 KiB per
/// connection up front. Server frames bypass tungstenite's write buffer entirely (see
/// `fanout`), so it only ever holds pongs and close frames.
///
/// `pre_read` (bytes the client sent before the upgrade finished) is a view into hyper's
/// 8 KiB read buffer; it is consumed here so that buffer is freed before the connection
/// settles in.
async fn websocket(app: &App, tcp: TcpStream, pre_read: bytes::Bytes) -> WebSocketStream<TcpStream> {
    let c = &app.config.connections;
    let config = WebSocketConfig::default()
        .read_buffer_size(c.read_buffer_bytes)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(c.max_message_bytes))
        .max_frame_size(Some(c.max_message_bytes));
    if pre_read.is_empty() {
        WebSocketStream::from_raw_socket(tcp, Role::Server, Some(config)).await
    } else {
        WebSocketStream::from_partially_read(tcp, pre_read.to_vec(), Role::Server, Some(config)).await
    }
}
