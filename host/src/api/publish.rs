//! `POST /v1/publish` and `POST /v1/publish/batch` (publish key).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiError;
use super::code::ErrorCode;
use super::error::ErrorBody;
use super::extract::{Publisher, read_body};
use crate::alert::PushWhen;
use crate::app::App;
use crate::event::Event;
use crate::ingest;
use crate::metrics::GlobalMetrics;
use crate::tenant::Tenant;
use crate::webhook::dead_lettered;

/// The answer to an accepted publish.
#[derive(Serialize, ToSchema)]
pub(super) struct Published {
    /// The event's id; for an event whose idempotency key was taken, the first event's id.
    #[schema(example = "01JDX3Q9V2M4")]
    id: String,
}

/// The answer to an accepted batch: each event's id, in order.
#[derive(Serialize, ToSchema)]
pub(super) struct PublishedBatch {
    ids: Vec<String>,
}

/// Publishes one event. 202 once it is queued on every node (docs/PROTOCOL.md, Publishing).
#[utoipa::path(post, operation_id = "publish", path = "/v1/publish", tag = "publish", security(("publish_key" = [])),
    request_body = crate::ingest::PublishBody,
    responses(
        (status = ACCEPTED, description = "Accepted", body = Published),
        (status = BAD_REQUEST, description = "`invalid_field`, naming the field, or `bad_body`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: a missing or unknown publish key", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large` or `event_too_large`", body = ErrorBody),
        (status = TOO_MANY_REQUESTS, description = "`rate_limited`, with `Retry-After`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`draining` or `broker_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn one(
    State(app): State<App>,
    publisher: Result<Publisher, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let accepted =
        accept(&app, publisher, &headers, body, |body| ingest::parse_one(app.ids(), body).map(|e| vec![e])).await;
    answer(app.metrics(), accepted.map(|mut ids| Published { id: ids.swap_remove(0) }))
}

/// Publishes an array of events (at most `server.max_batch_events`), all or none.
#[utoipa::path(post, operation_id = "publishBatch", path = "/v1/publish/batch", tag = "publish", security(("publish_key" = [])),
    request_body = Vec<crate::ingest::PublishBody>,
    responses(
        (status = ACCEPTED, description = "Accepted", body = PublishedBatch),
        (status = BAD_REQUEST, description = "`invalid_field`, naming the field as `[i].field`, or `bad_body`", body = ErrorBody),
        (status = UNAUTHORIZED, description = "`unauthorized`: a missing or unknown publish key", body = ErrorBody),
        (status = PAYLOAD_TOO_LARGE, description = "`too_large` or `event_too_large`", body = ErrorBody),
        (status = TOO_MANY_REQUESTS, description = "`rate_limited`, with `Retry-After`", body = ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "`draining` or `broker_unavailable`", body = ErrorBody),
    ))]
pub(super) async fn batch(
    State(app): State<App>,
    publisher: Result<Publisher, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let max = app.config().server.max_batch_events;
    let accepted = accept(&app, publisher, &headers, body, |body| ingest::parse_batch(app.ids(), body, max)).await;
    answer(app.metrics(), accepted.map(|ids| PublishedBatch { ids }))
}

/// Every refused publish is counted, whatever refused it.
fn answer(metrics: &GlobalMetrics, accepted: Result<impl Serialize, ApiError>) -> Response {
    match accepted {
        Ok(ids) => (StatusCode::ACCEPTED, Json(ids)).into_response(),
        Err(e) => {
            metrics.publish_rejected.fetch_add(1, Relaxed);
            e.into_response()
        }
    }
}

/// Checks the node and the key, parses the body and publishes; returns the accepted ids
/// (including those of events a plugin dropped: the publish was accepted), and for an event
/// whose idempotency key was taken, the first event's id.
async fn accept(
    app: &App,
    publisher: Result<Publisher, ApiError>,
    headers: &HeaderMap,
    body: Body,
    parse: impl FnOnce(&[u8]) -> Result<Vec<Event>, ingest::FieldError>,
) -> Result<Vec<String>, ApiError> {
    not_draining(app)?;
    let Publisher(tenant) = publisher?;
    let body = read_body(headers, body, app.config().server.max_publish_bytes).await?;
    publish_events(app, &tenant, parse(&body)?).await
}

/// 503 `draining` while the node shuts down.
pub(super) fn not_draining(app: &App) -> Result<(), ApiError> {
    if app.lifecycle().drain.is_draining() {
        return Err(ApiError::new(ErrorCode::Draining, "this node is shutting down; publish to another node"));
    }
    Ok(())
}

/// Publishes validated events of `tenant` as every HTTP publish does: the tenant's event
/// size and publish rate, then the pipeline; tells the tenant's webhooks of the events a
/// plugin dropped. The ids, as [`accept`] returns them.
pub(super) async fn publish_events(
    app: &App,
    tenant: &Arc<Tenant>,
    events: Vec<Event>,
) -> Result<Vec<String>, ApiError> {
    if let Some(i) = tenant.quota.oversized(&events) {
        tenant.metrics.too_large.fetch_add(1, Relaxed);
        let max = tenant.quota.limits().max_event_bytes;
        let message = format!("event {i}'s data is over the tenant's max_event_bytes ({max})");
        return Err(ApiError::new(ErrorCode::EventTooLarge, message));
    }
    if !tenant.config.history.acks
        && let Some(i) =
            events.iter().position(|e| e.alert.as_ref().is_some_and(|a| a.when == Some(PushWhen::UnreadAfter)))
    {
        let field = if events.len() > 1 { format!("[{i}].push.when") } else { "push.when".into() };
        let message = "unread_after needs the tenant's read cursors (history.acks)".into();
        return Err(ingest::FieldError { field, message }.into());
    }
    within_rate(tenant, events.len())?;
    let published = ingest::pipeline::publish(app.pipeline(), tenant, events).await?;
    for refusal in &published.refused {
        let notice = dead_lettered("http", None, Some(&refusal.id), &refusal.reason, None);
        app.webhooks().emit(&tenant.id, notice);
    }
    Ok(published.ids)
}

/// 429 `rate_limited` with `Retry-After` when the tenant is over its publish rate.
fn within_rate(tenant: &Tenant, events: usize) -> Result<(), ApiError> {
    let Err(wait) = tenant.quota.publish(events) else { return Ok(()) };
    tenant.metrics.rate_limited.fetch_add(events as u64, Relaxed);
    let limits = tenant.quota.limits();
    let Some(wait) = wait else {
        let message = format!("{events} events at once exceed the tenant's publish burst ({})", limits.burst());
        return Err(ApiError::new(ErrorCode::RateLimited, message));
    };
    let message = format!("the tenant is over its publish_rate ({} events/s)", limits.publish_rate);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Err(ApiError::new(ErrorCode::RateLimited, message).with_header(header::RETRY_AFTER, HeaderValue::from(secs.max(1))))
}
