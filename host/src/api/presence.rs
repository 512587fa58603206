//! `GET /v1/presence/{user}` (publish key): whether a user is online, over all live nodes.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::ApiError;
use super::extract::{Publisher, UserId};
use crate::app::App;

pub(super) async fn status(
    State(app): State<Arc<App>>,
    Publisher(tenant): Publisher,
    UserId(user): UserId,
) -> Result<Json<Value>, ApiError> {
    let s = app.presence.status(&tenant, &user).await?;
    Ok(Json(json!({ "user": user, "online": s.connections > 0, "connections": s.connections })))
}
