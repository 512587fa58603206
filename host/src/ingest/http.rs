//! `POST /v1/publish` and `POST /v1/publish/batch`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode};
use serde_json::json;

use crate::app::App;
use crate::http::{self, Body};
use crate::plugin::{self, Hook};
use crate::tenant::Tenant;

/// The tenant whose publish key the request bears (`Authorization: Bearer <publish key>`),
/// or the 401 to answer.
pub fn publisher<'a>(app: &'a App, headers: &HeaderMap) -> Result<&'a Arc<Tenant>, Box<Response<Body>>> {
    let unauthorized = |message| Box::new(http::error(StatusCode::UNAUTHORIZED, "unauthorized", message));
    let key = http::bearer(headers).ok_or_else(|| unauthorized("missing Authorization: Bearer <publish key>"))?;
    app.tenants.by_publish_key(key).ok_or_else(|| unauthorized("unknown publish key"))
}

/// Handles a publish request; `batch` selects the array form.
pub async fn publish(app: &Arc<App>, req: Request<Incoming>, batch: bool) -> Response<Body> {
    let res = publish_inner(app, req, batch).await;
    if !res.status().is_success() {
        app.metrics.publish_rejected.fetch_add(1, Relaxed);
    }
    res
}

async fn publish_inner(app: &Arc<App>, req: Request<Incoming>, batch: bool) -> Response<Body> {
    if app.draining.is_cancelled() {
        return http::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this node is shutting down; publish to another node",
        );
    }
    let tenant = match publisher(app, req.headers()) {
        Ok(tenant) => tenant.clone(),
        Err(response) => return *response,
    };
    let (parts, body) = req.into_parts();
    let body = match http::read_body(&parts.headers, body, app.config.server.max_publish_bytes).await {
        Ok(b) => b,
        Err(e) => return e.response(),
    };
    let parsed = if batch {
        crate::ingest::parse_batch(&tenant.id, &app.ids, &body, app.config.server.max_batch_events)
    } else {
        crate::ingest::parse_one(&tenant.id, &app.ids, &body).map(|e| vec![e])
    };
    let events = match parsed {
        Ok(events) => events,
        Err(e) => return http::field_error(&e.field, e.message),
    };
    let accepted: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let transform = app.plugins.get(&tenant.id, Hook::Transform);
    let route = app.plugins.get(&tenant.id, Hook::Route);
    let events = plugin::hooks::process_events(transform, route, events).await;
    if let Err(e) = app.broker.publish(&tenant, &events).await {
        return http::error(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", e.to_string());
    }
    tenant.metrics.events_published.fetch_add(events.len() as u64, Relaxed);
    // Ids of events a plugin dropped are still returned: the publish was accepted.
    if batch {
        http::json(StatusCode::ACCEPTED, &json!({ "ids": accepted }))
    } else {
        http::json(StatusCode::ACCEPTED, &json!({ "id": accepted[0] }))
    }
}
