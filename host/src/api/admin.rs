//! Tenant plugin administration (admin token or the tenant's `management_key`):
//!
//! - `PUT /v1/admin/tenants/{tenant}/plugins/{hook}`: upload a component (body), with the
//!   plugin's config as a JSON object in the `Notify-Plugin-Config` header and
//!   `?on_failure=skip|drop` for transform/route.
//! - `GET /v1/admin/tenants/{tenant}/plugins`: hooks, versions, state and counters, and
//!   what every live node runs.
//!
//! Changes go to the control-plane state, so every node applies them.
//! - `POST /v1/admin/tenants/{tenant}/plugins/{hook}/rollback`: back to the previous version.
//! - `DELETE /v1/admin/tenants/{tenant}/plugins/{hook}`: turn the hook off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::ApiError;
use super::extract::{PathParams, TenantAdmin, query_param, read_body};
use crate::app::App;
use crate::backend::control::{Blob, NodeReport};
use crate::config::FailurePolicy;
use crate::control::{self, TenantReport};
use crate::plugin::{Hook, LoadedPlugin, PluginError, Provenance, Source, TenantSlots, version};
use crate::tenant::Tenant;

/// Header carrying an uploaded plugin's configuration (a JSON object of strings).
const CONFIG_HEADER: &str = "notify-plugin-config";

type HookPath = PathParams<(String, String)>;

fn hook(PathParams((_, name)): HookPath) -> Result<Hook, ApiError> {
    Hook::parse(&name)
        .ok_or_else(|| ApiError::not_found("unknown_hook", format!("no hook {name:?}: use auth, transform or route")))
}

pub(super) async fn list(
    State(app): State<Arc<App>>,
    TenantAdmin(tenant): TenantAdmin,
) -> Result<Json<Value>, ApiError> {
    let hooks: Vec<Value> = app
        .plugins
        .list(&tenant.id)
        .into_iter()
        .map(|s| {
            json!({
                "hook": s.hook.as_str(),
                "active": s.active.as_deref().map(describe),
                "history": s.history.iter().map(|p| json!({
                    "hash": p.compiled.hash,
                    "installed_at": p.installed_at,
                    "source": p.source,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let nodes = nodes(&app, &tenant).await?;
    Ok(Json(json!({ "tenant": &*tenant.id, "plugins": hooks, "nodes": nodes })))
}

/// What every live node runs for `tenant`, and its connections there: this node's live
/// figures, the others' last reports (at most a second old).
async fn nodes(app: &App, tenant: &Tenant) -> Result<Vec<Value>, ApiError> {
    let mut nodes = app.control.reports(vec![tenant.id.to_string()]).await?;
    if !nodes.iter().any(|n| *n.node == *app.node_id) {
        nodes.push(NodeReport { node: app.node_id.to_string(), reports: Vec::new() });
    }
    let nodes = nodes.into_iter().map(|n| {
        let here = *n.node == *app.node_id;
        let report: TenantReport = match n.reports.into_iter().next().flatten() {
            _ if here => control::report_of(app, tenant),
            Some(json) => serde_json::from_str(&json).unwrap_or_default(),
            None => TenantReport::default(),
        };
        json!({ "node": n.node, "this_node": here, "connections": report.connections, "plugins": report.plugins })
    });
    Ok(nodes.collect())
}

pub(super) async fn upload(
    State(app): State<Arc<App>>,
    TenantAdmin(tenant): TenantAdmin,
    path: HookPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let hook = hook(path)?;
    let config = plugin_config(&headers)?;
    let on_failure = failure_policy(hook, query.as_deref())?;
    let wasm = read_body(&headers, body, app.config.server.max_plugin_bytes).await?;
    let installed_at = crate::clock::now_millis() / 1000;
    let provenance = Provenance { config, on_failure, installed_at, source: Source::Upload };
    let prepared = app.plugins.prepare(&tenant.id, hook, wasm.clone(), provenance).await?;
    let version = prepared.version_state();
    let blob = Blob { hash: version.hash.clone(), bytes: wasm };
    change_slots(&app, &tenant.id, vec![blob], |slots| {
        version::upload(slots, hook, version.clone());
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(describe(&prepared))))
}

pub(super) async fn rollback(
    State(app): State<Arc<App>>,
    TenantAdmin(tenant): TenantAdmin,
    path: HookPath,
) -> Result<Json<Value>, ApiError> {
    let hook = hook(path)?;
    let configured = app.plugins.configured(&tenant.id, hook);
    change_slots(&app, &tenant.id, Vec::new(), |slots| version::rollback(slots, hook, configured).map(drop)).await?;
    Ok(Json(app.plugins.get(&tenant.id, hook).as_deref().map(describe).unwrap_or_default()))
}

pub(super) async fn remove(
    State(app): State<Arc<App>>,
    TenantAdmin(tenant): TenantAdmin,
    path: HookPath,
) -> Result<StatusCode, ApiError> {
    let hook = hook(path)?;
    let configured = app.plugins.configured(&tenant.id, hook);
    change_slots(&app, &tenant.id, Vec::new(), |slots| version::remove(slots, hook, configured)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes the tenant's plugin slots in the control-plane state (every node follows).
async fn change_slots(
    app: &Arc<App>,
    tenant: &str,
    blobs: Vec<Blob>,
    mut change: impl FnMut(&mut TenantSlots) -> Result<(), PluginError>,
) -> Result<(), ApiError> {
    control::change_with(app, blobs, |state| {
        let slots = state.plugins.entry(tenant.to_owned()).or_default();
        let changed = change(slots);
        if slots.is_empty() {
            state.plugins.remove(tenant);
        }
        Ok::<_, ApiError>(changed?)
    })
    .await
}

fn plugin_config(headers: &HeaderMap) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(value) = headers.get(CONFIG_HEADER) else {
        return Ok(BTreeMap::new());
    };
    value.to_str().ok().and_then(|s| serde_json::from_str(s).ok()).ok_or_else(|| {
        ApiError::bad_request("invalid_config", format!("{CONFIG_HEADER} must be a JSON object of string values"))
    })
}

fn failure_policy(hook: Hook, query: Option<&str>) -> Result<FailurePolicy, ApiError> {
    match query_param(query, "on_failure").as_deref() {
        None => Ok(FailurePolicy::default()),
        Some(_) if hook == Hook::Auth => {
            Err(ApiError::bad_request("invalid_policy", "auth plugins always fail closed"))
        }
        Some("skip") => Ok(FailurePolicy::Skip),
        Some("drop") => Ok(FailurePolicy::Drop),
        Some(other) => {
            Err(ApiError::bad_request("invalid_policy", format!("on_failure must be skip or drop, not {other:?}")))
        }
    }
}

fn describe(p: &LoadedPlugin) -> Value {
    json!({
        "hook": p.hook.as_str(),
        "hash": p.compiled.hash,
        "installed_at": p.installed_at,
        "source": p.source,
        "state": if p.is_disabled() { "disabled" } else { "active" },
        "on_failure": if p.hook == Hook::Auth { None } else { Some(p.on_failure) },
        "config_keys": p.config.keys().collect::<Vec<_>>(),
        "calls": p.calls.load(Relaxed),
        "failures": p.failures.load(Relaxed),
        "consecutive_failures": p.consecutive_failures(),
    })
}
