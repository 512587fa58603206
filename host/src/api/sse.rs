//! `GET /v1/sse/{tenant}`: admits a Server-Sent Events client (`handshake`) and answers with
//! the event stream the SSE transport (`sse`) feeds. The channels come from `?channels=`;
//! the positions to resume from come from `Last-Event-ID` (or `?last_event_id=`, for
//! clients that cannot set headers), else from `user_since` and `broadcast_since`.
//! `POST /v1/sse/{tenant}/ack` is the stream's way back for acks, with the same credentials.
//! `OPTIONS` answers browsers' CORS preflights. Every answer is readable by a page on any
//! origin: the origin check refuses a forbidden origin with a 403 the page can read.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};

use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};

use super::ApiError;
use super::code::ErrorCode;
use super::error::ErrorBody;
use super::extract::{PathParams, read_body};
use super::handshake::{self, ConnectQuery, Refusal};
use super::resume;
use crate::addresses::Socket;
use crate::app::App;
use crate::auth::AuthError;
use crate::backend::HistoryError;
use crate::refresh::RefreshError;
use crate::sse::Cursor;
use crate::stream::Position;
use crate::takeover::Takeover;
use crate::tenant::Tenant;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A client connection over Server-Sent Events (docs/PROTOCOL.md), with the credentials of
/// a WebSocket client.
#[utoipa::path(get, operation_id = "connectSse", path = "/v1/sse/{tenant}", tag = "clients",
    params(
        ("tenant" = String, Path, description = "A tenant id"),
        ConnectQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Where to resume: the `id` of the last event received"),
    ),
    responses(
        (status = OK, description = "The event stream", content_type = "text/event-stream", body = String),
        (status = BAD_REQUEST, description = "`bad_request` (a malformed position), `invalid_channel` or `too_many_subscriptions`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`, `token_expired`, `token_revoked`, or `denied` by the auth plugin", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden_origin`, `forbidden_channel`, or `denied` by the auth plugin", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = TOO_MANY_REQUESTS, description = "`too_many_connections`, `too_many_user_connections` or `rate_limited`, with `Retry-After`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`draining`, `over_capacity`, `busy` or `auth_unavailable`", body = ErrorBody),
    ))]
pub(crate) async fn handle(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PathParams(tenant_id): PathParams<String>,
    req: Request,
) -> Response {
    let (req, _body) = req.into_parts();
    let peer = handshake::client_addr(&app, peer, &req);
    let admitted = handshake::admit(&app, &tenant_id, peer, &req, |tenant, identity| {
        let resume = resume::from_request(&app, tenant, identity, &req)?;
        if resume.delta {
            return Err(Refusal::bad_request("delta updates are sent over WebSocket only"));
        }
        let cursor = Cursor::from(&resume);
        Ok((resume, cursor))
    })
    .await;
    match admitted {
        Ok((mut joining, cursor)) => {
            // None only for a second stream pipelined behind one that took the socket: no
            // answer can reach its client.
            let Some(io) = req.extensions.get::<Takeover>().and_then(Takeover::take) else {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            };
            // The stream's place in its address's count moves into the session.
            let socket = req.extensions.get::<Socket>().and_then(Socket::take_hold);
            joining.admitted = joining.admitted.holding(socket);
            crate::sse::spawn(&app, joining, cursor, io, head(&req.headers));
            // What hyper does with this goes nowhere: the socket is the stream's now.
            Response::new(Body::empty())
        }
        Err(refusal) => {
            let mut res = handshake::refused(&app, &tenant_id, peer, refusal);
            handshake::readable_by_origin(&req.headers, res.headers_mut());
            res
        }
    }
}

/// The stream's answer, up to its first event: no length (the stream ends with the
/// connection), readable by the page on any origin.
fn head(request: &HeaderMap) -> Bytes {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    // Tells nginx-style proxies not to buffer the stream.
    headers.insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    handshake::readable_by_origin(request, &mut headers);
    let mut head = BytesMut::with_capacity(256);
    head.put_slice(b"HTTP/1.1 200 OK\r\n");
    for (name, value) in &headers {
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    head.put_slice(b"\r\n");
    head.freeze()
}

/// Body of an ack: a position of the user stream.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"epoch": "1764806400123", "offset": 42}))]
pub(crate) struct AckBody {
    epoch: String,
    offset: u64,
}

/// The user's read cursor after an ack: what an `acked` frame carries.
#[derive(Serialize, ToSchema)]
pub(crate) struct Acked {
    epoch: String,
    /// The acked offset.
    offset: u64,
    unread: u64,
}

/// Longest ack body.
const MAX_ACK_BYTES: usize = 1024;

/// Moves the client's read cursor (tenants with `history.acks`), with the credentials of the
/// stream; answers what an `acked` frame carries.
#[utoipa::path(post, operation_id = "ackSse", path = "/v1/sse/{tenant}/ack", tag = "clients",
    params(
        ("tenant" = String, Path, description = "A tenant id"),
        ("token" = Option<String>, Query, description = "The client's token"),
        ("user" = Option<String>, Query, description = "The user id, for tenants with insecure auth"),
    ),
    request_body = AckBody,
    responses(
        (status = OK, description = "The cursor", body = Acked),
        (status = BAD_REQUEST, description = "`invalid_field` or `bad_body`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`, `token_expired`, `token_revoked`, or `denied` by the auth plugin", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden_origin`, or `denied` by the auth plugin", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = CONFLICT, description = "`acks_disabled` or `stale_position`", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`history_unavailable` or `auth_unavailable`", body = ErrorBody),
    ))]
pub(crate) async fn ack(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PathParams(tenant_id): PathParams<String>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let answer = acked(&app, &tenant_id, peer, &parts, body).await;
    handshake::readable(&parts, answer)
}

/// The tenant a stream's side request names.
fn tenant(app: &App, tenant_id: &str) -> Result<Arc<Tenant>, ApiError> {
    app.tenants()
        .get(tenant_id)
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownTenant, format!("no tenant {tenant_id:?}")))
}

async fn acked(app: &App, tenant_id: &str, peer: SocketAddr, req: &Parts, body: Body) -> Result<Acked, ApiError> {
    let tenant = tenant(app, tenant_id)?;
    let (identity, _) = handshake::identify(app, &tenant, req, peer).await.map_err(|Refusal(_, e)| e)?;
    if !tenant.config.history.acks {
        let message = "this tenant keeps no read cursors (history.acks is off)";
        return Err(ApiError::new(ErrorCode::AcksDisabled, message));
    }
    let body = read_body(&req.headers, body, MAX_ACK_BYTES).await?;
    let AckBody { epoch, offset } = crate::ingest::deserialize(&body)?;
    let change = match app.history().ack(&tenant, &identity.user, &Position { epoch, offset }).await {
        Err(e @ HistoryError::StalePosition(..)) => {
            return Err(ApiError::new(ErrorCode::StalePosition, e.to_string()));
        }
        other => other?,
    };
    let cursor = crate::session::acked(app, &tenant, &identity.user, change);
    let unread = cursor.unread();
    Ok(Acked { epoch: cursor.epoch, offset: cursor.acked, unread })
}

/// The token's new expiry, as the `refreshed` frame in the stream also says.
#[derive(Serialize, ToSchema)]
pub(crate) struct Refreshed {
    /// Unix seconds; absent when the new credentials do not expire.
    expires_at: Option<u64>,
}

/// Gives an open stream fresh credentials before its current ones expire (docs/PROTOCOL.md,
/// "Refreshing credentials"): the new token as `?token=` or a bearer header, the stream's
/// `connection_id` from its `welcome`. The POST must reach the node serving the stream.
#[utoipa::path(post, operation_id = "refreshSse", path = "/v1/sse/{tenant}/refresh", tag = "clients",
    params(
        ("tenant" = String, Path, description = "A tenant id"),
        ("connection_id" = String, Query, description = "The stream's `connection_id` (its `welcome`)"),
        ("token" = Option<String>, Query, description = "The fresh token (or an `Authorization: Bearer` header)"),
    ),
    responses(
        (status = OK, description = "Accepted: the stream's new expiry", body = Refreshed),
        (status = BAD_REQUEST, description = "`bad_request`: no or a malformed `connection_id`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`, `token_expired` or `token_revoked`", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden_origin`", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`, or `unknown_connection`: no such stream of the token's user on this node", body = ErrorBody),
        (status = CONFLICT, description = "`refresh_unsupported`: the tenant authenticates with a plugin or runs insecure auth", body = ErrorBody),
    ))]
pub(crate) async fn refresh(
    State(app): State<App>,
    PathParams(tenant_id): PathParams<String>,
    req: Request,
) -> Response {
    let (parts, _body) = req.into_parts();
    let answer = refreshed(&app, &tenant_id, &parts).await;
    handshake::readable(&parts, answer)
}

async fn refreshed(app: &App, tenant_id: &str, req: &Parts) -> Result<Refreshed, ApiError> {
    let tenant = tenant(app, tenant_id)?;
    handshake::check_origin(&tenant, req).map_err(|Refusal(_, e)| e)?;
    let query = req.uri.query();
    let id = super::extract::query_param(query, "connection_id").and_then(|id| id.parse::<u64>().ok());
    let id = id.ok_or_else(|| {
        ApiError::new(ErrorCode::BadRequest, "`connection_id` (from `welcome`) is missing or malformed")
    })?;
    let token = super::extract::client_token(query, &req.headers);
    let token = token.ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, AuthError::MissingToken.to_string()))?;
    let identity = crate::refresh::verify(app, &tenant, None, &token).await.map_err(refusal)?;
    let conn = app.hub().user_conns(&tenant, &identity.user).into_iter().find(|c| c.id == id);
    let conn = conn.ok_or_else(|| {
        ApiError::new(ErrorCode::UnknownConnection, format!("no open connection {id} of this user on this node"))
    })?;
    let expires_at = identity.expires_at;
    // Handed over before `apply` queues `refreshed`, which wakes the connection to take it.
    app.hub().refreshed(conn.id, identity.clone());
    crate::refresh::apply(app, &conn, &identity);
    Ok(Refreshed { expires_at })
}

fn refusal(e: RefreshError) -> ApiError {
    let code = match &e {
        RefreshError::Plugin | RefreshError::Insecure => ErrorCode::RefreshUnsupported,
        RefreshError::Auth(AuthError::Expired) => ErrorCode::TokenExpired,
        RefreshError::Revoked => ErrorCode::TokenRevoked,
        RefreshError::Auth(_) | RefreshError::OtherUser | RefreshError::OtherChannel(_) => ErrorCode::Unauthorized,
    };
    ApiError::new(code, e.to_string())
}

/// A CORS preflight for a stream's refresh.
#[utoipa::path(options, operation_id = "preflightRefreshSse", path = "/v1/sse/{tenant}/refresh", tag = "clients",
    params(("tenant" = String, Path, description = "A tenant id")),
    responses((status = NO_CONTENT, description = "The CORS answer (any origin may ask; the request itself checks the origin)")))]
pub(crate) async fn refresh_preflight(headers: HeaderMap) -> Response {
    handshake::preflight(&headers, "GET, POST")
}

/// A CORS preflight for the stream: which origins, methods and headers a browser may use.
#[utoipa::path(options, operation_id = "preflightSse", path = "/v1/sse/{tenant}", tag = "clients",
    params(("tenant" = String, Path, description = "A tenant id")),
    responses((status = NO_CONTENT, description = "The CORS answer (any origin may ask; the request itself checks the origin)")))]
pub(crate) async fn preflight(headers: HeaderMap) -> Response {
    handshake::preflight(&headers, "GET, POST")
}

/// A CORS preflight for acks.
#[utoipa::path(options, operation_id = "preflightAckSse", path = "/v1/sse/{tenant}/ack", tag = "clients",
    params(("tenant" = String, Path, description = "A tenant id")),
    responses((status = NO_CONTENT, description = "The CORS answer (any origin may ask; the request itself checks the origin)")))]
pub(crate) async fn ack_preflight(headers: HeaderMap) -> Response {
    handshake::preflight(&headers, "GET, POST")
}
