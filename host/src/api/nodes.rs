//! `GET /v1/admin/nodes` (admin token): every live node and its health, as the nodes report
//! it to the control-plane store every second (this node's is read live).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiError;
use super::error::ErrorBody;
use super::extract::Admin;
use crate::app::App;
use crate::backend::control::NODE_HEALTH;
use crate::control::{self, NodeHealth};

/// The live nodes.
#[derive(Serialize, ToSchema)]
pub(super) struct Nodes {
    nodes: Vec<NodeView>,
}

/// One live node.
#[derive(Serialize, ToSchema)]
pub(super) struct NodeView {
    node: String,
    /// The node that answered.
    this_node: bool,
    /// None for a node whose report holds no health yet (an older version).
    health: Option<NodeHealth>,
}

/// Every live node with its version, start time, memory, readiness and broker state.
#[utoipa::path(get, operation_id = "listNodes", path = "/v1/admin/nodes", tag = "operations", security(("admin_token" = [])),
    responses(
        (status = OK, description = "The live nodes", body = Nodes),
        (status = UNAUTHORIZED, description = "`unauthorized`: no admin token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: not the admin token", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn list(State(app): State<App>, _: Admin) -> Result<Json<Nodes>, ApiError> {
    let reports = app.control().store.reports(vec![NODE_HEALTH.to_owned()]).await?;
    let mut nodes: Vec<NodeView> = reports
        .into_iter()
        .filter(|r| &*r.node != app.node_id())
        .map(|r| {
            let health = r.reports.into_iter().next().flatten().and_then(|json| serde_json::from_str(&json).ok());
            NodeView { node: r.node, this_node: false, health }
        })
        .collect();
    nodes.push(NodeView { node: app.node_id().to_string(), this_node: true, health: Some(control::health(&app)) });
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(Json(Nodes { nodes }))
}
