//! A user, for the tenant's backend (publish key): `GET /v1/users/{user}/unread` (the read
//! cursor), `POST /v1/users/{user}/disconnect` (close every device on every node, and
//! optionally refuse tokens issued before a time), and `POST /v1/users/{user}/subscriptions`
//! / `DELETE /v1/users/{user}/subscriptions/{channel}` (subscribe or unsubscribe the user's
//! live connections on every node).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use axum::body::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiError;
use super::code::ErrorCode;
use super::error::ErrorBody;
use super::extract::{PathParams, Publisher, UserId};
use crate::app::App;
use crate::backend::History;
use crate::control::{self, Command};
use crate::revocation::{REVOCATION_TTL, Revoked};

/// The body of `POST /v1/users/{user}/disconnect` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"reason": "password changed", "revoke_tokens_before": 1764806400, "revoke_token_ids": ["5f0c2e7a"]}))]
#[serde(deny_unknown_fields)]
pub(super) struct Disconnect {
    /// Sent to the closed connections in a `disconnected` frame.
    #[serde(default)]
    #[schema(max_length = 256)]
    reason: Option<String>,
    /// Unix seconds: tokens issued before are refused until they could have expired.
    #[serde(default)]
    revoke_tokens_before: Option<u64>,
    /// Token ids (`jti`): these tokens are refused until they could have expired.
    #[serde(default)]
    #[schema(max_items = 100)]
    revoke_token_ids: Vec<String>,
}

/// Most token ids in one request, and the longest one.
const MAX_IDS: usize = 100;
const MAX_ID_LEN: usize = 256;

/// Longest `reason`, in characters.
const MAX_REASON: usize = 256;

/// A user's read cursor on their stream.
#[derive(Serialize, ToSchema)]
pub(super) struct Unread {
    user: String,
    epoch: String,
    /// The stream's latest offset.
    offset: u64,
    /// The last offset the user acked.
    acked: u64,
    /// Events after the acked one.
    unread: u64,
}

/// A user's read cursor (tenants with `history.acks`; docs/PROTOCOL.md, Acks).
#[utoipa::path(get, operation_id = "userUnread", path = "/v1/users/{user}/unread", tag = "users", security(("publish_key" = [])),
    params(("user" = String, Path, description = "A user id")),
    responses(
        (status = OK, description = "The cursor", body = Unread),
        (status = BAD_REQUEST, description = "`bad_request`: an invalid user id", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: a missing or unknown publish key", body = ErrorBody),
        (status = CONFLICT, description = "`acks_disabled`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`history_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn unread(
    State(history): State<Arc<dyn History>>,
    Publisher(tenant): Publisher,
    UserId(user): UserId,
) -> Result<Json<Unread>, ApiError> {
    if !tenant.config.history.acks {
        let message = "this tenant keeps no read cursors; set history.acks = true";
        return Err(ApiError::new(ErrorCode::AcksDisabled, message));
    }
    let c = history.cursor(&tenant, &user).await?;
    let unread = c.unread();
    Ok(Json(Unread { user, epoch: c.epoch, offset: c.offset, acked: c.acked, unread }))
}

/// The answer to a disconnect.
#[derive(Serialize, ToSchema)]
pub(super) struct Disconnected {
    user: String,
    /// Unix seconds until which tokens issued before `revoke_tokens_before`, and those of
    /// `revoke_token_ids`, are refused.
    revoked_until: Option<u64>,
}

/// Closes every device of the user on every node (4005), optionally refusing tokens issued
/// before a time, or tokens by id, for 24 hours.
#[utoipa::path(post, operation_id = "disconnectUser", path = "/v1/users/{user}/disconnect", tag = "users", security(("publish_key" = [])),
    params(("user" = String, Path, description = "A user id")),
    request_body(content = Option<Disconnect>, description = "Optional: an empty body closes the connections"),
    responses(
        (status = ACCEPTED, description = "Sent to every node", body = Disconnected),
        (status = BAD_REQUEST, description = "`invalid_field`, `bad_body`, or `bad_request` (an invalid user id)", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: a missing or unknown publish key", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable` (the control-plane store cannot be reached)", body = ErrorBody),
    ))]
pub(super) async fn disconnect(
    State(app): State<App>,
    Publisher(tenant): Publisher,
    UserId(user): UserId,
    body: Bytes,
) -> Result<(StatusCode, Json<Disconnected>), ApiError> {
    let request: Disconnect = if body.iter().all(u8::is_ascii_whitespace) {
        Disconnect::default()
    } else {
        crate::ingest::deserialize(&body)?
    };
    if request.reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(ApiError::new(ErrorCode::InvalidField, format!("reason is longer than {MAX_REASON} characters")));
    }
    let ids = request.revoke_token_ids;
    if ids.len() > MAX_IDS || ids.iter().any(|id| id.is_empty() || id.len() > MAX_ID_LEN) {
        let message = format!("revoke_token_ids: at most {MAX_IDS} ids of 1-{MAX_ID_LEN} bytes");
        return Err(crate::ingest::FieldError { field: "revoke_token_ids".into(), message }.into());
    }
    let now = crate::clock::now_millis() / 1000;
    let revoked = (request.revoke_tokens_before.is_some() || !ids.is_empty()).then(|| {
        let before = request.revoke_tokens_before.unwrap_or(0);
        Revoked { before, until: before.max(now) + REVOCATION_TTL.as_secs(), ids }
    });
    let revoked_until = revoked.as_ref().map(|r| r.until);
    let command =
        Command::Disconnect { tenant: tenant.id.to_string(), user: user.clone(), reason: request.reason, revoked };
    control::send(&app, command).await?;
    Ok((StatusCode::ACCEPTED, Json(Disconnected { user, revoked_until })))
}

/// The body of `POST /v1/users/{user}/subscriptions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"channels": ["news", "team.7"]}))]
pub(super) struct Subscribe {
    /// 1-100 channel names.
    #[schema(min_items = 1, max_items = 100)]
    channels: Vec<String>,
}

/// The answer to a subscription change.
#[derive(Serialize, ToSchema)]
pub(super) struct Subscribed {
    user: String,
    /// The channels subscribed, sorted, without duplicates.
    channels: Vec<String>,
}

/// The answer to an unsubscription.
#[derive(Serialize, ToSchema)]
pub(super) struct Unsubscribed {
    user: String,
    channel: String,
}

/// Most channels one request may name.
const MAX_CHANNELS_PER_REQUEST: usize = 100;

/// Subscribes the user's live connections on every node to channels.
#[utoipa::path(post, operation_id = "subscribeUser", path = "/v1/users/{user}/subscriptions", tag = "users", security(("publish_key" = [])),
    params(("user" = String, Path, description = "A user id")),
    request_body = Subscribe,
    responses(
        (status = ACCEPTED, description = "Sent to every node", body = Subscribed),
        (status = BAD_REQUEST, description = "`invalid_field`, `bad_body`, `invalid_channel`, or `bad_request` (an invalid user id)", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: a missing or unknown publish key", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable` (the control-plane store cannot be reached)", body = ErrorBody),
    ))]
pub(super) async fn subscribe(
    State(app): State<App>,
    Publisher(tenant): Publisher,
    UserId(user): UserId,
    body: Bytes,
) -> Result<(StatusCode, Json<Subscribed>), ApiError> {
    let Subscribe { mut channels } = crate::ingest::deserialize(&body)?;
    channels.sort();
    channels.dedup();
    if channels.is_empty() || channels.len() > MAX_CHANNELS_PER_REQUEST {
        let message = format!("channels must name 1-{MAX_CHANNELS_PER_REQUEST} channels");
        return Err(ApiError::new(ErrorCode::InvalidField, message));
    }
    if let Some(bad) = channels.iter().find(|c| !crate::channel::valid_name(c)) {
        return Err(invalid_channel(bad));
    }
    let command = Command::Subscribe { tenant: tenant.id.to_string(), user: user.clone(), channels: channels.clone() };
    control::send(&app, command).await?;
    Ok((StatusCode::ACCEPTED, Json(Subscribed { user, channels })))
}

/// Unsubscribes the user's live connections on every node from a channel.
#[utoipa::path(delete, operation_id = "unsubscribeUser", path = "/v1/users/{user}/subscriptions/{channel}", tag = "users", security(("publish_key" = [])),
    params(("user" = String, Path, description = "A user id"), ("channel" = String, Path, description = "A channel name")),
    responses(
        (status = ACCEPTED, description = "Sent to every node", body = Unsubscribed),
        (status = BAD_REQUEST, description = "`invalid_channel`, or `bad_request` (an invalid user id)", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: a missing or unknown publish key", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable` (the control-plane store cannot be reached)", body = ErrorBody),
    ))]
pub(super) async fn unsubscribe(
    State(app): State<App>,
    Publisher(tenant): Publisher,
    PathParams((user, channel)): PathParams<(String, String)>,
) -> Result<(StatusCode, Json<Unsubscribed>), ApiError> {
    if !crate::channel::valid_name(&user) {
        return Err(ApiError::new(ErrorCode::BadRequest, "user ids are 1-128 characters of A-Z a-z 0-9 _ - . : @"));
    }
    if !crate::channel::valid_name(&channel) {
        return Err(invalid_channel(&channel));
    }
    let command = Command::Unsubscribe { tenant: tenant.id.to_string(), user: user.clone(), channel: channel.clone() };
    control::send(&app, command).await?;
    Ok((StatusCode::ACCEPTED, Json(Unsubscribed { user, channel })))
}

fn invalid_channel(name: &str) -> ApiError {
    let message = format!("channel {name:?}: names are 1-128 characters of A-Z a-z 0-9 _ - . : @");
    ApiError::new(ErrorCode::InvalidChannel, message)
}
