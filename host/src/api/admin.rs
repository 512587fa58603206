//! Tenant plugin administration (admin token or the tenant's `management_key`):
//!
//! - `PUT /v1/admin/tenants/{tenant}/plugins/{hook}`: upload a component (body), with the
//!   plugin's config as a JSON object in the `Notify-Plugin-Config` header and
//!   `?on_failure=skip|drop` for transform/route.
//! - `GET /v1/admin/tenants/{tenant}/plugins`: hooks, versions, state and counters.
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
use crate::config::FailurePolicy;
use crate::plugin::{Hook, LoadedPlugin, PluginError};

/// Header carrying an uploaded plugin's configuration (a JSON object of strings).
const CONFIG_HEADER: &str = "notify-plugin-config";

type HookPath = PathParams<(String, String)>;

fn hook(PathParams((_, name)): HookPath) -> Result<Hook, ApiError> {
    Hook::parse(&name)
        .ok_or_else(|| ApiError::not_found("unknown_hook", format!("no hook {name:?}: use auth, transform or route")))
}

pub(super) async fn list(State(app): State<Arc<App>>, TenantAdmin(tenant): TenantAdmin) -> Json<Value> {
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
    Json(json!({ "tenant": &*tenant.id, "plugins": hooks }))
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
    let installed = blocking(&app, move |app| {
        app.plugins.upload(&tenant.id, hook, &wasm, config, on_failure).map(|p| describe(&p))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(installed)))
}

pub(super) async fn rollback(
    State(app): State<Arc<App>>,
    TenantAdmin(tenant): TenantAdmin,
    path: HookPath,
) -> Result<Json<Value>, ApiError> {
    let hook = hook(path)?;
    Ok(Json(blocking(&app, move |app| app.plugins.rollback(&tenant.id, hook).map(|p| describe(&p))).await?))
}

pub(super) async fn remove(
    State(app): State<Arc<App>>,
    TenantAdmin(tenant): TenantAdmin,
    path: HookPath,
) -> Result<StatusCode, ApiError> {
    let hook = hook(path)?;
    blocking(&app, move |app| app.plugins.remove(&tenant.id, hook)).await?;
    Ok(StatusCode::NO_CONTENT)
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

/// Runs a registry change (compilation, file writes) on a blocking thread.
async fn blocking<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&App) -> Result<T, PluginError> + Send + 'static,
) -> Result<T, ApiError> {
    let app = app.clone();
    match tokio::task::spawn_blocking(move || f(&app)).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "plugin_error", e.to_string())),
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
