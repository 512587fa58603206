//! The checks every client transport's connect request passes (a WebSocket upgrade, an SSE
//! stream), in the order clients meet them: draining, the client address's limits, tenant,
//! origin, credentials, revocation, the transport's own checks, node capacity, then the
//! tenant's quotas. Every refusal is an HTTP status with a JSON body, counted under a
//! handshake failure reason; one that is the client's fault counts against its address.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::code::ErrorCode;
use super::extract::{client_token, query_param};
use crate::addresses::{self, AcceptRefused, Socket};
use crate::admission::Admitted;
use crate::app::App;
use crate::auth::{AuthError, Identity, Verified};
use crate::drain::Drain;
use crate::metrics::HandshakeFailure;
use crate::plugin::bindings::types;
use crate::plugin::hooks::{self, AuthOutcome};
use crate::plugin::{Hook, LoadedPlugin};
use crate::quota::{self, Slots};
use crate::session::{Joining, Resume};
use crate::tenant::{Tenant, Tenants};

/// Why a connect request was refused: the metric it counts under and the answer.
pub(crate) struct Refusal(pub(crate) HandshakeFailure, pub(crate) ApiError);

impl Refusal {
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self(HandshakeFailure::BadRequest, ApiError::new(ErrorCode::BadRequest, message))
    }
}

type Attributes = Vec<(String, String)>;

/// The address a connect request comes from (`peer`, or the client a trusted proxy names).
pub(super) fn client_addr(app: &App, peer: SocketAddr, req: &Parts) -> SocketAddr {
    app.edge().addresses.client_addr(peer, &req.headers)
}

/// Counts and logs a refusal, and answers it. A refusal for the client's own fault (a 4xx
/// other than 429) counts against its address.
pub(super) fn refused(app: &App, tenant_id: &str, client: SocketAddr, refusal: Refusal) -> Response {
    count_refusal(app, tenant_id, client, &refusal);
    refusal.1.into_response()
}

/// Counts and logs a refusal that is answered in some other way (a Pusher client's is a
/// close code after the upgrade).
pub(super) fn count_refusal(app: &App, tenant_id: &str, client: SocketAddr, Refusal(why, error): &Refusal) {
    match app.tenants().get(tenant_id) {
        Some(t) => t.metrics.handshake_failed(*why),
        None => app.metrics().handshake_failed(*why),
    }
    let status = error.status();
    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
        app.edge().addresses.failed(client.ip());
    }
    tracing::debug!(tenant = tenant_id, %client, reason = error.code().as_str(), "connect refused: {error}");
}

/// The answer to a socket refused as it was accepted, and the reason it counts under.
pub(crate) fn refused_at_accept(why: AcceptRefused) -> Refusal {
    match why {
        AcceptRefused::Address(why) => address_refusal(why),
        AcceptRefused::Handshakes => {
            let message = "this node has too many handshakes in progress; retry shortly or on another node";
            let error = ApiError::new(ErrorCode::Busy, message).with_header(header::RETRY_AFTER, HeaderValue::from(1));
            Refusal(HandshakeFailure::Handshakes, error)
        }
    }
}

/// A refusal by the limits of the client's address: 429 with the wait in `Retry-After`.
fn address_refusal(why: addresses::Refused) -> Refusal {
    let (failure, code, message, wait) = match why {
        addresses::Refused::Connections(max) => (
            HandshakeFailure::AddressConnections,
            ErrorCode::TooManyConnections,
            format!("this client address holds its max_connections ({max}) on this node"),
            1,
        ),
        addresses::Refused::Rate(wait) => (
            HandshakeFailure::AddressRate,
            ErrorCode::RateLimited,
            "this client address connects faster than its connect_rate".to_owned(),
            wait.as_secs_f64().ceil() as u64,
        ),
        addresses::Refused::Failures(wait) => (
            HandshakeFailure::AddressFailures,
            ErrorCode::RateLimited,
            "this client address failed too many connects; it is refused for a while".to_owned(),
            wait.as_secs_f64().ceil() as u64,
        ),
    };
    let error = ApiError::new(code, message).with_header(header::RETRY_AFTER, HeaderValue::from(wait.max(1)));
    Refusal(failure, error)
}

/// Runs every check; `transport` adds the transport's own (after the credentials, so a
/// plain GET of a refused URL tells a client whether the credentials are the reason) and
/// gives the positions to resume from.
pub(super) async fn admit<T>(
    app: &App,
    tenant_id: &str,
    peer: SocketAddr,
    req: &Parts,
    transport: impl FnOnce(&Tenant, &Identity) -> Result<(Resume, T), Refusal>,
) -> Result<(Joining, T), Refusal> {
    not_draining(&app.lifecycle().drain)?;
    let address = address(app, peer, req)?;
    let tenant = tenant(app.tenants(), tenant_id)?;
    let (identity, attributes) = identify(app, &tenant, req, peer).await?;
    let (resume, extra) = transport(&tenant, &identity)?;
    let (admitted, quota) = seat(app, &tenant, &identity.user, address)?;
    Ok((Joining { tenant, identity, attributes, resume, admitted, quota, peer }, extra))
}

/// [`admit`] for an anonymous client of `tenant` (a Pusher connection, whose channels check
/// their own signatures): no credentials, and no quota per user.
pub(super) fn admit_anonymous(
    app: &App,
    tenant: Arc<Tenant>,
    peer: SocketAddr,
    req: &Parts,
) -> Result<Joining, Refusal> {
    not_draining(&app.lifecycle().drain)?;
    let address = address(app, peer, req)?;
    check_origin(&tenant, req)?;
    let identity = Identity { user: String::new(), channels: Some(Vec::new()), expires_at: None };
    let (admitted, quota) = seat(app, &tenant, &identity.user, address)?;
    Ok(Joining { tenant, identity, attributes: Vec::new(), resume: Resume::default(), admitted, quota, peer })
}

/// The client address's place in its limits (taken by the socket already, or here).
fn address(app: &App, peer: SocketAddr, req: &Parts) -> Result<Option<addresses::Hold>, Refusal> {
    let counted = req.extensions.get::<Socket>().is_some_and(Socket::counted);
    app.edge().addresses.connect(peer.ip(), counted).map_err(address_refusal)
}

/// Takes the connection's slot on the node and its place in the tenant's quotas.
fn seat(
    app: &App,
    tenant: &Tenant,
    user: &str,
    address: Option<addresses::Hold>,
) -> Result<(Admitted, Slots), Refusal> {
    let admitted = app.edge().admission.try_admit().ok_or_else(|| {
        let message = "this node is at its connection limit; retry on another node";
        Refusal(HandshakeFailure::OverCapacity, ApiError::new(ErrorCode::OverCapacity, message))
    })?;
    let quota = tenant.quota.admit(user).map_err(|why| over_quota(tenant, why))?;
    Ok((admitted.holding(address), quota))
}

fn not_draining(drain: &Drain) -> Result<(), Refusal> {
    if !drain.is_draining() {
        return Ok(());
    }
    let message = "this node is shutting down; connect to another node";
    Err(Refusal(HandshakeFailure::Draining, ApiError::new(ErrorCode::Draining, message)))
}

fn tenant(tenants: &Tenants, tenant_id: &str) -> Result<Arc<Tenant>, Refusal> {
    tenants.get(tenant_id).ok_or_else(|| {
        let error = ApiError::new(ErrorCode::UnknownTenant, format!("no tenant {tenant_id:?}"));
        Refusal(HandshakeFailure::UnknownTenant, error)
    })
}

/// Answers a plain GET of the WebSocket URL, which a client whose upgrade failed sends to
/// learn why (docs/CLIENTS.md): the refusal a connect would get (`transport` adds the
/// transport's own checks), or 400 `not_websocket` when only the upgrade is missing
/// (something on the way drops it). A diagnosis takes no connect token, never counts as a
/// failed connect of its address, and is readable by a page on any origin.
pub(super) async fn diagnose(
    app: &App,
    tenant_id: &str,
    peer: SocketAddr,
    req: &Parts,
    transport: impl FnOnce(&Tenant, &Identity) -> Result<(), Refusal>,
) -> Response {
    let refusal = async {
        not_draining(&app.lifecycle().drain)?;
        app.edge().addresses.check(peer.ip()).map_err(address_refusal)?;
        let tenant = tenant(app.tenants(), tenant_id)?;
        let (identity, _) = identify(app, &tenant, req, peer).await?;
        transport(&tenant, &identity)?;
        let message = "expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)";
        Err::<std::convert::Infallible, _>(Refusal(
            HandshakeFailure::BadRequest,
            ApiError::new(ErrorCode::NotWebsocket, message),
        ))
    };
    let Err(Refusal(_, error)) = refusal.await;
    tracing::debug!(tenant = tenant_id, client = %peer, reason = error.code().as_str(), "diagnosis: {error}");
    let mut res = error.into_response();
    readable_by_origin(&req.headers, res.headers_mut());
    res
}

/// Lets the page that sent `request` read `response`, whatever its origin. A refusal must
/// reach a page on any origin (`forbidden_origin` and `unknown_tenant` included), or the
/// page could only retry blindly; a stream or an ack is only ever answered to an origin
/// that passed the origin check. No credentials (cookies) are involved: tokens travel in
/// the URL or the `Authorization` header.
pub(super) fn readable_by_origin(request: &HeaderMap, response: &mut HeaderMap) {
    if let Some(origin) = request.get(header::ORIGIN) {
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    response.append(header::VARY, HeaderValue::from_static("origin"));
}

/// The answer to a client's side request (an ack, a refresh, a device), readable by the page
/// that sent it whatever its origin.
pub(super) fn readable<T: serde::Serialize>(req: &Parts, answer: Result<T, ApiError>) -> Response {
    let mut res = match answer {
        Ok(json) => axum::Json(json).into_response(),
        Err(e) => e.into_response(),
    };
    readable_by_origin(&req.headers, res.headers_mut());
    res
}

/// A CORS preflight's answer for a client route taking `methods`: any origin may ask (the
/// request itself checks the origin).
pub(super) fn preflight(headers: &HeaderMap, methods: &'static str) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(methods));
    let allowed = HeaderValue::from_static("authorization, content-type, last-event-id");
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    readable_by_origin(headers, h);
    res
}

/// The client's identity and attributes, from an allowed origin with credentials that were
/// not revoked.
pub(super) async fn identify(
    app: &App,
    tenant: &Tenant,
    req: &Parts,
    peer: SocketAddr,
) -> Result<(Identity, Attributes), Refusal> {
    check_origin(tenant, req)?;
    let (Verified { identity, issued_at, token_id, .. }, attributes) = authenticate(app, tenant, req, peer).await?;
    let now = crate::clock::now_millis() / 1000;
    if app.control().revocations.refuses(&tenant.id, &identity.user, issued_at, token_id.as_deref(), now) {
        let message = "these credentials were revoked; sign in again";
        let error = ApiError::new(ErrorCode::TokenRevoked, message);
        return Err(Refusal(HandshakeFailure::Unauthorized, error));
    }
    Ok((identity, attributes))
}

/// A tenant at one of its connection quotas: 429, retry later.
pub(super) fn over_quota(tenant: &Tenant, why: quota::Refusal) -> Refusal {
    let limits = tenant.quota.limits();
    let (failure, code, message) = match why {
        quota::Refusal::Connections => (
            HandshakeFailure::TenantConnections,
            ErrorCode::TooManyConnections,
            format!("the tenant is at its max_connections ({}) across the cluster", limits.max_connections),
        ),
        quota::Refusal::UserConnections => (
            HandshakeFailure::UserConnections,
            ErrorCode::TooManyUserConnections,
            format!("this user is at the tenant's max_connections_per_user ({})", limits.max_connections_per_user),
        ),
    };
    let error = ApiError::new(code, message).with_header(header::RETRY_AFTER, HeaderValue::from_static("1"));
    Refusal(failure, error)
}

/// In `insecure` mode, the attributes a route filter sees, from `?attr.KEY=VALUE` (as an
/// auth plugin would set them), so segment routing can be tried without one. Other modes
/// ignore them: only credentials may claim attributes.
fn development_attributes(tenant: &Tenant, query: Option<&str>) -> Result<Attributes, Refusal> {
    let Some(query) = query.filter(|_| tenant.auth.is_insecure()) else { return Ok(Vec::new()) };
    let pairs: Attributes = form_urlencoded::parse(query.as_bytes())
        .filter_map(|(k, v)| Some((k.strip_prefix("attr.")?.to_owned(), v.into_owned())))
        .collect();
    crate::event::check_attributes(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|(_, why)| Refusal::bad_request(format!("attr.*: {why}")))?;
    Ok(pairs)
}

pub(super) fn check_origin(tenant: &Tenant, req: &Parts) -> Result<(), Refusal> {
    let origin = req.headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if tenant.origin_allowed(origin) {
        return Ok(());
    }
    let message = format!("origin {:?} is not allowed for this tenant", origin.unwrap_or(""));
    Err(Refusal(HandshakeFailure::ForbiddenOrigin, ApiError::new(ErrorCode::ForbiddenOrigin, message)))
}

/// The client's identity from the tenant's auth plugin, or from its configured auth.
async fn authenticate(
    app: &App,
    tenant: &Tenant,
    req: &Parts,
    peer: SocketAddr,
) -> Result<(Verified, Attributes), Refusal> {
    let unauthorized = |error| Refusal(HandshakeFailure::Unauthorized, error);
    let Some(plugin) = app.pipeline().plugins.get(&tenant.id, Hook::Auth) else {
        let query = req.uri.query();
        let token = client_token(query, &req.headers);
        let user = query_param(query, "user");
        return match tenant.auth.authenticate(token.as_deref(), user.as_deref()).await {
            Ok(verified) => Ok((verified, development_attributes(tenant, query)?)),
            Err(e) => {
                let code = if e == AuthError::Expired { ErrorCode::TokenExpired } else { ErrorCode::Unauthorized };
                Err(unauthorized(ApiError::new(code, e.to_string())))
            }
        };
    };
    match PluginView::of(req, peer).authenticate(plugin, &tenant.id).await {
        AuthOutcome::Allow(identity, attributes) => {
            Ok((Verified { identity, issued_at: None, token_id: None, channel: None }, attributes))
        }
        AuthOutcome::Deny { status, reason } => Err(unauthorized(ApiError::denied(status, reason))),
        AuthOutcome::Failed(why) => {
            tracing::warn!(tenant = &*tenant.id, %peer, "auth plugin failed, refusing the connection: {why}");
            let message = "authentication is temporarily unavailable";
            Err(unauthorized(ApiError::new(ErrorCode::AuthUnavailable, message)))
        }
    }
}

/// The handshake's parts an auth plugin sees, decoded once and lent to the call.
struct PluginView<'a> {
    path: &'a str,
    headers: Vec<(&'a str, Cow<'a, str>)>,
    query: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    remote_addr: String,
}

impl<'a> PluginView<'a> {
    fn of(req: &'a Parts, peer: SocketAddr) -> Self {
        let headers = req.headers.iter().map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v.as_bytes()))).collect();
        let query = req.uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).collect()).unwrap_or_default();
        Self { path: req.uri.path(), headers, query, remote_addr: peer.to_string() }
    }

    /// Runs `tenant`'s auth plugin on the handshake as this view shows it.
    async fn authenticate(&self, plugin: Arc<LoadedPlugin>, tenant: &str) -> AuthOutcome {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(k, v)| (*k, &**v)).collect();
        let query: Vec<(&str, &str)> = self.query.iter().map(|(k, v)| (&**k, &**v)).collect();
        let request = types::ConnectRequest {
            tenant,
            path: self.path,
            headers: &headers,
            query: &query,
            remote_addr: &self.remote_addr,
        };
        hooks::authenticate(plugin, request).await
    }
}

/// What a connect request's query may carry (`GET /v1/ws/{tenant}` and `/v1/sse/{tenant}`),
/// for the document; the handshake reads it itself.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct ConnectQuery {
    /// The client's token.
    token: Option<String>,
    /// The user id, for tenants with insecure auth.
    user: Option<String>,
    /// EPOCH:OFFSET: resume the user stream after it.
    user_since: Option<String>,
    /// EPOCH:OFFSET: resume the broadcast stream after it.
    broadcast_since: Option<String>,
    /// Channels to subscribe at connect, comma-separated.
    channels: Option<String>,
    /// `fossil`: the `channels` get delta updates (WebSocket only).
    delta: Option<String>,
    /// Where to resume every stream: an SSE event `id` (`STREAM:EPOCH:OFFSET`, comma-separated).
    last_event_id: Option<String>,
}
