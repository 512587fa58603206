//! A user, for the tenant's backend (publish key): `GET /v1/users/{user}/unread` (the read
//! cursor), `POST /v1/users/{user}/disconnect` (close every device on every node, and
//! optionally refuse tokens issued before a time), and `POST /v1/users/{user}/subscriptions`
//! / `DELETE /v1/users/{user}/subscriptions/{channel}` (subscribe or unsubscribe the user's
//! live connections on every node).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use axum::body::Bytes;
use serde::Deserialize;

use super::ApiError;
use super::extract::{PathParams, Publisher, UserId};
use crate::app::App;
use crate::control::{self, Command};
use crate::revocation::{REVOCATION_TTL, Revoked};

/// The body of `POST /v1/users/{user}/disconnect` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Disconnect {
    /// Sent to the closed connections in a `disconnected` frame.
    #[serde(default)]
    reason: Option<String>,
    /// Unix seconds: tokens issued before are refused until they could have expired.
    #[serde(default)]
    revoke_tokens_before: Option<u64>,
}

/// Longest `reason`, in characters.
const MAX_REASON: usize = 256;

pub(super) async fn unread(
    State(app): State<Arc<App>>,
    Publisher(tenant): Publisher,
    UserId(user): UserId,
) -> Result<Json<Value>, ApiError> {
    if !tenant.config.history.acks {
        let message = "this tenant keeps no read cursors; set history.acks = true";
        return Err(ApiError::new(StatusCode::CONFLICT, "acks_disabled", message));
    }
    let c = app.history.cursor(&tenant, &user).await?;
    Ok(Json(json!({ "user": user, "epoch": c.epoch, "offset": c.offset, "acked": c.acked, "unread": c.unread() })))
}

pub(super) async fn disconnect(
    State(app): State<Arc<App>>,
    Publisher(tenant): Publisher,
    UserId(user): UserId,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: Disconnect = if body.iter().all(u8::is_ascii_whitespace) {
        Disconnect::default()
    } else {
        crate::ingest::deserialize(&body)?
    };
    if request.reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(ApiError::bad_request("invalid_field", format!("reason is longer than {MAX_REASON} characters")));
    }
    let revoked = request.revoke_tokens_before.map(|before| {
        let now = crate::clock::now_millis() / 1000;
        Revoked { before, until: before.max(now) + REVOCATION_TTL.as_secs() }
    });
    let command =
        Command::Disconnect { tenant: tenant.id.to_string(), user: user.clone(), reason: request.reason, revoked };
    control::send(&app, command).await?;
    let revoked_until = revoked.map(|r| r.until);
    Ok((StatusCode::ACCEPTED, Json(json!({ "user": user, "revoked_until": revoked_until }))))
}

/// The body of `POST /v1/users/{user}/subscriptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    channels: Vec<String>,
}

/// Most channels one request may name.
const MAX_CHANNELS_PER_REQUEST: usize = 100;

pub(super) async fn subscribe(
    State(app): State<Arc<App>>,
    Publisher(tenant): Publisher,
    UserId(user): UserId,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Subscribe { mut channels } = crate::ingest::deserialize(&body)?;
    channels.sort();
    channels.dedup();
    if channels.is_empty() || channels.len() > MAX_CHANNELS_PER_REQUEST {
        let message = format!("channels must name 1-{MAX_CHANNELS_PER_REQUEST} channels");
        return Err(ApiError::bad_request("invalid_field", message));
    }
    if let Some(bad) = channels.iter().find(|c| !crate::channel::valid_name(c)) {
        return Err(invalid_channel(bad));
    }
    let command = Command::Subscribe { tenant: tenant.id.to_string(), user: user.clone(), channels: channels.clone() };
    control::send(&app, command).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "user": user, "channels": channels }))))
}

pub(super) async fn unsubscribe(
    State(app): State<Arc<App>>,
    Publisher(tenant): Publisher,
    PathParams((user, channel)): PathParams<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !crate::channel::valid_name(&user) {
        return Err(ApiError::bad_request("bad_request", "user ids are 1-128 characters of A-Z a-z 0-9 _ - . : @"));
    }
    if !crate::channel::valid_name(&channel) {
        return Err(invalid_channel(&channel));
    }
    let command = Command::Unsubscribe { tenant: tenant.id.to_string(), user: user.clone(), channel: channel.clone() };
    control::send(&app, command).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "user": user, "channel": channel }))))
}

fn invalid_channel(name: &str) -> ApiError {
    let message = format!("channel {name:?}: names are 1-128 characters of A-Z a-z 0-9 _ - . : @");
    ApiError::bad_request(crate::protocol::code::INVALID_CHANNEL, message)
}
