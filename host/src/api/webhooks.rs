//! A tenant's webhook endpoints and dead letters (admin token or the tenant's management
//! key):
//! - `GET /v1/admin/tenants/{tenant}/webhooks` lists the endpoints (configured and created
//!   here) with this node's figures; `POST` creates one, showing its secret once;
//! - `PATCH .../webhooks/{id}` changes one's URL, events or batching, `DELETE` removes it,
//!   `POST .../webhooks/{id}/secret` rotates its secret with an overlap in which both sign;
//! - `GET .../webhooks/dead-letters` lists the batches given up on, `POST
//!   .../dead-letters/{id}/replay` sends one again.
//!
//! Endpoints created here live in the control-plane store, so every node has them.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::ApiError;
use super::code::ErrorCode;
use super::error::ErrorBody;
use super::extract::{PathParams, TenantAdmin, parse_json, random_bytes, read_body};
use crate::app::App;
use crate::config::{WebhookBatch, WebhookEndpoint, WebhookFormat};
use crate::control;
use crate::tenant::hex;
use crate::webhook::{DeadLetter, Endpoint, StoredSecret, StoredWebhook, WebhookPause};

const MAX_BODY: usize = 64 * 1024;

/// `POST /v1/admin/tenants/{tenant}/webhooks`; in `PATCH`, every field is optional.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://api.acme.example/notify-hooks", "events": ["user.online", "user.offline"],
    "batch": {"max_events": 100, "max_wait": "200ms"}}))]
pub(super) struct EndpointBody {
    /// `https://...` or `http://...`.
    url: Option<String>,
    /// The event types it gets (docs/WEBHOOKS.md); empty or left out: the default types.
    events: Option<Vec<String>>,
    /// `{"max_events": 1-1000, "max_wait": "200ms"}`.
    #[schema(value_type = Option<Object>)]
    batch: Option<WebhookBatch>,
    /// `standard` (the default) or `pusher` (Pusher's webhooks, signed with the tenant's
    /// Pusher app; set when the endpoint is made).
    format: Option<WebhookFormat>,
}

/// An endpoint as the API shows it: never a secret (one is shown once, when made).
#[derive(Serialize, ToSchema)]
pub(super) struct EndpointView {
    /// `we_...`; a configured endpoint's is its index in the tenant's `webhooks`.
    id: String,
    /// `config` (read-only here) or `api`.
    source: &'static str,
    url: String,
    /// The event types it gets.
    events: Vec<String>,
    #[schema(value_type = Object)]
    batch: Value,
    /// When each secret that still signs stops (Unix ms; null for the current one).
    secrets_expire_at: Vec<Option<u64>>,
    /// Unix seconds (0 for configured endpoints).
    created_at: u64,
    format: WebhookFormat,
    /// `{"at_ms", "reason"}` while paused after failing for `webhooks.pause_after` (on every
    /// node: its events go to the dead letters unsent until it is resumed); null otherwise.
    #[schema(value_type = Option<Object>)]
    paused: Option<WebhookPause>,
    /// This node's figures since it started.
    #[schema(value_type = Object)]
    this_node: Value,
}

impl EndpointView {
    fn of(endpoint: &Endpoint) -> Self {
        let spec = endpoint.spec();
        let m = &endpoint.metrics;
        let now = crate::clock::now_millis();
        Self {
            source: if spec.id.starts_with("we_") { "api" } else { "config" },
            events: crate::webhook::Kind::names(spec.kinds()),
            batch: json!({"max_events": spec.batch.max_events, "max_wait_ms": spec.batch.max_wait.as_millis() as u64}),
            secrets_expire_at: spec
                .secrets
                .iter()
                .map(|s| s.expires_at)
                .filter(|t| t.is_none_or(|t| t > now))
                .collect(),
            created_at: spec.created_at,
            format: spec.format,
            paused: endpoint.pause(),
            this_node: json!({"queued": endpoint.queued(), "sent": m.sent.load(Relaxed), "failed": m.failed.load(Relaxed),
                              "retried": m.retried.load(Relaxed), "dead_lettered": m.dead_lettered.load(Relaxed)}),
            url: spec.url,
            id: spec.id,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct Endpoints {
    endpoints: Vec<EndpointView>,
}

/// A new endpoint or secret: the secret, shown this once.
#[derive(Serialize, ToSchema)]
pub(super) struct WithSecret {
    #[serde(flatten)]
    endpoint: EndpointView,
    /// `whsec_...`: verify requests with it (Standard Webhooks); none for the Pusher
    /// format (verified with the tenant's Pusher secret).
    secret: Option<String>,
}

/// `POST .../webhooks/{id}/secret`: body `{"overlap": "24h"}`.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"overlap": "24h"}))]
pub(super) struct SecretRotation {
    /// How long the previous secrets keep signing beside the new one; none: they stop at once.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>)]
    overlap: Option<Duration>,
}

/// The tenant's webhook endpoints.
#[utoipa::path(get, operation_id = "listWebhooks", path = "/v1/admin/tenants/{tenant}/webhooks", tag = "webhooks",
    security(("admin_token" = []), ("management_key" = [])),
    params(("tenant" = String, Path, description = "A tenant id")),
    responses(
        (status = OK, description = "Configured endpoints first, then those created here", body = Endpoints),
        (status = UNAUTHORIZED, description = "`unauthorized`: no token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: a token that cannot manage this tenant", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
    ))]
pub(super) async fn list(State(app): State<App>, TenantAdmin(tenant): TenantAdmin) -> Json<Endpoints> {
    let endpoints = app.webhooks().endpoints(&tenant.id);
    Json(Endpoints { endpoints: endpoints.iter().map(|e| EndpointView::of(e)).collect() })
}

/// Creates an endpoint on every node; its signing secret is shown this once.
#[utoipa::path(post, operation_id = "createWebhook", path = "/v1/admin/tenants/{tenant}/webhooks", tag = "webhooks",
    security(("admin_token" = []), ("management_key" = [])),
    params(("tenant" = String, Path, description = "A tenant id")),
    request_body = EndpointBody,
    responses(
        (status = CREATED, description = "The endpoint, with its secret", body = WithSecret),
        (status = BAD_REQUEST, description = "`invalid_field` (`field` names it) or `bad_body`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: no token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: a token that cannot manage this tenant", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn create(
    State(app): State<App>,
    TenantAdmin(tenant): TenantAdmin,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<WithSecret>), ApiError> {
    let body: EndpointBody = parse_json(&read_body(&headers, body, MAX_BODY).await?)?;
    let Some(url) = body.url else { return Err(field_error("url", "is required")) };
    let format = body.format.unwrap_or_default();
    let secret = format.is_standard().then(new_secret).transpose()?;
    if !format.is_standard() && tenant.config.pusher.is_none() {
        return Err(field_error("format", "a pusher endpoint needs the tenant's Pusher app"));
    }
    let spec = StoredWebhook {
        id: format!("we_{}", hex(&random_bytes::<8>()?)),
        url,
        events: body.events.unwrap_or_default(),
        batch: body.batch.unwrap_or_default(),
        secrets: secret.iter().map(|s| StoredSecret { secret: s.clone(), expires_at: None }).collect(),
        created_at: crate::clock::now_millis() / 1000,
        format,
    };
    check(&spec)?;
    let tenant_id = tenant.id.to_string();
    control::change(&app, |state| {
        state.webhooks.entry(tenant_id.clone()).or_default().push(spec.clone());
        Ok::<_, ApiError>(())
    })
    .await?;
    let endpoint = shown(&app, &tenant_id, &spec.id)?;
    Ok((StatusCode::CREATED, Json(WithSecret { endpoint, secret })))
}

/// Changes an endpoint's URL, event types or batching on every node, from its next batch.
#[utoipa::path(patch, operation_id = "changeWebhook", path = "/v1/admin/tenants/{tenant}/webhooks/{id}", tag = "webhooks",
    security(("admin_token" = []), ("management_key" = [])),
    params(("tenant" = String, Path, description = "A tenant id"), ("id" = String, Path, description = "An endpoint's id")),
    request_body = EndpointBody,
    responses(
        (status = OK, description = "The endpoint as changed", body = EndpointView),
        (status = BAD_REQUEST, description = "`invalid_field` (`field` names it) or `bad_body`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: no token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: a token that cannot manage this tenant", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant` or `unknown_webhook`", body = ErrorBody),
        (status = CONFLICT, description = "`managed_by_config`: a configured endpoint", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn change(
    State(app): State<App>,
    TenantAdmin(tenant): TenantAdmin,
    PathParams((_, id)): PathParams<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<EndpointView>, ApiError> {
    let body: EndpointBody = parse_json(&read_body(&headers, body, MAX_BODY).await?)?;
    let tenant_id = tenant.id.to_string();
    control::change(&app, |state| {
        let spec = stored(&mut state.webhooks, &tenant_id, &id)?;
        spec.url = body.url.clone().unwrap_or_else(|| spec.url.clone());
        spec.events = body.events.clone().unwrap_or_else(|| spec.events.clone());
        spec.batch = body.batch.unwrap_or(spec.batch);
        check(spec)
    })
    .await?;
    Ok(Json(shown(&app, &tenant_id, &id)?))
}

/// Removes an endpoint from every node; what it had queued is not sent.
#[utoipa::path(delete, operation_id = "deleteWebhook", path = "/v1/admin/tenants/{tenant}/webhooks/{id}", tag = "webhooks",
    security(("admin_token" = []), ("management_key" = [])),
    params(("tenant" = String, Path, description = "A tenant id"), ("id" = String, Path, description = "An endpoint's id")),
    responses(
        (status = NO_CONTENT, description = "Removed"),
        (status = UNAUTHORIZED, description = "`unauthorized`: no token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: a token that cannot manage this tenant", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant` or `unknown_webhook`", body = ErrorBody),
        (status = CONFLICT, description = "`managed_by_config`: a configured endpoint", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn delete(
    State(app): State<App>,
    TenantAdmin(tenant): TenantAdmin,
    PathParams((_, id)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant_id = tenant.id.to_string();
    control::change(&app, |state| {
        stored(&mut state.webhooks, &tenant_id, &id)?;
        let endpoints = state.webhooks.get_mut(&tenant_id).expect("found above");
        endpoints.retain(|e| e.id != id);
        if endpoints.is_empty() {
            state.webhooks.remove(&tenant_id);
        }
        unpause(state, &tenant_id, &id);
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Gives an endpoint a new signing secret, shown this once. For the overlap, requests carry
/// a signature by each secret (`webhook-signature: v1,... v1,...`), so a receiver switches
/// to the new secret whenever it is ready. The body is optional.
#[utoipa::path(post, operation_id = "rotateWebhookSecret", path = "/v1/admin/tenants/{tenant}/webhooks/{id}/secret", tag = "webhooks",
    security(("admin_token" = []), ("management_key" = [])),
    params(("tenant" = String, Path, description = "A tenant id"), ("id" = String, Path, description = "An endpoint's id")),
    request_body(content = Option<SecretRotation>, description = "Optional: without it the previous secrets stop at once"),
    responses(
        (status = OK, description = "The endpoint and its new secret", body = WithSecret),
        (status = BAD_REQUEST, description = "`invalid_field` or `bad_body`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: no token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: a token that cannot manage this tenant", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant` or `unknown_webhook`", body = ErrorBody),
        (status = CONFLICT, description = "`managed_by_config`: a configured endpoint", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn rotate_secret(
    State(app): State<App>,
    TenantAdmin(tenant): TenantAdmin,
    PathParams((_, id)): PathParams<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<WithSecret>, ApiError> {
    let body = read_body(&headers, body, MAX_BODY).await?;
    let rotation: SecretRotation =
        if body.iter().all(u8::is_ascii_whitespace) { SecretRotation::default() } else { parse_json(&body)? };
    let secret = new_secret()?;
    let now = crate::clock::now_millis();
    let until = now + rotation.overlap.map_or(0, |d| d.as_millis() as u64);
    let tenant_id = tenant.id.to_string();
    control::change(&app, |state| {
        let spec = stored(&mut state.webhooks, &tenant_id, &id)?;
        if !spec.format.is_standard() {
            let message = "a pusher endpoint is signed with the tenant's Pusher secret: rotate the app's";
            return Err(field_error("format", message));
        }
        spec.secrets.retain(|s| s.expires_at.is_none_or(|t| t > now));
        for s in &mut spec.secrets {
            s.expires_at = Some(s.expires_at.map_or(until, |t| t.min(until)));
        }
        spec.secrets.insert(0, StoredSecret { secret: secret.clone(), expires_at: None });
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(Json(WithSecret { endpoint: shown(&app, &tenant_id, &id)?, secret: Some(secret) }))
}

/// Resumes a paused endpoint on every node: it sends again from its next batch (the events
/// dead-lettered meanwhile replay through the dead letters).
#[utoipa::path(post, operation_id = "resumeWebhook", path = "/v1/admin/tenants/{tenant}/webhooks/{id}/resume", tag = "webhooks",
    security(("admin_token" = []), ("management_key" = [])),
    params(("tenant" = String, Path, description = "A tenant id"), ("id" = String, Path, description = "An endpoint's id")),
    responses(
        (status = OK, description = "The endpoint, no longer paused", body = EndpointView),
        (status = UNAUTHORIZED, description = "`unauthorized`: no token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: a token that cannot manage this tenant", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant` or `unknown_webhook`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn resume(
    State(app): State<App>,
    TenantAdmin(tenant): TenantAdmin,
    PathParams((_, id)): PathParams<(String, String)>,
) -> Result<Json<EndpointView>, ApiError> {
    let tenant_id = tenant.id.to_string();
    shown(&app, &tenant_id, &id)?;
    control::change(&app, |state| {
        unpause(state, &tenant_id, &id);
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(Json(shown(&app, &tenant_id, &id)?))
}

fn unpause(state: &mut crate::backend::control::ControlState, tenant: &str, id: &str) {
    if let Some(paused) = state.webhook_pauses.get_mut(tenant) {
        paused.remove(id);
        if paused.is_empty() {
            state.webhook_pauses.remove(tenant);
        }
    }
}

/// The endpoint `id` of `tenant` created through the API, to change.
fn stored<'a>(
    webhooks: &'a mut std::collections::BTreeMap<String, Vec<StoredWebhook>>,
    tenant: &str,
    id: &str,
) -> Result<&'a mut StoredWebhook, ApiError> {
    if !id.starts_with("we_") && id.parse::<usize>().is_ok() {
        let message = format!("endpoint {id:?} is in the configuration file; change it there");
        return Err(ApiError::new(ErrorCode::ManagedByConfig, message));
    }
    let found = webhooks.get_mut(tenant).and_then(|list| list.iter_mut().find(|e| e.id == id));
    found.ok_or_else(|| ApiError::new(ErrorCode::UnknownWebhook, format!("no webhook endpoint {id:?}")))
}

/// The view of an endpoint this node just applied.
fn shown(app: &App, tenant: &str, id: &str) -> Result<EndpointView, ApiError> {
    let endpoints = app.webhooks().endpoints(tenant);
    let endpoint = endpoints.iter().find(|e| *e.id == *id);
    // A tenant deleted meanwhile took its endpoints along.
    endpoint
        .map(|e| EndpointView::of(e))
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownWebhook, format!("no webhook endpoint {id:?}")))
}

/// The rules of an endpoint in `config.toml`, errors naming the field.
fn check(spec: &StoredWebhook) -> Result<(), ApiError> {
    let secret = spec.secrets.first().map(|s| s.secret.clone()).unwrap_or_default();
    let (url, events, batch, format) = (spec.url.clone(), spec.events.clone(), spec.batch, spec.format);
    let endpoint = WebhookEndpoint { url, secret, events, batch, format };
    endpoint.validate("body").map_err(|e| match e {
        crate::config::ConfigError::Invalid { key, message } => field_error(key.trim_start_matches("body."), &message),
        other => field_error("body", &other.to_string()),
    })
}

fn field_error(field: &str, message: &str) -> ApiError {
    ApiError::from(crate::ingest::FieldError { field: field.into(), message: message.into() })
}

/// A Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes.
fn new_secret() -> Result<String, ApiError> {
    Ok(format!("whsec_{}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, random_bytes::<32>()?)))
}

/// A batch of webhook events given up on.
#[derive(Serialize, ToSchema)]
pub(super) struct DeadLetterView {
    /// The `webhook-id` it was last sent with; replaying sends it with a new one.
    id: String,
    url: String,
    /// The endpoint's id.
    endpoint: String,
    /// Why it was given up on: the last failure.
    reason: String,
    failed_at_ms: u64,
    /// The events, as the request's body carried them.
    #[schema(value_type = Vec<Object>)]
    events: Vec<Value>,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> Self {
        let events = d.notices.iter().map(|n| n.json()).collect();
        let endpoint = d.endpoint.to_string();
        Self { id: d.id, url: d.url, endpoint, reason: d.reason, failed_at_ms: d.failed_at_ms, events }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct DeadLetters {
    /// Oldest first.
    dead_letters: Vec<DeadLetterView>,
}

/// The tenant's dead-lettered webhook batches on this node.
#[utoipa::path(get, operation_id = "listWebhookDeadLetters", path = "/v1/admin/tenants/{tenant}/webhooks/dead-letters", tag = "webhooks",
    security(("admin_token" = []), ("management_key" = [])),
    params(("tenant" = String, Path, description = "A tenant id")),
    responses(
        (status = OK, description = "The dead letters, oldest first", body = DeadLetters),
        (status = UNAUTHORIZED, description = "`unauthorized`: no token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: a token that cannot manage this tenant", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`: Redis, where cluster mode keeps them, did not answer", body = ErrorBody),
    ))]
pub(super) async fn dead_letters(
    State(app): State<App>,
    TenantAdmin(tenant): TenantAdmin,
) -> Result<Json<DeadLetters>, ApiError> {
    let letters = app.webhooks().dead_letters(&tenant.id).await.map_err(unavailable)?;
    Ok(Json(DeadLetters { dead_letters: letters.into_iter().map(DeadLetterView::from).collect() }))
}

fn unavailable(e: crate::webhook::DeadLetterError) -> ApiError {
    ApiError::new(ErrorCode::StoreUnavailable, e.to_string())
}

/// Sends a dead-lettered batch again, through the endpoint it failed at, as a new request
/// (a new `webhook-id`; each event keeps its `id`).
#[utoipa::path(post, operation_id = "replayWebhookDeadLetter", path = "/v1/admin/tenants/{tenant}/webhooks/dead-letters/{id}/replay", tag = "webhooks",
    security(("admin_token" = []), ("management_key" = [])),
    params(("tenant" = String, Path, description = "A tenant id"), ("id" = String, Path, description = "A dead letter's id")),
    responses(
        (status = ACCEPTED, description = "Queued at its endpoint again; it leaves the dead letters"),
        (status = UNAUTHORIZED, description = "`unauthorized`: no token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: a token that cannot manage this tenant", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant`, or `unknown_dead_letter`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`: Redis, where cluster mode keeps them, did not answer", body = ErrorBody),
    ))]
pub(super) async fn replay(
    State(app): State<App>,
    TenantAdmin(tenant): TenantAdmin,
    PathParams((_, id)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if app.webhooks().replay(&tenant.id, &id).await.map_err(unavailable)? {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::new(ErrorCode::UnknownDeadLetter, format!("no dead letter {id:?} (or its endpoint is gone)")))
    }
}
