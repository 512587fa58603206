//! A tenant's webhook dead letters: `GET /v1/admin/tenants/{tenant}/webhooks/dead-letters`
//! lists the batches given up on, `POST .../dead-letters/{id}/replay` sends one again.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::ApiError;
use super::code::ErrorCode;
use super::error::ErrorBody;
use super::extract::{PathParams, TenantAdmin};
use crate::app::App;
use crate::webhook::DeadLetter;

/// A batch of webhook events given up on.
#[derive(Serialize, ToSchema)]
pub(super) struct DeadLetterView {
    /// The `webhook-id` it was last sent with; replaying sends it with a new one.
    id: String,
    url: String,
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
        Self { id: d.id, url: d.url, reason: d.reason, failed_at_ms: d.failed_at_ms, events }
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
    ))]
pub(super) async fn dead_letters(State(app): State<App>, TenantAdmin(tenant): TenantAdmin) -> Json<DeadLetters> {
    let letters = app.webhooks().dead_letters(&tenant.id).map(|d| d.list()).unwrap_or_default();
    Json(DeadLetters { dead_letters: letters.into_iter().map(DeadLetterView::from).collect() })
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
    ))]
pub(super) async fn replay(
    State(app): State<App>,
    TenantAdmin(tenant): TenantAdmin,
    PathParams((_, id)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if app.webhooks().replay(&tenant.id, &id) {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::new(ErrorCode::UnknownDeadLetter, format!("no dead letter {id:?} (or its endpoint is gone)")))
    }
}
