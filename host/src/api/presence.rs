//! Presence, for the tenant's backend (publish key), over all live nodes:
//! `GET /v1/presence/{user}` (whether a user is online) and
//! `GET /v1/channels/{channel}/presence` (who is subscribed to a channel).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiError;
use super::code::ErrorCode;
use super::error::ErrorBody;
use super::extract::{PathParams, Publisher, UserId};
use crate::app::App;
use crate::backend::Presence;
use crate::control::{self, MAX_PRESENCE_USERS};

/// How long a channel presence request waits for every live node to answer.
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a user is online, over every live node.
#[derive(Serialize, ToSchema)]
pub(super) struct UserPresence {
    user: String,
    online: bool,
    connections: u64,
}

/// Whether a user is online on any live node, and with how many connections.
#[utoipa::path(get, operation_id = "userPresence", path = "/v1/presence/{user}", tag = "users", security(("publish_key" = [])),
    params(("user" = String, Path, description = "A user id")),
    responses(
        (status = OK, description = "The user's presence", body = UserPresence),
        (status = BAD_REQUEST, description = "`bad_request`: an invalid user id", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: a missing or unknown publish key", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`presence_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn status(
    State(presence): State<Arc<dyn Presence>>,
    Publisher(tenant): Publisher,
    UserId(user): UserId,
) -> Result<Json<UserPresence>, ApiError> {
    let s = presence.status(&tenant, &user).await?;
    Ok(Json(UserPresence { user, online: s.connections > 0, connections: s.connections }))
}

/// Who is subscribed to a channel on every live node.
#[derive(Serialize, ToSchema)]
pub(super) struct ChannelPresence {
    channel: String,
    /// At most `max_users`, by user id.
    users: Vec<Subscriber>,
    /// Connections subscribed, over the users listed.
    connections: u64,
    /// Whether more users are subscribed than listed.
    truncated: bool,
    max_users: usize,
    nodes: Answered,
}

#[derive(Serialize, ToSchema)]
pub(super) struct Subscriber {
    user: String,
    connections: u64,
}

/// How many live nodes answered within a second.
#[derive(Serialize, ToSchema)]
pub(super) struct Answered {
    answered: usize,
    live: usize,
}

/// The channel's subscribers and their connection counts over every live node.
#[utoipa::path(get, operation_id = "channelPresence", path = "/v1/channels/{channel}/presence", tag = "users", security(("publish_key" = [])),
    params(("channel" = String, Path, description = "A channel name")),
    responses(
        (status = OK, description = "The channel's subscribers", body = ChannelPresence),
        (status = BAD_REQUEST, description = "`invalid_channel`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: a missing or unknown publish key", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable` (the control-plane store cannot be reached)", body = ErrorBody),
    ))]
pub(super) async fn channel(
    State(app): State<App>,
    Publisher(tenant): Publisher,
    PathParams(channel): PathParams<String>,
) -> Result<Json<ChannelPresence>, ApiError> {
    if !crate::channel::valid_name(&channel) {
        let message = "a channel name is 1-128 characters of A-Z a-z 0-9 _ - . : @";
        return Err(ApiError::new(ErrorCode::InvalidChannel, message));
    }
    let (merged, answered, live) = control::channel_presence(&app, &tenant, &channel, ANSWER_WAIT).await?;
    let connections: u64 = merged.users.values().sum();
    let users = merged.users.into_iter().map(|(user, connections)| Subscriber { user, connections }).collect();
    Ok(Json(ChannelPresence {
        channel,
        users,
        connections,
        truncated: merged.truncated,
        max_users: MAX_PRESENCE_USERS,
        nodes: Answered { answered, live },
    }))
}
