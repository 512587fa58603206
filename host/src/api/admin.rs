//! Tenant plugin administration (admin token or the tenant's `management_key`):
//!
//! - `PUT /v1/admin/tenants/{tenant}/plugins/{hook}`: upload a component (body), with the
//!   plugin's config as a JSON object in the `Notify-Plugin-Config` header and
//!   `?on_failure=retry|skip|drop` for transform/route.
//! - `GET /v1/admin/tenants/{tenant}/plugins`: hooks, versions, state and counters, and
//!   what every live node runs.
//!
//! Changes go to the control-plane state, so every node applies them.
//! - `POST /v1/admin/tenants/{tenant}/plugins/{hook}/rollback`: back to the previous version.
//! - `DELETE /v1/admin/tenants/{tenant}/plugins/{hook}`: turn the hook off.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use sha2::Digest as _;
use utoipa::ToSchema;

use super::ApiError;
use super::code::ErrorCode;
use super::error::ErrorBody;
use super::extract::{PathParams, TenantAdmin, query_param, read_body};
use crate::app::App;
use crate::backend::control::{Blob, NodeReport};
use crate::config::FailurePolicy;
use crate::control::{self, TenantReport};
use crate::plugin::{Hook, LoadedPlugin, PluginError, Provenance, Running, Source, TenantSlots, version};
use crate::tenant::Tenant;

/// Header carrying an uploaded plugin's configuration (a JSON object of strings).
const CONFIG_HEADER: &str = "notify-plugin-config";

type HookPath = PathParams<(String, String)>;

fn hook(PathParams((_, name)): HookPath) -> Result<Hook, ApiError> {
    Hook::parse(&name)
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownHook, format!("no hook {name:?}: use auth, transform or route")))
}

/// A tenant's plugins, and what every live node runs.
#[derive(Serialize, ToSchema)]
pub(super) struct Plugins {
    tenant: String,
    /// The hooks with an active plugin or earlier versions.
    plugins: Vec<HookView>,
    nodes: Vec<NodeView>,
}

/// One hook: its active plugin and the versions a rollback goes back to.
#[derive(Serialize, ToSchema)]
pub(super) struct HookView {
    hook: Hook,
    active: Option<PluginView>,
    /// Earlier versions, newest last.
    history: Vec<Version>,
}

/// An earlier version: the same bytes may come back with another config or policy, so a
/// rollback target is told apart by all of these.
#[derive(Serialize, ToSchema)]
pub(super) struct Version {
    /// The component's SHA-256, in hex.
    hash: String,
    /// Unix seconds.
    installed_at: u64,
    source: Source,
    /// For `transform` and `route`.
    on_failure: Option<FailurePolicy>,
    /// The names of the version's config values (never the values).
    config_keys: Vec<String>,
    /// Tells configs apart without showing them: the first 16 hex digits of the SHA-256 of
    /// the config as JSON.
    config_fingerprint: String,
}

/// One live node: its connections of the tenant and the plugins it runs.
#[derive(Serialize, ToSchema)]
pub(super) struct NodeView {
    node: String,
    this_node: bool,
    connections: usize,
    plugins: Vec<Running>,
}

/// An installed plugin version, its state and counters on this node.
#[derive(Serialize, ToSchema)]
pub(super) struct PluginView {
    hook: Hook,
    hash: String,
    installed_at: u64,
    source: Source,
    /// `active`, or `disabled` by the circuit breaker.
    state: &'static str,
    /// For `transform` and `route`.
    on_failure: Option<FailurePolicy>,
    /// The names of the plugin's config values (never the values).
    config_keys: Vec<String>,
    /// As in [`Version`].
    config_fingerprint: String,
    calls: u64,
    failures: u64,
    consecutive_failures: u32,
}

/// The tenant's plugins per hook, and what every live node runs.
#[utoipa::path(get, operation_id = "listPlugins", path = "/v1/admin/tenants/{tenant}/plugins", tag = "plugins", security(("admin_token" = []), ("management_key" = [])),
    params(("tenant" = String, Path, description = "A tenant id")),
    responses(
        (status = OK, description = "The plugins", body = Plugins),
        (status = UNAUTHORIZED, description = "`unauthorized`: no token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: a token that cannot manage this tenant", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant` or `unknown_hook`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn list(State(app): State<App>, TenantAdmin(tenant): TenantAdmin) -> Result<Json<Plugins>, ApiError> {
    let hooks = app
        .pipeline()
        .plugins
        .list(&tenant.id)
        .into_iter()
        .map(|s| HookView {
            hook: s.hook,
            active: s.active.as_deref().map(describe),
            history: s
                .history
                .iter()
                .map(|v| Version {
                    hash: v.hash.clone(),
                    installed_at: v.provenance.installed_at,
                    source: v.provenance.source,
                    on_failure: (s.hook != Hook::Auth).then_some(v.provenance.on_failure),
                    config_keys: v.provenance.config.keys().cloned().collect(),
                    config_fingerprint: config_fingerprint(&v.provenance.config),
                })
                .collect(),
        })
        .collect();
    let nodes = nodes(&app, &tenant).await?;
    Ok(Json(Plugins { tenant: tenant.id.to_string(), plugins: hooks, nodes }))
}

/// What every live node runs for `tenant`, and its connections there: this node's live
/// figures, the others' last reports (at most a second old).
async fn nodes(app: &App, tenant: &Tenant) -> Result<Vec<NodeView>, ApiError> {
    let mut nodes = app.control().store.reports(vec![tenant.id.to_string()]).await?;
    if !nodes.iter().any(|n| &*n.node == app.node_id()) {
        nodes.push(NodeReport { node: app.node_id().to_string(), reports: Vec::new() });
    }
    let nodes = nodes.into_iter().map(|n| {
        let here = &*n.node == app.node_id();
        let report: TenantReport = match n.reports.into_iter().next().flatten() {
            _ if here => control::report_of(app, tenant),
            Some(json) => serde_json::from_str(&json).unwrap_or_default(),
            None => TenantReport::default(),
        };
        NodeView { node: n.node, this_node: here, connections: report.connections, plugins: report.plugins }
    });
    Ok(nodes.collect())
}

/// Uploads a compiled component to a hook; every node applies it (docs/PLUGINS.md).
#[utoipa::path(put, operation_id = "uploadPlugin", path = "/v1/admin/tenants/{tenant}/plugins/{hook}", tag = "plugins", security(("admin_token" = []), ("management_key" = [])),
    params(
        ("tenant" = String, Path, description = "A tenant id"),
        ("hook" = String, Path, description = "`auth`, `transform` or `route`"),
        ("on_failure" = Option<FailurePolicy>, Query, description = "For transform and route: `retry` (default: once more, then drop), `skip` (deliver unprocessed) or `drop`"),
        ("Notify-Plugin-Config" = Option<String>, Header, description = "The plugin's config: a JSON object of strings"),
    ),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "A wasm component (at most `server.max_plugin_bytes`)"),
    responses(
        (status = CREATED, description = "Installed", body = PluginView),
        (status = BAD_REQUEST, description = "`invalid_config`, `invalid_policy`, `bad_body`, or `invalid_plugin` (a component that does not load)", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: no token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: a token that cannot manage this tenant", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant` or `unknown_hook`", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn upload(
    State(app): State<App>,
    TenantAdmin(tenant): TenantAdmin,
    path: HookPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PluginView>), ApiError> {
    let hook = hook(path)?;
    let config = plugin_config(&headers)?;
    let on_failure = failure_policy(hook, query.as_deref())?;
    let wasm = read_body(&headers, body, app.config().server.max_plugin_bytes).await?;
    let installed_at = crate::clock::now_millis() / 1000;
    let provenance = Provenance { config, on_failure, installed_at, source: Source::Upload };
    let prepared = app.pipeline().plugins.prepare(&tenant.id, hook, wasm.clone(), provenance).await?;
    let version = prepared.version_state();
    let blob = Blob { hash: version.hash.clone(), bytes: wasm };
    change_slots(&app, &tenant.id, vec![blob], |slots| {
        version::upload(slots, hook, version.clone());
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(describe(&prepared))))
}

/// Goes back to the hook's previous version (or none).
#[utoipa::path(post, operation_id = "rollbackPlugin", path = "/v1/admin/tenants/{tenant}/plugins/{hook}/rollback", tag = "plugins", security(("admin_token" = []), ("management_key" = [])),
    params(
        ("tenant" = String, Path, description = "A tenant id"),
        ("hook" = String, Path, description = "`auth`, `transform` or `route`"),
    ),
    responses(
        (status = OK, description = "The version now active; `null` when the hook is now empty", body = Option<PluginView>),
        (status = CONFLICT, description = "`no_plugin`: no earlier version", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: no token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: a token that cannot manage this tenant", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant` or `unknown_hook`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn rollback(
    State(app): State<App>,
    TenantAdmin(tenant): TenantAdmin,
    path: HookPath,
) -> Result<Json<Option<PluginView>>, ApiError> {
    let hook = hook(path)?;
    let configured = app.pipeline().plugins.configured(&tenant.id, hook);
    change_slots(&app, &tenant.id, Vec::new(), |slots| version::rollback(slots, hook, configured).map(drop)).await?;
    Ok(Json(app.pipeline().plugins.get(&tenant.id, hook).as_deref().map(describe)))
}

/// Turns the hook off on every node.
#[utoipa::path(delete, operation_id = "removePlugin", path = "/v1/admin/tenants/{tenant}/plugins/{hook}", tag = "plugins", security(("admin_token" = []), ("management_key" = [])),
    params(
        ("tenant" = String, Path, description = "A tenant id"),
        ("hook" = String, Path, description = "`auth`, `transform` or `route`"),
    ),
    responses(
        (status = NO_CONTENT, description = "Removed"),
        (status = CONFLICT, description = "`no_plugin`: nothing installed", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: no token", body = ErrorBody),
        (status = FORBIDDEN, description = "`forbidden`: a token that cannot manage this tenant", body = ErrorBody),
        (status = NOT_FOUND, description = "`unknown_tenant` or `unknown_hook`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn remove(
    State(app): State<App>,
    TenantAdmin(tenant): TenantAdmin,
    path: HookPath,
) -> Result<StatusCode, ApiError> {
    let hook = hook(path)?;
    let configured = app.pipeline().plugins.configured(&tenant.id, hook);
    change_slots(&app, &tenant.id, Vec::new(), |slots| version::remove(slots, hook, configured)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes the tenant's plugin slots in the control-plane state (every node follows).
async fn change_slots(
    app: &App,
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
        ApiError::new(ErrorCode::InvalidConfig, format!("{CONFIG_HEADER} must be a JSON object of string values"))
    })
}

fn failure_policy(hook: Hook, query: Option<&str>) -> Result<FailurePolicy, ApiError> {
    match query_param(query, "on_failure").as_deref() {
        None => Ok(FailurePolicy::default()),
        Some(_) if hook == Hook::Auth => {
            Err(ApiError::new(ErrorCode::InvalidPolicy, "auth plugins always fail closed"))
        }
        Some("retry") => Ok(FailurePolicy::Retry),
        Some("skip") => Ok(FailurePolicy::Skip),
        Some("drop") => Ok(FailurePolicy::Drop),
        Some(other) => Err(ApiError::new(
            ErrorCode::InvalidPolicy,
            format!("on_failure must be retry, skip or drop, not {other:?}"),
        )),
    }
}

fn config_fingerprint(config: &BTreeMap<String, String>) -> String {
    let json = serde_json::to_vec(config).expect("a config serializes");
    crate::tenant::hex(&sha2::Sha256::digest(json)[..8])
}

/// An auth plugin always fails closed: it has no policy.
fn policy_of(p: &LoadedPlugin) -> Option<FailurePolicy> {
    (p.hook != Hook::Auth).then_some(p.on_failure)
}

fn describe(p: &LoadedPlugin) -> PluginView {
    PluginView {
        hook: p.hook,
        hash: p.compiled.hash.clone(),
        installed_at: p.installed_at,
        source: p.source,
        state: if p.is_disabled() { "disabled" } else { "active" },
        on_failure: policy_of(p),
        config_keys: p.config.keys().cloned().collect(),
        config_fingerprint: config_fingerprint(&p.config),
        calls: p.calls.load(Relaxed),
        failures: p.failures.load(Relaxed),
        consecutive_failures: p.consecutive_failures(),
    }
}
