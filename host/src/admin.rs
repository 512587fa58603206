//! Admin API: tenants' plugins. Authorised by the admin token or the tenant's own
//! `management_key`.
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

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::app::App;
use crate::config::FailurePolicy;
use crate::http::{self, Body};
use crate::plugin::{Hook, LoadedPlugin, PluginError};
use crate::tenant::Tenant;

/// Header carrying an uploaded plugin's configuration (a JSON object of strings).
pub const CONFIG_HEADER: &str = "notify-plugin-config";

/// Routes `/v1/admin/tenants/...`; `rest` is the path after that prefix.
pub async fn handle(app: &Arc<App>, req: Request<Incoming>, rest: &str) -> Response<Body> {
    let parts: Vec<&str> = rest.split('/').collect();
    let (tenant_id, tail) = match parts.as_slice() {
        [tenant, tail @ ..] => (*tenant, tail),
        [] => return not_found(),
    };
    let Some(tenant) = app.tenants.get(tenant_id).cloned() else {
        return http::error(StatusCode::NOT_FOUND, "unknown_tenant", format!("no tenant {tenant_id:?}"));
    };
    if let Some(refusal) = refuse_unauthorised(app, &req, &tenant) {
        return refusal;
    }
    let hook = match tail {
        ["plugins", name, ..] => match Hook::parse(name) {
            Some(h) => Some(h),
            None => {
                return http::error(
                    StatusCode::NOT_FOUND,
                    "unknown_hook",
                    format!("no hook {name:?}: use auth, transform or route"),
                );
            }
        },
        _ => None,
    };
    let method = req.method().clone();
    match (method, tail, hook) {
        (Method::GET, ["plugins"], _) => list(app, &tenant),
        (Method::PUT, ["plugins", _], Some(h)) => upload(app, &tenant, h, req).await,
        (Method::POST, ["plugins", _, "rollback"], Some(h)) => {
            blocking(app, StatusCode::OK, move |app| app.plugins.rollback(&tenant.id, h).map(|p| describe(&p))).await
        }
        (Method::DELETE, ["plugins", _], Some(h)) => {
            blocking(app, StatusCode::NO_CONTENT, move |app| app.plugins.remove(&tenant.id, h).map(|()| Value::Null))
                .await
        }
        _ => not_found(),
    }
}

fn not_found() -> Response<Body> {
    http::error(StatusCode::NOT_FOUND, "not_found", "no such admin route")
}

/// The refusal for a request without the admin token or the tenant's management key.
fn refuse_unauthorised(app: &App, req: &Request<Incoming>, tenant: &Tenant) -> Option<Response<Body>> {
    let Some(token) = http::bearer(req.headers()) else {
        return Some(http::error(StatusCode::UNAUTHORIZED, "unauthorized", "missing Authorization: Bearer token"));
    };
    let admin = app.config.server.admin_token.as_deref().is_some_and(|t| t == token);
    let manager = tenant.config.management_key.as_deref().is_some_and(|k| k == token);
    (!(admin || manager))
        .then(|| http::error(StatusCode::FORBIDDEN, "forbidden", "this token cannot manage this tenant"))
}

async fn upload(app: &Arc<App>, tenant: &Arc<Tenant>, hook: Hook, req: Request<Incoming>) -> Response<Body> {
    let config: BTreeMap<String, String> = match req.headers().get(CONFIG_HEADER) {
        None => BTreeMap::new(),
        Some(v) => match v.to_str().ok().and_then(|s| serde_json::from_str(s).ok()) {
            Some(c) => c,
            None => {
                return http::error(
                    StatusCode::BAD_REQUEST,
                    "invalid_config",
                    format!("{CONFIG_HEADER} must be a JSON object of string values"),
                );
            }
        },
    };
    let on_failure = match http::query_param(req.uri().query(), "on_failure").as_deref() {
        None => FailurePolicy::default(),
        Some(_) if hook == Hook::Auth => {
            return http::error(StatusCode::BAD_REQUEST, "invalid_policy", "auth plugins always fail closed");
        }
        Some("skip") => FailurePolicy::Skip,
        Some("drop") => FailurePolicy::Drop,
        Some(other) => {
            return http::error(
                StatusCode::BAD_REQUEST,
                "invalid_policy",
                format!("on_failure must be skip or drop, not {other:?}"),
            );
        }
    };
    let (parts, body) = req.into_parts();
    let wasm = match http::read_body(&parts.headers, body, app.config.server.max_plugin_bytes).await {
        Ok(b) => b,
        Err(e) => return e.response(),
    };
    let tenant_id = tenant.id.clone();
    blocking(app, StatusCode::CREATED, move |app| {
        app.plugins.upload(&tenant_id, hook, &wasm, config, on_failure).map(|p| describe(&p))
    })
    .await
}

/// Runs a registry change (compilation, file writes) on a blocking thread and answers
/// `success` with its JSON (no body for 204).
async fn blocking(
    app: &Arc<App>,
    success: StatusCode,
    f: impl FnOnce(&App) -> Result<Value, PluginError> + Send + 'static,
) -> Response<Body> {
    let app = app.clone();
    match tokio::task::spawn_blocking(move || f(&app)).await {
        Ok(Ok(_)) if success == StatusCode::NO_CONTENT => {
            let mut res = Response::new(Body::default());
            *res.status_mut() = success;
            res
        }
        Ok(Ok(value)) => http::json(success, &value),
        Ok(Err(e @ PluginError::Invalid(_))) => http::error(StatusCode::BAD_REQUEST, "invalid_plugin", e.to_string()),
        Ok(Err(e @ (PluginError::NoPrevious(_) | PluginError::NotInstalled(_)))) => {
            http::error(StatusCode::CONFLICT, "no_plugin", e.to_string())
        }
        Ok(Err(e)) => http::error(StatusCode::INTERNAL_SERVER_ERROR, "plugin_error", e.to_string()),
        Err(e) => http::error(StatusCode::INTERNAL_SERVER_ERROR, "plugin_error", e.to_string()),
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

fn list(app: &App, tenant: &Tenant) -> Response<Body> {
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
    http::json(StatusCode::OK, &json!({ "tenant": &*tenant.id, "plugins": hooks }))
}
