//! Users' push devices and preferences (docs/PUSH.md). For the tenant's backend (publish
//! key): `POST`/`GET /v1/users/{user}/devices`, `DELETE /v1/users/{user}/devices/{id}`,
//! `GET`/`PUT /v1/users/{user}/push` (quiet hours, time zone, hourly cap). For the user's
//! own client, with the credentials it connects with (a token, or `?user=` on an insecure
//! tenant) and the origin check: `POST /v1/push/{tenant}/devices`,
//! `DELETE /v1/push/{tenant}/devices/{id}` and `GET`/`PUT /v1/push/{tenant}/preferences`,
//! answered to any origin the tenant allows; and `GET /v1/push/{tenant}/web`, the public key
//! browsers subscribe with.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiError;
use super::code::ErrorCode;
use super::error::ErrorBody;
use super::extract::{PathParams, Publisher, UserId, read_body};
use super::handshake::{self, Refusal};
use crate::app::App;
use crate::backend::devices::{DeviceError, DeviceLimits};
use crate::device::{Device, Preferences, Registration};
use crate::tenant::Tenant;

/// Largest registration body.
const MAX_BODY: usize = 8 * 1024;

/// A user's devices.
#[derive(Serialize, ToSchema)]
pub(super) struct DeviceList {
    devices: Vec<Device>,
}

impl From<DeviceError> for ApiError {
    fn from(e: DeviceError) -> Self {
        let code = match e {
            DeviceError::Unavailable(_) => ErrorCode::DevicesUnavailable,
            DeviceError::UserFull(_) | DeviceError::TenantFull(_) => ErrorCode::TooManyDevices,
        };
        Self::new(code, e.to_string())
    }
}

/// Registers a device of the user: a Web Push subscription as the browser's
/// `PushSubscription.toJSON()` gives it, or an FCM or APNs token. Registering the same
/// subscription again replaces it.
#[utoipa::path(post, operation_id = "registerDevice", path = "/v1/users/{user}/devices", tag = "push", security(("publish_key" = [])),
    params(("user" = String, Path, description = "A user id")),
    request_body = Registration,
    responses(
        (status = OK, description = "The device as registered", body = Device),
        (status = BAD_REQUEST, description = "`invalid_field`, naming the field, `bad_body`, or `bad_request` (an invalid user id)", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: a missing or unknown publish key", body = ErrorBody),
        (status = CONFLICT, description = "`too_many_devices`: the user's `push.max_devices_per_user` or the tenant's `max_devices`", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`devices_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn register(
    State(app): State<App>,
    Publisher(tenant): Publisher,
    UserId(user): UserId,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Device>, ApiError> {
    let body = read_body(&headers, body, MAX_BODY).await?;
    registered(&app, &tenant, &user, &body).await.map(Json)
}

async fn registered(app: &App, tenant: &Tenant, user: &str, body: &[u8]) -> Result<Device, ApiError> {
    let registration: Registration = crate::ingest::deserialize(body)?;
    let device = registration
        .device(crate::clock::now_millis())
        .map_err(|e| ApiError::from(crate::ingest::FieldError { field: e.field.into(), message: e.message.into() }))?;
    let limits = DeviceLimits {
        per_user: tenant.config.push.max_devices_per_user,
        per_tenant: tenant.quota.limits().max_devices,
    };
    app.pipeline().push.devices.register(&tenant.id, user, &device, limits).await?;
    Ok(device)
}

/// The user's devices, the latest registration last.
#[utoipa::path(get, operation_id = "listDevices", path = "/v1/users/{user}/devices", tag = "push", security(("publish_key" = [])),
    params(("user" = String, Path, description = "A user id")),
    responses(
        (status = OK, description = "The devices", body = DeviceList),
        (status = BAD_REQUEST, description = "`bad_request`: an invalid user id", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: a missing or unknown publish key", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`devices_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn list(
    State(app): State<App>,
    Publisher(tenant): Publisher,
    UserId(user): UserId,
) -> Result<Json<DeviceList>, ApiError> {
    let devices = app.pipeline().push.devices.list(&tenant.id, &user).await?;
    Ok(Json(DeviceList { devices }))
}

/// Removes a device of the user: nothing is pushed to it from then on.
#[utoipa::path(delete, operation_id = "removeDevice", path = "/v1/users/{user}/devices/{id}", tag = "push", security(("publish_key" = [])),
    params(("user" = String, Path, description = "A user id"), ("id" = String, Path, description = "The device's id")),
    responses(
        (status = NO_CONTENT, description = "Removed"),
        (status = BAD_REQUEST, description = "`bad_request`: an invalid user id", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: a missing or unknown publish key", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_device`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`devices_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn remove(
    State(app): State<App>,
    Publisher(tenant): Publisher,
    PathParams((user, id)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    removed(&app, &tenant, &user, &id).await
}

async fn removed(app: &App, tenant: &Tenant, user: &str, id: &str) -> Result<StatusCode, ApiError> {
    if app.pipeline().push.devices.remove(&tenant.id, user, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(ErrorCode::UnknownDevice, format!("user {user:?} has no device {id:?}")))
    }
}

/// The user's push preferences (none set: `{}`).
#[utoipa::path(get, operation_id = "getPushPreferences", path = "/v1/users/{user}/push", tag = "push", security(("publish_key" = [])),
    params(("user" = String, Path, description = "A user id")),
    responses(
        (status = OK, description = "The preferences", body = Preferences),
        (status = BAD_REQUEST, description = "`bad_request`: an invalid user id", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: a missing or unknown publish key", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`devices_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn preferences(
    State(app): State<App>,
    Publisher(tenant): Publisher,
    UserId(user): UserId,
) -> Result<Json<Preferences>, ApiError> {
    Ok(Json(app.pipeline().push.devices.preferences(&tenant.id, &user).await?))
}

/// Replaces the user's push preferences: quiet hours in their time zone, an hourly cap.
#[utoipa::path(put, operation_id = "setPushPreferences", path = "/v1/users/{user}/push", tag = "push", security(("publish_key" = [])),
    params(("user" = String, Path, description = "A user id")),
    request_body = Preferences,
    responses(
        (status = OK, description = "The preferences as kept", body = Preferences),
        (status = BAD_REQUEST, description = "`invalid_field`, naming the field, `bad_body`, or `bad_request` (an invalid user id)", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: a missing or unknown publish key", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`devices_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn set_preferences(
    State(app): State<App>,
    Publisher(tenant): Publisher,
    UserId(user): UserId,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Preferences>, ApiError> {
    let body = read_body(&headers, body, MAX_BODY).await?;
    kept(&app, &tenant, &user, &body).await.map(Json)
}

async fn kept(app: &App, tenant: &Tenant, user: &str, body: &[u8]) -> Result<Preferences, ApiError> {
    let preferences: Preferences = crate::ingest::deserialize(body)?;
    preferences
        .check()
        .map_err(|e| ApiError::from(crate::ingest::FieldError { field: e.field.into(), message: e.message.into() }))?;
    app.pipeline().push.devices.set_preferences(&tenant.id, user, &preferences).await?;
    Ok(preferences)
}

/// The preferences of the user the client's credentials name.
#[utoipa::path(get, operation_id = "getOwnPushPreferences", path = "/v1/push/{tenant}/preferences", tag = "clients",
    params(("tenant" = String, Path, description = "A tenant id")),
    responses(
        (status = OK, description = "The preferences", body = Preferences),
        (status = UNAUTHORIZED, description = "`unauthorized`, `token_expired` or `token_revoked`", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden_origin` or `denied`", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`devices_unavailable` or `auth_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn own_preferences(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PathParams(tenant_id): PathParams<String>,
    req: Request,
) -> Response {
    for_client(&app, &tenant_id, peer, req, async |tenant, user, _, _| {
        Ok(Json(app.pipeline().push.devices.preferences(&tenant.id, &user).await?))
    })
    .await
}

/// Replaces the preferences of the user the client's credentials name.
#[utoipa::path(put, operation_id = "setOwnPushPreferences", path = "/v1/push/{tenant}/preferences", tag = "clients",
    params(("tenant" = String, Path, description = "A tenant id")),
    request_body = Preferences,
    responses(
        (status = OK, description = "The preferences as kept", body = Preferences),
        (status = BAD_REQUEST, description = "`invalid_field`, naming the field, or `bad_body`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`, `token_expired` or `token_revoked`", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden_origin` or `denied`", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`devices_unavailable` or `auth_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn set_own_preferences(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PathParams(tenant_id): PathParams<String>,
    req: Request,
) -> Response {
    for_client(&app, &tenant_id, peer, req, async |tenant, user, headers, body| {
        let body = read_body(headers, body, MAX_BODY).await?;
        kept(&app, &tenant, &user, &body).await.map(Json)
    })
    .await
}

/// A CORS preflight for the client's preferences.
#[utoipa::path(options, operation_id = "preflightOwnPushPreferences", path = "/v1/push/{tenant}/preferences", tag = "clients",
    params(("tenant" = String, Path, description = "A tenant id")),
    responses((status = NO_CONTENT, description = "The CORS answer (any origin may ask; the request itself checks the origin)")))]
pub(super) async fn preferences_preflight(headers: HeaderMap) -> Response {
    handshake::preflight(&headers, "GET, PUT")
}

/// Serves a client route: `f` gets the tenant, the user the client's credentials name, and
/// the request's headers and body; its answer, or the refusal, is readable by the page that
/// asked whatever its origin.
async fn for_client<T: IntoResponse>(
    app: &App,
    tenant_id: &str,
    peer: SocketAddr,
    req: Request,
    f: impl AsyncFnOnce(Arc<Tenant>, String, &HeaderMap, Body) -> Result<T, ApiError>,
) -> Response {
    let (parts, body) = req.into_parts();
    let answer = match client(app, tenant_id, &parts, peer).await {
        Ok((tenant, user)) => f(tenant, user, &parts.headers, body).await,
        Err(e) => Err(e),
    };
    let mut res = answer.into_response();
    handshake::readable_by_origin(&parts.headers, res.headers_mut());
    res
}

/// The tenant of a client route, and the user its credentials name.
async fn client(app: &App, tenant_id: &str, req: &Parts, peer: SocketAddr) -> Result<(Arc<Tenant>, String), ApiError> {
    let tenant = app
        .tenants()
        .get(tenant_id)
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownTenant, format!("no tenant {tenant_id:?}")))?;
    let (identity, _) = handshake::identify(app, &tenant, req, peer).await.map_err(|Refusal(_, e)| e)?;
    Ok((tenant, identity.user))
}

/// Registers a device of the user the client's credentials name (as the client connects:
/// `?token=` or a bearer token, `?user=` on an insecure tenant).
#[utoipa::path(post, operation_id = "registerOwnDevice", path = "/v1/push/{tenant}/devices", tag = "clients",
    params(("tenant" = String, Path, description = "A tenant id")),
    request_body = Registration,
    responses(
        (status = OK, description = "The device as registered", body = Device),
        (status = BAD_REQUEST, description = "`invalid_field`, naming the field, or `bad_body`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`, `token_expired` or `token_revoked`", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden_origin` or `denied`", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = CONFLICT, description = "`too_many_devices`", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`devices_unavailable` or `auth_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn register_own(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PathParams(tenant_id): PathParams<String>,
    req: Request,
) -> Response {
    for_client(&app, &tenant_id, peer, req, async |tenant, user, headers, body| {
        let body = read_body(headers, body, MAX_BODY).await?;
        registered(&app, &tenant, &user, &body).await.map(Json)
    })
    .await
}

/// Removes a device of the user the client's credentials name.
#[utoipa::path(delete, operation_id = "removeOwnDevice", path = "/v1/push/{tenant}/devices/{id}", tag = "clients",
    params(("tenant" = String, Path, description = "A tenant id"), ("id" = String, Path, description = "The device's id")),
    responses(
        (status = NO_CONTENT, description = "Removed"),
        (status = UNAUTHORIZED, description = "`unauthorized`, `token_expired` or `token_revoked`", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden_origin` or `denied`", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant` or `unknown_device`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`devices_unavailable` or `auth_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn remove_own(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PathParams((tenant_id, id)): PathParams<(String, String)>,
    req: Request,
) -> Response {
    for_client(&app, &tenant_id, peer, req, async |tenant, user, _, _| removed(&app, &tenant, &user, &id).await).await
}

/// A CORS preflight for registering a device.
#[utoipa::path(options, operation_id = "preflightRegisterOwnDevice", path = "/v1/push/{tenant}/devices", tag = "clients",
    params(("tenant" = String, Path, description = "A tenant id")),
    responses((status = NO_CONTENT, description = "The CORS answer (any origin may ask; the request itself checks the origin)")))]
pub(super) async fn register_preflight(headers: HeaderMap) -> Response {
    handshake::preflight(&headers, "POST")
}

/// A CORS preflight for removing a device.
#[utoipa::path(options, operation_id = "preflightRemoveOwnDevice", path = "/v1/push/{tenant}/devices/{id}", tag = "clients",
    params(("tenant" = String, Path, description = "A tenant id"), ("id" = String, Path, description = "The device's id")),
    responses((status = NO_CONTENT, description = "The CORS answer (any origin may ask; the request itself checks the origin)")))]
pub(super) async fn remove_preflight(headers: HeaderMap) -> Response {
    handshake::preflight(&headers, "DELETE")
}

/// The key browsers subscribe with (`applicationServerKey`).
#[derive(Serialize, ToSchema)]
pub(super) struct WebPushKey {
    /// Base64url of the tenant's VAPID public key (a P-256 point).
    vapid_public_key: String,
}

/// The tenant's Web Push public key, for `pushManager.subscribe` (public: anyone may read it).
#[utoipa::path(get, operation_id = "webPushKey", path = "/v1/push/{tenant}/web", tag = "clients",
    params(("tenant" = String, Path, description = "A tenant id")),
    responses(
        (status = OK, description = "The key", body = WebPushKey),
        (status = NOT_FOUND, description = "`unknown_tenant`, or `push_not_configured`: the tenant has no Web Push key", body = ErrorBody),
    ))]
pub(super) async fn web_key(
    State(app): State<App>,
    PathParams(tenant_id): PathParams<String>,
    headers: HeaderMap,
) -> Response {
    let answer = (|| -> Result<WebPushKey, ApiError> {
        let tenant = app
            .tenants()
            .get(&tenant_id)
            .ok_or_else(|| ApiError::new(ErrorCode::UnknownTenant, format!("no tenant {tenant_id:?}")))?;
        let web = tenant.config.push.web.as_ref();
        let vapid = web.and_then(|w| crate::push::vapid::Vapid::from_private(&w.vapid_private_key).ok());
        let vapid =
            vapid.ok_or_else(|| ApiError::new(ErrorCode::PushNotConfigured, "the tenant has no Web Push key"))?;
        Ok(WebPushKey { vapid_public_key: vapid.public_key() })
    })();
    let mut res = answer.map(Json).into_response();
    handshake::readable_by_origin(&headers, res.headers_mut());
    res
}
