//! Tenant administration (admin token only):
//!
//! - `POST /v1/admin/tenants`: create a tenant; answers its keys, once;
//! - `GET /v1/admin/tenants` and `GET /v1/admin/tenants/{tenant}`: settings, key
//!   fingerprints and creation times, never a secret;
//! - `PATCH /v1/admin/tenants/{tenant}`: settings, with `If-Match` on the control-plane
//!   version;
//! - `POST /v1/admin/tenants/{tenant}/keys/{publish|management}`: rotate a key, with an
//!   overlap in which the previous keys still work;
//! - `DELETE /v1/admin/tenants/{tenant}`: its keys stop working, its connections are closed
//!   with 4004 on every node, its plugins are removed, and a second later its history,
//!   presence and ingest streams.
//!
//! Tenants from `config.toml` are listed but read-only (409 `managed_by_config`).

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiError;
use super::code::ErrorCode;
use super::error::ErrorBody;
use super::extract::{Admin, PathParams, parse_json, random_bytes, read_body};
use crate::alert::PushWhen;
use crate::app::App;
use crate::backend::control::{StoreError, StoredKey, StoredTenant, TenantSettings};
use crate::config::{
    ApnsCredentials, AuthConfig, PushConfig, PusherCredentials, SlowClientPolicy, TenantLimits, WebPushCredentials,
    valid_tenant_id,
};
use crate::control;
use crate::tenant::{Key, KeyDigest, Source, Tenant, hex};

/// Largest body of a tenant creation.
const MAX_BODY: usize = 64 * 1024;
/// Stands in for the publish key when settings are validated without one.
const VALIDATION_KEY: &str = "validation-only";

/// `POST /v1/admin/tenants`: `{"id", ...settings}`; every setting has the default and rules
/// of `[tenants.<id>]` in `config.toml` (docs/OPERATIONS.md).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "acme", "auth": {"mode": "jwt", "hs256_secret": "a-long-random-secret"},
    "allowed_origins": ["https://app.acme.example"], "history": {"size": 100, "ttl": "10m", "acks": true},
    "limits": {"max_connections": 10000, "publish_rate": 500}}))]
pub(super) struct NewTenant {
    /// 1-64 characters of a-z, 0-9, '-' and '_'.
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    id: String,
    #[serde(default)]
    auth: AuthConfig,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    default_channels: Option<Vec<String>>,
    #[serde(default)]
    slow_client: crate::config::SlowClientPolicy,
    #[serde(default)]
    history: crate::config::HistoryConfig,
    #[serde(default)]
    compression: crate::config::CompressionConfig,
    #[serde(default)]
    limits: crate::config::LimitOverrides,
    /// Push to devices (docs/PUSH.md); `web.vapid_private_key` imports a key pair browsers
    /// already subscribed with, `POST .../push/web` makes a new one.
    #[serde(default)]
    push: PushConfig,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Lost { .. } => {
                Self::new(ErrorCode::StoreUnavailable, e.to_string())
            }
            _ => Self::new(ErrorCode::StoreError, e.to_string()),
        }
    }
}

/// Creates a tenant; the answer carries its keys, shown this once.
#[utoipa::path(post, operation_id = "createTenant", path = "/v1/admin/tenants", tag = "tenants", security(("admin_token" = [])),
    request_body = NewTenant,
    responses(
        (status = CREATED, description = "The tenant and its keys", body = CreatedTenant),
        (status = BAD_REQUEST, description = "`invalid_field`, naming the field, or `bad_body`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
        (status = CONFLICT, description = "`tenant_exists`, or `tenant_gone` (deleted while being created)", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn create(
    State(app): State<App>,
    _: Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<CreatedTenant>), ApiError> {
    let body = read_body(&headers, body, MAX_BODY).await?;
    let new: NewTenant = parse_json(&body)?;
    let (id, settings) = settings(new);
    let (publish_key, management_key) = (secret("pk")?, secret("mk")?);
    check(&app, &id, &settings, &publish_key)?;
    let stored = StoredTenant {
        settings,
        publish_keys: vec![StoredKey { sha256: KeyDigest::of(&publish_key).to_hex(), expires_at: None }],
        management_keys: vec![StoredKey { sha256: KeyDigest::of(&management_key).to_hex(), expires_at: None }],
        created_at: crate::clock::now_millis() / 1000,
        revision: 0,
    };
    control::change(&app, |state| {
        if app.tenants().get(&id).is_some() || state.tenants.contains_key(&id) {
            return Err(ApiError::new(ErrorCode::TenantExists, format!("tenant {id:?} already exists")));
        }
        state.tenants.insert(id.clone(), stored.clone());
        Ok(())
    })
    .await?;
    let tenant = app.tenants().get(&id).ok_or_else(|| gone(&id))?;
    if tenant.auth.is_insecure() {
        tracing::warn!(tenant = id, "tenant created with INSECURE auth: any client can claim any user with ?user=");
    }
    // The answer says whether the provider's key set could be fetched.
    tenant.auth.first_fetch().await;
    let tenant = describe(app.tenants(), &tenant);
    Ok((StatusCode::CREATED, Json(CreatedTenant { tenant, publish_key, management_key })))
}

/// Every tenant.
#[derive(Serialize, ToSchema)]
pub(super) struct Tenants {
    tenants: Vec<TenantView>,
}

/// Every tenant, by id: settings and key fingerprints, never a secret.
#[utoipa::path(get, operation_id = "listTenants", path = "/v1/admin/tenants", tag = "tenants", security(("admin_token" = [])),
    responses(
        (status = OK, description = "The tenants", body = Tenants),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
    ))]
pub(super) async fn list(State(app): State<App>, _: Admin) -> Json<Tenants> {
    let mut tenants = app.tenants().all();
    tenants.sort_by(|a, b| a.id.cmp(&b.id));
    Json(Tenants { tenants: tenants.iter().map(|t| describe(app.tenants(), t)).collect() })
}

/// One tenant; its `ETag` is the control-plane version, for `If-Match` on `PATCH`.
#[utoipa::path(get, operation_id = "getTenant", path = "/v1/admin/tenants/{tenant}", tag = "tenants", security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "A tenant id")),
    responses(
        (status = OK, description = "The tenant", body = TenantView, headers(("ETag" = String, description = "The control-plane version"))),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
    ))]
pub(super) async fn get(
    State(app): State<App>,
    _: Admin,
    PathParams(id): PathParams<String>,
) -> Result<(HeaderMap, Json<TenantView>), ApiError> {
    // The last version this node saw: `GET` answers from the node's state, Redis or not.
    let version = *app.control().store.watch().borrow();
    let tenant = app.tenants().get(&id).ok_or_else(|| unknown(&id))?;
    Ok((etag(version), Json(describe(app.tenants(), &tenant))))
}

/// `PATCH /v1/admin/tenants/{tenant}`: the settings to change; the others stay.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"allowed_origins": ["https://app.acme.example", "https://beta.acme.example"], "slow_client": "drop_oldest"}))]
pub(super) struct Patch {
    auth: Option<AuthConfig>,
    allowed_origins: Option<Vec<String>>,
    default_channels: Option<Vec<String>>,
    slow_client: Option<crate::config::SlowClientPolicy>,
    history: Option<crate::config::HistoryConfig>,
    compression: Option<crate::config::CompressionConfig>,
    limits: Option<crate::config::LimitOverrides>,
    /// Replaces the push settings; the providers' credentials stay unless `web`, `fcm` or
    /// `apns` is given.
    push: Option<PushConfig>,
}

impl Patch {
    fn apply_to(self, s: &mut TenantSettings) {
        s.auth = self.auth.unwrap_or_else(|| s.auth.clone());
        s.allowed_origins = self.allowed_origins.unwrap_or_else(|| s.allowed_origins.clone());
        s.default_channels = self.default_channels.unwrap_or_else(|| s.default_channels.clone());
        s.slow_client = self.slow_client.unwrap_or(s.slow_client);
        s.history = self.history.unwrap_or(s.history);
        s.compression = self.compression.unwrap_or(s.compression);
        s.limits = self.limits.unwrap_or(s.limits);
        if let Some(push) = self.push {
            let web = push.web.or_else(|| s.push.web.take());
            let fcm = push.fcm.or_else(|| s.push.fcm.take());
            let apns = push.apns.or_else(|| s.push.apns.take());
            s.push = PushConfig { web, fcm, apns, ..push };
        }
    }
}

/// Changes a tenant's settings for new connections and publishes. With `If-Match: "N"`
/// (N: the control-plane version, the `ETag` of `GET`), refused with 409 `version_conflict`
/// if anything changed since.
#[utoipa::path(patch, operation_id = "updateTenant", path = "/v1/admin/tenants/{tenant}", tag = "tenants", security(("admin_token" = [])),
    params(
        ("tenant" = String, Path, description = "A tenant id"),
        ("If-Match" = Option<String>, Header, description = "`\"N\"`: the `ETag` of `GET`"),
    ),
    request_body = Patch,
    responses(
        (status = OK, description = "The tenant", body = TenantView, headers(("ETag" = String, description = "The new control-plane version"))),
        (status = BAD_REQUEST, description = "`invalid_field`, naming the field, or `bad_body`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = CONFLICT, description = "`version_conflict`, `managed_by_config` or `tenant_gone`", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn patch(
    State(app): State<App>,
    _: Admin,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(HeaderMap, Json<TenantView>), ApiError> {
    let tenant = app.tenants().get(&id).ok_or_else(|| unknown(&id))?;
    if tenant.source == Source::Config {
        return Err(managed_by_config(&id));
    }
    let expected = if_match(&headers)?;
    let body = read_body(&headers, body, MAX_BODY).await?;
    let patch: Patch = parse_json(&body)?;
    let version = control::change(&app, |state| {
        if expected.is_some_and(|v| v != state.version) {
            let message = format!("the tenants changed since version {}; now {}", expected.unwrap_or(0), state.version);
            return Err(ApiError::new(ErrorCode::VersionConflict, message));
        }
        let stored = state.tenants.get_mut(&id).ok_or_else(|| unknown(&id))?;
        let mut settings = stored.settings.clone();
        patch.clone().apply_to(&mut settings);
        check(&app, &id, &settings, VALIDATION_KEY)?;
        stored.settings = settings;
        stored.revision += 1;
        Ok(state.version + 1)
    })
    .await?;
    let tenant = app.tenants().get(&id).ok_or_else(|| gone(&id))?;
    tenant.auth.first_fetch().await;
    Ok((etag(version), Json(describe(app.tenants(), &tenant))))
}

/// The version an `If-Match` header names, if any.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(axum::http::header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or("").trim().trim_start_matches("W/").trim_matches('"');
    text.parse()
        .map(Some)
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "If-Match must be a version, as in the ETag of GET"))
}

fn etag(version: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = axum::http::HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header");
    headers.insert(axum::http::header::ETAG, value);
    headers
}

/// `POST /v1/admin/tenants/{tenant}/keys/{publish|management}`: body `{"overlap": "10m"}`.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"overlap": "10m"}))]
pub(super) struct Rotation {
    /// How long the previous keys keep working; none: they stop at once.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>)]
    overlap: Option<Duration>,
}

/// A rotated key, shown this once.
#[derive(Serialize, ToSchema)]
pub(super) struct Rotated {
    id: String,
    /// `publish` or `management`.
    kind: String,
    key: String,
    /// Unix milliseconds.
    previous_keys_expire_at: u64,
}

/// Rotates a tenant's publish or management key; the previous keys keep working for the
/// overlap. The body is optional.
#[utoipa::path(post, operation_id = "rotateTenantKey", path = "/v1/admin/tenants/{tenant}/keys/{kind}", tag = "tenants", security(("admin_token" = [])),
    params(
        ("tenant" = String, Path, description = "A tenant id"),
        ("kind" = String, Path, description = "`publish` or `management`"),
    ),
    request_body(content = Option<Rotation>, description = "Optional: without it the previous keys stop at once"),
    responses(
        (status = OK, description = "The new key, shown this once", body = Rotated),
        (status = BAD_REQUEST, description = "`invalid_field` or `bad_body`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant` or `unknown_key_kind`", body = ErrorBody),
        (status = CONFLICT, description = "`managed_by_config`", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn rotate(
    State(app): State<App>,
    _: Admin,
    PathParams((id, kind)): PathParams<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Rotated>, ApiError> {
    let tenant = app.tenants().get(&id).ok_or_else(|| unknown(&id))?;
    if tenant.source == Source::Config {
        return Err(managed_by_config(&id));
    }
    let prefix = match kind.as_str() {
        "publish" => "pk",
        "management" => "mk",
        _ => {
            return Err(ApiError::new(
                ErrorCode::UnknownKeyKind,
                format!("no key kind {kind:?}: use publish or management"),
            ));
        }
    };
    let body = read_body(&headers, body, MAX_BODY).await?;
    let rotation: Rotation =
        if body.iter().all(u8::is_ascii_whitespace) { Rotation::default() } else { parse_json(&body)? };
    let key = secret(prefix)?;
    let now = crate::clock::now_millis();
    let until = now + rotation.overlap.map_or(0, |d| d.as_millis() as u64);
    control::change(&app, |state| {
        let stored = state.tenants.get_mut(&id).ok_or_else(|| unknown(&id))?;
        let keys = if prefix == "pk" { &mut stored.publish_keys } else { &mut stored.management_keys };
        keys.retain(|k| k.expires_at.is_none_or(|t| t > now));
        for k in keys.iter_mut() {
            k.expires_at = Some(k.expires_at.map_or(until, |t| t.min(until)));
        }
        keys.insert(0, StoredKey { sha256: KeyDigest::of(&key).to_hex(), expires_at: None });
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(Json(Rotated { id, kind, key, previous_keys_expire_at: until }))
}

/// Deletes a tenant: its keys stop working, its connections are closed (4004) on every node,
/// its plugins are removed, and a second later its history, presence and ingest streams.
#[utoipa::path(delete, operation_id = "deleteTenant", path = "/v1/admin/tenants/{tenant}", tag = "tenants", security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "A tenant id")),
    responses(
        (status = NO_CONTENT, description = "Deleted"),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = CONFLICT, description = "`managed_by_config`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn delete(
    State(app): State<App>,
    _: Admin,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = app.tenants().get(&id).ok_or_else(|| unknown(&id))?;
    if tenant.source == Source::Config {
        return Err(managed_by_config(&id));
    }
    control::change(&app, |state| {
        state.plugins.remove(&id);
        state.webhooks.remove(&id);
        state.webhook_pauses.remove(&id);
        state.tenants.remove(&id).map(drop).ok_or_else(|| unknown(&id))
    })
    .await?;
    app.lifecycle().workers.spawn(control::forget(app.clone(), tenant));
    Ok(StatusCode::NO_CONTENT)
}

fn settings(new: NewTenant) -> (String, TenantSettings) {
    let settings = TenantSettings {
        auth: new.auth,
        allowed_origins: new.allowed_origins,
        default_channels: new.default_channels.unwrap_or_else(|| vec!["*".into()]),
        slow_client: new.slow_client,
        history: new.history,
        compression: new.compression,
        limits: new.limits,
        pusher: None,
        push: new.push,
    };
    (new.id, settings)
}

/// The same rules as a tenant in `config.toml`, errors naming the field.
fn check(app: &App, id: &str, settings: &TenantSettings, publish_key: &str) -> Result<(), ApiError> {
    if !valid_tenant_id(id) {
        let message = "tenant ids are 1-64 characters of a-z, 0-9, '-' and '_'";
        return Err(crate::ingest::FieldError { field: "id".into(), message: message.into() }.into());
    }
    let config = settings.config(publish_key.to_owned());
    let checked =
        config.validate(id).and_then(|()| app.config().plugins.check(&format!("tenants.{id}.limits"), &config.limits));
    checked.map_err(|e| {
        let (field, message) = match e {
            crate::config::ConfigError::Invalid { key, message } => {
                (key.trim_start_matches(&format!("tenants.{id}.")).to_owned(), message)
            }
            other => ("body".to_owned(), other.to_string()),
        };
        ApiError::from(crate::ingest::FieldError { field, message })
    })
}

/// A new random key: `prefix_` and 32 random bytes in hex.
/// `POST /v1/admin/tenants/{tenant}/pusher`: `{"client_events": true}`, optional.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PusherRequest {
    /// Whether clients may send `client-*` events; unchanged (or off, for a new app) without.
    client_events: Option<bool>,
}

/// A tenant's Pusher app with its secret: shown this once.
#[derive(Serialize, ToSchema)]
pub(super) struct PusherApp {
    app_id: String,
    key: String,
    secret: String,
    client_events: bool,
}

/// Gives the tenant a Pusher app (an app id of digits, a key and a secret), or a new secret
/// for the one it has (the previous secret stops at once: Pusher apps have one).
#[utoipa::path(post, operation_id = "rotatePusherApp", path = "/v1/admin/tenants/{tenant}/pusher", tag = "tenants", security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "A tenant id")),
    request_body(content = Option<PusherRequest>, description = "Optional"),
    responses(
        (status = OK, description = "The app and its secret, shown this once", body = PusherApp),
        (status = BAD_REQUEST, description = "`invalid_field` or `bad_body`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = CONFLICT, description = "`managed_by_config`", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn pusher(
    State(app): State<App>,
    _: Admin,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PusherApp>, ApiError> {
    api_tenant(&app, &id)?;
    let body = read_body(&headers, body, MAX_BODY).await?;
    let request: PusherRequest =
        if body.iter().all(u8::is_ascii_whitespace) { PusherRequest::default() } else { parse_json(&body)? };
    let fresh = PusherCredentials {
        app_id: u64::from_le_bytes(random_bytes::<8>()?).to_string(),
        key: hex(&random_bytes::<10>()?),
        secret: hex(&random_bytes::<20>()?),
        client_events: false,
    };
    let credentials = control::change(&app, |state| {
        let stored = state.tenants.get_mut(&id).ok_or_else(|| unknown(&id))?;
        let current = stored.settings.pusher.take();
        let client_events = request.client_events.or(current.as_ref().map(|c| c.client_events)).unwrap_or(false);
        let credentials = match current {
            Some(c) => PusherCredentials { secret: fresh.secret.clone(), client_events, ..c },
            None => PusherCredentials { client_events, ..fresh.clone() },
        };
        stored.settings.pusher = Some(credentials.clone());
        stored.revision += 1;
        Ok::<_, ApiError>(credentials)
    })
    .await?;
    let PusherCredentials { app_id, key, secret, client_events } = credentials;
    Ok(Json(PusherApp { app_id, key, secret, client_events }))
}

/// Removes the tenant's Pusher app: its clients are refused from then on (4001).
#[utoipa::path(delete, operation_id = "deletePusherApp", path = "/v1/admin/tenants/{tenant}/pusher", tag = "tenants", security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "A tenant id")),
    responses(
        (status = NO_CONTENT, description = "Removed (or there was none)"),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = CONFLICT, description = "`managed_by_config`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn remove_pusher(
    State(app): State<App>,
    _: Admin,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    api_tenant(&app, &id)?;
    control::change(&app, |state| {
        let stored = state.tenants.get_mut(&id).ok_or_else(|| unknown(&id))?;
        if stored.settings.pusher.take().is_some() {
            stored.revision += 1;
        }
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/admin/tenants/{tenant}/push/web`: `{"contact": "mailto:ops@acme.example"}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewWebPush {
    /// `mailto:` or `https:`: where push services may write about this sender.
    contact: String,
}

/// Gives the tenant a new VAPID key pair for Web Push (the private key never leaves the
/// node's store); the answer is the public key browsers subscribe with. Browsers subscribed
/// with a previous key must subscribe again: to keep a key pair, import it with
/// `push.web` on `PATCH` instead.
#[utoipa::path(post, operation_id = "createWebPushKeys", path = "/v1/admin/tenants/{tenant}/push/web", tag = "tenants", security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "A tenant id")),
    request_body = NewWebPush,
    responses(
        (status = OK, description = "The new public key", body = WebPushView),
        (status = BAD_REQUEST, description = "`invalid_field` or `bad_body`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = CONFLICT, description = "`managed_by_config`", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn web_push(
    State(app): State<App>,
    _: Admin,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<WebPushView>, ApiError> {
    api_tenant(&app, &id)?;
    let body = read_body(&headers, body, MAX_BODY).await?;
    let NewWebPush { contact } = parse_json(&body)?;
    let (vapid_private_key, vapid_public_key) = crate::push::vapid::generate();
    let web = WebPushCredentials { vapid_private_key, contact: contact.clone() };
    change_push(&app, &id, |push| push.web = Some(web.clone())).await?;
    Ok(Json(WebPushView { vapid_public_key, contact }))
}

/// Removes the tenant's Web Push identity: nothing is pushed to browsers from then on.
#[utoipa::path(delete, operation_id = "deleteWebPushKeys", path = "/v1/admin/tenants/{tenant}/push/web", tag = "tenants", security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "A tenant id")),
    responses(
        (status = NO_CONTENT, description = "Removed (or there was none)"),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = CONFLICT, description = "`managed_by_config`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn remove_web_push(
    State(app): State<App>,
    _: Admin,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    remove_provider(&app, &id, |push| push.web = None).await
}

/// `PUT /v1/admin/tenants/{tenant}/push/fcm`: the service account's key file as Firebase
/// gives it, and FCM's URL when it is not Google's.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewFcm {
    /// The key file's JSON object (`project_id`, `client_email`, `private_key`, `token_uri`).
    #[schema(value_type = Object)]
    service_account: serde_json::Value,
    base_url: Option<String>,
}

/// Sets or replaces the tenant's Firebase credentials (a service account that may send
/// messages); the key is never shown again.
#[utoipa::path(put, operation_id = "setFcmCredentials", path = "/v1/admin/tenants/{tenant}/push/fcm", tag = "tenants", security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "A tenant id")),
    request_body = NewFcm,
    responses(
        (status = OK, description = "The project", body = FcmView),
        (status = BAD_REQUEST, description = "`invalid_field` (`push.fcm.service_account`, `push.fcm.base_url`) or `bad_body`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = CONFLICT, description = "`managed_by_config`", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn fcm(
    State(app): State<App>,
    _: Admin,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<FcmView>, ApiError> {
    let push = set_provider(&app, &id, &headers, body, |push, given: &NewFcm| {
        push.fcm = Some(crate::config::FcmCredentials {
            service_account: given.service_account.to_string(),
            base_url: given.base_url.clone().unwrap_or_else(|| "https://fcm.googleapis.com".into()),
        });
    })
    .await?;
    PushView::of(&push).fcm.map(Json).ok_or_else(|| gone(&id))
}

/// Removes the tenant's Firebase credentials: nothing is pushed through FCM from then on.
#[utoipa::path(delete, operation_id = "deleteFcmCredentials", path = "/v1/admin/tenants/{tenant}/push/fcm", tag = "tenants", security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "A tenant id")),
    responses(
        (status = NO_CONTENT, description = "Removed (or there were none)"),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = CONFLICT, description = "`managed_by_config`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn remove_fcm(
    State(app): State<App>,
    _: Admin,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    remove_provider(&app, &id, |push| push.fcm = None).await
}

/// Sets or replaces the tenant's APNs provider key (the key is never shown again).
#[utoipa::path(put, operation_id = "setApnsCredentials", path = "/v1/admin/tenants/{tenant}/push/apns", tag = "tenants", security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "A tenant id")),
    request_body = ApnsCredentials,
    responses(
        (status = OK, description = "The key without its secret", body = ApnsView),
        (status = BAD_REQUEST, description = "`invalid_field` (`push.apns.team_id`, ...) or `bad_body`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = CONFLICT, description = "`managed_by_config`", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn apns(
    State(app): State<App>,
    _: Admin,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ApnsView>, ApiError> {
    let push = set_provider(&app, &id, &headers, body, |push, given: &ApnsCredentials| push.apns = Some(given.clone()))
        .await?;
    PushView::of(&push).apns.map(Json).ok_or_else(|| gone(&id))
}

/// Removes the tenant's APNs key: nothing is pushed to Apple devices from then on.
#[utoipa::path(delete, operation_id = "deleteApnsCredentials", path = "/v1/admin/tenants/{tenant}/push/apns", tag = "tenants", security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "A tenant id")),
    responses(
        (status = NO_CONTENT, description = "Removed (or there was none)"),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = CONFLICT, description = "`managed_by_config`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn remove_apns(
    State(app): State<App>,
    _: Admin,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    remove_provider(&app, &id, |push| push.apns = None).await
}

/// Sets one provider's credentials of an API tenant from the request body (`set` puts them
/// in the settings); the settings after.
async fn set_provider<B: serde::de::DeserializeOwned>(
    app: &App,
    id: &str,
    headers: &HeaderMap,
    body: Body,
    set: impl Fn(&mut PushConfig, &B),
) -> Result<PushConfig, ApiError> {
    api_tenant(app, id)?;
    let body = read_body(headers, body, MAX_BODY).await?;
    let given: B = parse_json(&body)?;
    change_push(app, id, |push| set(push, &given)).await
}

/// Removes one provider's credentials (`f` clears them) of an API tenant.
async fn remove_provider(app: &App, id: &str, f: impl Fn(&mut PushConfig)) -> Result<StatusCode, ApiError> {
    api_tenant(app, id)?;
    change_push(app, id, f).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes the stored tenant's push settings with `f` (checked as a whole; counted as a
/// change only when they differ); the settings after it.
async fn change_push(app: &App, id: &str, f: impl Fn(&mut PushConfig)) -> Result<PushConfig, ApiError> {
    control::change(app, |state| {
        let stored = state.tenants.get_mut(id).ok_or_else(|| unknown(id))?;
        let mut settings = stored.settings.clone();
        f(&mut settings.push);
        if settings.push != stored.settings.push {
            check(app, id, &settings, VALIDATION_KEY)?;
            stored.settings = settings;
            stored.revision += 1;
        }
        Ok::<_, ApiError>(stored.settings.push.clone())
    })
    .await
}

/// The tenant `id`, if it was made through the API (a configured one is read-only here).
fn api_tenant(app: &App, id: &str) -> Result<std::sync::Arc<Tenant>, ApiError> {
    let tenant = app.tenants().get(id).ok_or_else(|| unknown(id))?;
    if tenant.source == Source::Config {
        return Err(managed_by_config(id));
    }
    Ok(tenant)
}

fn secret(prefix: &str) -> Result<String, ApiError> {
    Ok(format!("{prefix}_{}", hex(&random_bytes::<32>()?)))
}

fn unknown(id: &str) -> ApiError {
    ApiError::new(ErrorCode::UnknownTenant, format!("no tenant {id:?}"))
}

fn gone(id: &str) -> ApiError {
    ApiError::new(ErrorCode::TenantGone, format!("tenant {id:?} was deleted meanwhile"))
}

fn managed_by_config(id: &str) -> ApiError {
    let message = format!("tenant {id:?} is defined in config.toml; change it there");
    ApiError::new(ErrorCode::ManagedByConfig, message)
}

/// What the API shows of a tenant: never a secret.
#[derive(Serialize, ToSchema)]
pub(super) struct TenantView {
    id: String,
    /// `config` (read-only here) or `api`.
    source: &'static str,
    /// Unix seconds, for tenants created through the API.
    created_at: Option<u64>,
    /// The first 8 bytes of the current publish key's SHA-256, in hex.
    publish_key_fingerprint: Option<String>,
    management_key_fingerprint: Option<String>,
    /// Every live publish key, the current one first.
    publish_keys: Vec<KeyView>,
    management_keys: Vec<KeyView>,
    auth: AuthView,
    allowed_origins: Vec<String>,
    default_channels: Vec<String>,
    slow_client: SlowClientPolicy,
    history: HistoryView,
    compression: crate::config::CompressionConfig,
    /// The tenant's quotas, its overrides applied to `[limits]`.
    limits: TenantLimits,
    /// Its Pusher app, without the secret (docs/PUSHER.md).
    pusher: Option<PusherView>,
    /// Push to devices, without private keys (docs/PUSH.md).
    push: PushView,
    /// Counts changes of the tenant's settings.
    revision: u64,
}

#[derive(Serialize, ToSchema)]
pub(super) struct PushView {
    when: PushWhen,
    delay_ms: u64,
    ttl_ms: u64,
    max_per_hour: u32,
    max_devices_per_user: usize,
    web: Option<WebPushView>,
    fcm: Option<FcmView>,
    apns: Option<ApnsView>,
}

/// A tenant's APNs key without its private key.
#[derive(Serialize, ToSchema)]
pub(super) struct ApnsView {
    team_id: String,
    key_id: String,
    topic: String,
    base_url: String,
}

/// A tenant's Firebase project without the service account's key.
#[derive(Serialize, ToSchema)]
pub(super) struct FcmView {
    project_id: String,
    client_email: String,
    base_url: String,
}

/// A tenant's Web Push identity without its private key.
#[derive(Serialize, ToSchema)]
pub(super) struct WebPushView {
    /// What browsers subscribe with (`applicationServerKey`): base64url of the P-256 point.
    vapid_public_key: String,
    contact: String,
}

impl PushView {
    fn of(c: &PushConfig) -> Self {
        let web = c.web.as_ref().map(|w| WebPushView {
            vapid_public_key: crate::push::vapid::Vapid::from_private(&w.vapid_private_key)
                .map_or_else(|_| String::new(), |v| v.public_key()),
            contact: w.contact.clone(),
        });
        let fcm = c.fcm.as_ref().and_then(|f| {
            let account = crate::config::ServiceAccount::parse(&f.service_account).ok()?;
            Some(FcmView {
                project_id: account.project_id,
                client_email: account.client_email,
                base_url: f.base_url.clone(),
            })
        });
        let apns = c.apns.as_ref().map(|a| ApnsView {
            team_id: a.team_id.clone(),
            key_id: a.key_id.clone(),
            topic: a.topic.clone(),
            base_url: a.base_url.clone(),
        });
        Self {
            fcm,
            apns,
            when: c.when,
            delay_ms: c.delay.as_millis() as u64,
            ttl_ms: c.ttl.as_millis() as u64,
            max_per_hour: c.max_per_hour,
            max_devices_per_user: c.max_devices_per_user,
            web,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct PusherView {
    app_id: String,
    key: String,
    client_events: bool,
}

/// A tenant, with its keys: shown this once.
#[derive(Serialize, ToSchema)]
pub(super) struct CreatedTenant {
    #[serde(flatten)]
    tenant: TenantView,
    publish_key: String,
    management_key: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct KeyView {
    fingerprint: String,
    /// Unix milliseconds when a rotated-out key stops working.
    expires_at: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct HistoryView {
    size: usize,
    ttl_ms: u64,
    acks: bool,
}

/// The auth settings without their secrets: the mode, fingerprints of keys, the claim checks.
#[derive(Serialize, ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
#[expect(clippy::large_enum_variant, reason = "made once per answer, never stored")]
pub(super) enum AuthView {
    Insecure,
    Jwt {
        hs256_secret_fingerprint: Option<String>,
        rs256_public_key: bool,
        keys: Vec<JwtKeyView>,
        issuer: Vec<String>,
        audience: Vec<String>,
        leeway_secs: u64,
        user_claim: Option<String>,
        channels_claim: Option<String>,
        algorithms: Vec<String>,
        jwks_url: Option<String>,
        /// The provider's key set as this node holds it.
        jwks: Option<crate::auth::JwksStatus>,
    },
}

#[derive(Serialize, ToSchema)]
pub(super) struct JwtKeyView {
    kid: String,
    /// The first 8 bytes of the SHA-256 of its secret (`hs256_secret` or `secret`), in hex.
    hs256_secret_fingerprint: Option<String>,
    rs256_public_key: bool,
    public_key: bool,
}

fn describe(tenants: &crate::tenant::Tenants, t: &Tenant) -> TenantView {
    let keys = tenants.keys(&t.id).unwrap_or_default();
    let list = |keys: &[Key]| {
        keys.iter().map(|k| KeyView { fingerprint: k.digest.fingerprint(), expires_at: k.expires_at }).collect()
    };
    let (source, created_at) = match t.source {
        Source::Config => ("config", None),
        Source::Api { created_at } => ("api", Some(created_at)),
    };
    let c = &t.config;
    TenantView {
        id: t.id.to_string(),
        source,
        created_at,
        publish_key_fingerprint: keys.publish.first().map(|k| k.digest.fingerprint()),
        management_key_fingerprint: keys.management.first().map(|k| k.digest.fingerprint()),
        publish_keys: list(&keys.publish),
        management_keys: list(&keys.management),
        auth: auth(&c.auth, &t.auth),
        allowed_origins: c.allowed_origins.clone(),
        default_channels: c.default_channels.clone(),
        slow_client: c.slow_client,
        history: HistoryView { size: c.history.size, ttl_ms: c.history.ttl.as_millis() as u64, acks: c.history.acks },
        compression: c.compression,
        limits: t.quota.limits(),
        pusher: c.pusher.as_ref().map(|p| PusherView {
            app_id: p.app_id.clone(),
            key: p.key.clone(),
            client_events: p.client_events,
        }),
        push: PushView::of(&c.push),
        revision: t.revision,
    }
}

fn auth(a: &AuthConfig, live: &crate::auth::Authenticator) -> AuthView {
    let fingerprint = |secret: &Option<String>| secret.as_deref().map(|s| KeyDigest::of(s).fingerprint());
    match a {
        AuthConfig::Insecure => AuthView::Insecure,
        AuthConfig::Jwt(j) => AuthView::Jwt {
            hs256_secret_fingerprint: fingerprint(&j.hs256_secret),
            rs256_public_key: j.rs256_public_key.is_some(),
            keys: j
                .keys
                .iter()
                .map(|k| JwtKeyView {
                    kid: k.kid.clone(),
                    hs256_secret_fingerprint: fingerprint(&k.hs256_secret).or_else(|| fingerprint(&k.secret)),
                    rs256_public_key: k.rs256_public_key.is_some(),
                    public_key: k.public_key.is_some(),
                })
                .collect(),
            issuer: j.issuer.clone(),
            audience: j.audience.clone(),
            leeway_secs: j.leeway_secs,
            user_claim: j.user_claim.clone(),
            channels_claim: j.channels_claim.clone(),
            algorithms: j.algorithms.clone(),
            jwks_url: j.jwks_url.clone(),
            jwks: live.jwks(),
        },
    }
}
