//! Presence, for the tenant's backend (publish key), over all live nodes:
//! `GET /v1/presence/{user}` (whether a user is online) and
//! `GET /v1/channels/{channel}/presence` (who is subscribed to a channel).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::ApiError;
use super::extract::{PathParams, Publisher, UserId};
use crate::app::App;
use crate::control::{self, MAX_PRESENCE_USERS};

/// How long a channel presence request waits for every live node to answer.
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) async fn status(
    State(app): State<Arc<App>>,
    Publisher(tenant): Publisher,
    UserId(user): UserId,
) -> Result<Json<Value>, ApiError> {
    let s = app.presence.status(&tenant, &user).await?;
    Ok(Json(json!({ "user": user, "online": s.connections > 0, "connections": s.connections })))
}

pub(super) async fn channel(
    State(app): State<Arc<App>>,
    Publisher(tenant): Publisher,
    PathParams(channel): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    if !crate::channel::valid_name(&channel) {
        let message = "a channel name is 1-128 characters of A-Z a-z 0-9 _ - . : @";
        return Err(ApiError::bad_request("invalid_channel", message));
    }
    let (merged, answered, live) = control::channel_presence(&app, &tenant, &channel, ANSWER_WAIT).await?;
    let connections: u64 = merged.users.values().sum();
    let users: Vec<Value> = merged.users.iter().map(|(user, n)| json!({ "user": user, "connections": n })).collect();
    Ok(Json(json!({
        "channel": channel,
        "users": users,
        "connections": connections,
        "truncated": merged.truncated,
        "max_users": MAX_PRESENCE_USERS,
        "nodes": { "answered": answered, "live": live },
    })))
}
