//! `GET /v1/users/{user}/unread` (publish key): a user's read cursor.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::ApiError;
use super::extract::{Publisher, UserId};
use crate::app::App;

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
