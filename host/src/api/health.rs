//! `/healthz`, `/readyz` and `/metrics`: what load balancers and Prometheus ask.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::app::App;

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 while the node takes connections and publishes; 503 while draining, while the
/// broker is unreachable, or until the control-plane state has been loaded.
pub(super) async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, Json<Value>) {
    let status = if app.drain.is_draining() {
        "draining"
    } else if !app.broker.healthy() {
        "broker_unavailable"
    } else if !app.control_loaded.load(std::sync::atomic::Ordering::Relaxed) || !app.control.listening() {
        "control_plane_unavailable"
    } else {
        return (StatusCode::OK, Json(json!({ "status": "ready" })));
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": status })))
}

pub(super) async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.render_metrics())
}
