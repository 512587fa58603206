//! `/healthz`, `/readyz` and `/metrics`: what load balancers and Prometheus ask.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::Admin;
use crate::app::App;

/// A node's state.
#[derive(Serialize, ToSchema)]
pub(super) struct Health {
    /// `ok` (`/healthz`); `ready`, `draining`, `broker_unavailable`,
    /// `control_plane_unavailable` or `no_tenants` (`/readyz`: no tenant exists yet and this
    /// node has no admin API to create one; another node's admin API or the config file must).
    #[schema(example = "ready")]
    status: &'static str,
}

/// Liveness: 200 while the process serves HTTP.
#[utoipa::path(get, operation_id = "healthz", path = "/healthz", tag = "operations",
    responses((status = OK, description = "The process is alive", body = Health)))]
pub(super) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: 200 while the node takes connections and publishes; 503 while draining, while
/// the broker is unreachable, until the control-plane state has been loaded, or while there is
/// no tenant to serve and no admin API to create one.
#[utoipa::path(get, operation_id = "readyz", path = "/readyz", tag = "operations", responses(
    (status = OK, description = "Ready", body = Health),
    (status = SERVICE_UNAVAILABLE, description = "Not ready, and why", body = Health),
))]
pub(super) async fn readyz(State(app): State<App>) -> (StatusCode, Json<Health>) {
    let status = app.readiness();
    let code = if status == "ready" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(Health { status }))
}

/// The node's metrics in the Prometheus text format (docs/OPERATIONS.md, Metrics). Their
/// labels name every tenant, so on the client port they answer the admin token only;
/// Prometheus scrapes `server.metrics_listen`, where they need none.
#[utoipa::path(get, operation_id = "metrics", path = "/metrics", tag = "operations", security(("admin_token" = [])),
    responses(
        (status = OK, description = "Prometheus text format 0.0.4", content_type = "text/plain; version=0.0.4", body = String),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
    ))]
pub(super) async fn metrics(State(app): State<App>, _: Admin) -> impl IntoResponse {
    scrape(State(app)).await
}

/// `/metrics` on the metrics listener.
pub(super) async fn scrape(State(app): State<App>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.render_metrics())
}
