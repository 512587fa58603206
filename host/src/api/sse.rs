//! `GET /v1/sse/{tenant}`: admits a Server-Sent Events client (`handshake`) and answers with
//! the event stream the SSE transport (`sse`) feeds. The channels come from `?channels=`;
//! the positions to resume from come from `Last-Event-ID` (or `?last_event_id=`, for
//! clients that cannot set headers), else from `user_since` and `broadcast_since`.
//! `POST /v1/sse/{tenant}/ack` is the stream's way back for acks, with the same credentials.
//! `OPTIONS` answers browsers' CORS preflights for the tenant's allowed origins.

use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::code::ErrorCode;
use super::extract::{PathParams, query_param, read_body};
use super::handshake::{self, ConnectQuery, Refusal, since_param};
use super::openapi::ErrorBody;
use crate::app::App;
use crate::auth::Identity;
use crate::backend::HistoryError;
use crate::metrics::HandshakeFailure;
use crate::session::{self, Resume};
use crate::sse::{Cursor, Stream};
use crate::stream::Position;
use crate::tenant::Tenant;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// A client connection over Server-Sent Events (docs/PROTOCOL.md), with the credentials of
/// a WebSocket client.
#[utoipa::path(get, operation_id = "connectSse", path = "/v1/sse/{tenant}", tag = "clients",
    params(
        ("tenant" = String, Path, description = "A tenant id"),
        ConnectQuery,
        ("channels" = Option<String>, Query, description = "Channels to subscribe, comma-separated"),
        ("Last-Event-ID" = Option<String>, Header, description = "Where to resume: the `id` of the last event received"),
        ("last_event_id" = Option<String>, Query, description = "As `Last-Event-ID`, for clients that cannot set headers"),
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
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PathParams(tenant_id): PathParams<String>,
    req: Request,
) -> Response {
    let (req, _body) = req.into_parts();
    let peer = handshake::client_addr(&app, peer, &req);
    let admitted =
        handshake::admit(&app, &tenant_id, peer, &req, |tenant, identity| positions(&app, tenant, identity, &req))
            .await;
    let mut res = match admitted {
        Ok((joining, cursor)) => {
            let body = crate::sse::spawn(&app, joining, cursor);
            let mut res = Response::new(body);
            let h = res.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
            // Tells nginx-style proxies not to buffer the stream.
            h.insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
            res
        }
        Err(refusal) => handshake::refused(&app, &tenant_id, peer, refusal),
    };
    allow_origin(&app, &tenant_id, &req.headers, res.headers_mut());
    res
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
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PathParams(tenant_id): PathParams<String>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let mut res = match acked(&app, &tenant_id, peer, &parts, body).await {
        Ok(json) => Json(json).into_response(),
        Err(e) => e.into_response(),
    };
    allow_origin(&app, &tenant_id, &parts.headers, res.headers_mut());
    res
}

async fn acked(app: &App, tenant_id: &str, peer: SocketAddr, req: &Parts, body: Body) -> Result<Acked, ApiError> {
    let tenant = app
        .tenants
        .get(tenant_id)
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownTenant, format!("no tenant {tenant_id:?}")))?;
    let (identity, _) = handshake::identify(app, &tenant, req, peer).await.map_err(|Refusal(_, e)| e)?;
    if !tenant.config.history.acks {
        let message = "this tenant keeps no read cursors (history.acks is off)";
        return Err(ApiError::new(ErrorCode::AcksDisabled, message));
    }
    let body = read_body(&req.headers, body, MAX_ACK_BYTES).await?;
    let AckBody { epoch, offset } = crate::ingest::deserialize(&body)?;
    let cursor = match app.history.ack(&tenant, &identity.user, &Position { epoch, offset }).await {
        Err(e @ HistoryError::StalePosition(..)) => {
            return Err(ApiError::new(ErrorCode::StalePosition, e.to_string()));
        }
        other => other?,
    };
    tenant.metrics.acks.fetch_add(1, Relaxed);
    let unread = cursor.unread();
    Ok(Acked { epoch: cursor.epoch, offset: cursor.acked, unread })
}

/// A CORS preflight for the stream: which origins, methods and headers a browser may use.
#[utoipa::path(options, operation_id = "preflightSse", path = "/v1/sse/{tenant}", tag = "clients",
    params(("tenant" = String, Path, description = "A tenant id")),
    responses((status = NO_CONTENT, description = "The CORS answer, for the tenant's `allowed_origins`")))]
pub(crate) async fn preflight(state: State<Arc<App>>, tenant: PathParams<String>, headers: HeaderMap) -> Response {
    cors(state, tenant, headers)
}

/// A CORS preflight for acks.
#[utoipa::path(options, operation_id = "preflightAckSse", path = "/v1/sse/{tenant}/ack", tag = "clients",
    params(("tenant" = String, Path, description = "A tenant id")),
    responses((status = NO_CONTENT, description = "The CORS answer, for the tenant's `allowed_origins`")))]
pub(crate) async fn ack_preflight(state: State<Arc<App>>, tenant: PathParams<String>, headers: HeaderMap) -> Response {
    cors(state, tenant, headers)
}

fn cors(State(app): State<Arc<App>>, PathParams(tenant_id): PathParams<String>, headers: HeaderMap) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
    let allowed = HeaderValue::from_static("authorization, content-type, last-event-id");
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    allow_origin(&app, &tenant_id, &headers, h);
    res
}

/// Lets the request's origin read the answer when the tenant allows that origin.
fn allow_origin(app: &App, tenant_id: &str, request: &HeaderMap, response: &mut HeaderMap) {
    let Some(origin) = request.get(header::ORIGIN) else { return };
    let allowed = app.tenants.get(tenant_id).is_some_and(|t| t.origin_allowed(origin.to_str().ok()));
    if allowed {
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    response.append(header::VARY, HeaderValue::from_static("origin"));
}

/// The positions and channels to start from, and the cursor that carries them on.
fn positions(app: &App, tenant: &Tenant, identity: &Identity, req: &Parts) -> Result<(Resume, Cursor), Refusal> {
    let given = req
        .headers
        .get(LAST_EVENT_ID)
        .map(|v| v.to_str().map(str::to_owned).unwrap_or_default())
        .or_else(|| query_param(req.uri.query(), "last_event_id"))
        .map(|id| Cursor::parse(&id))
        .transpose()
        .map_err(|why| Refusal::bad_request(format!("Last-Event-ID: {why}")))?
        .unwrap_or_default();
    let mut cursor = Cursor::default();
    let mut own = |stream: Stream, param: &str| -> Result<_, Refusal> {
        let position = match given.get(&stream) {
            Some(p) => Some(p.clone()),
            None => since_param(req, param)?,
        };
        if let Some(p) = &position {
            cursor.set(stream, p.clone());
        }
        Ok(position)
    };
    let user = own(Stream::User, "user_since")?;
    let broadcast = own(Stream::Broadcast, "broadcast_since")?;
    let grants = session::grants(identity, tenant);
    let mut channels: Vec<(String, Option<_>)> = Vec::new();
    for name in query_param(req.uri.query(), "channels").unwrap_or_default().split(',').map(str::trim) {
        if name.is_empty() || channels.iter().any(|(c, _)| c == name) {
            continue;
        }
        if let Some((code, message)) = session::refuse_channel(app, tenant, Some(grants), name, channels.len()) {
            let code = ErrorCode::named(code).expect("channel refusals are error codes");
            let error = ApiError::new(code, format!("channel {name:?}: {message}"));
            return Err(Refusal(HandshakeFailure::BadRequest, error));
        }
        let since = given.get(&Stream::Channel(name.to_owned())).cloned();
        if let Some(p) = &since {
            cursor.set(Stream::Channel(name.to_owned()), p.clone());
        }
        channels.push((name.to_owned(), since));
    }
    Ok((Resume { user, broadcast, channels }, cursor))
}
