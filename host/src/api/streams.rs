//! `GET /v1/streams/users/{user}`, `/v1/streams/channels/{channel}` and
//! `/v1/streams/broadcast` (publish key): a page of a stream's history after a position,
//! for backends that catch up or audit what was sent. Reads the same history clients
//! resume from (in memory on one node, in Redis in cluster mode).

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::ApiError;
use super::code::ErrorCode;
use super::error::ErrorBody;
use super::extract::{PathParams, Publisher, UserId, query_param};
use crate::backend::History;
use crate::backend::history::Start;
use crate::protocol::frame;
use crate::stream::{Position, Target};
use crate::tenant::Tenant;

/// Events per page unless `limit` says otherwise, and the most `limit` may ask for.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// A page of a stream's history.
#[derive(Serialize, ToSchema)]
pub(super) struct Page {
    /// The stream's latest position, if it has one.
    latest: Option<Latest>,
    /// Whether every event after `after` was still kept.
    recovered: bool,
    /// The events, oldest first, as clients receive them in event frames (docs/PROTOCOL.md).
    #[schema(value_type = Vec<Object>)]
    events: Vec<Box<RawValue>>,
    /// The `after` of the next page: `EPOCH:OFFSET`.
    next: String,
    /// Whether more events follow.
    more: bool,
}

#[derive(Serialize, ToSchema)]
pub(super) struct Latest {
    epoch: String,
    offset: u64,
}

/// The query of every stream route, for the document (`paging` reads it, so that its
/// errors name the parameter).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct Paging {
    /// EPOCH:OFFSET: the events after it; without it, everything kept.
    after: Option<String>,
    /// Events per page, 1-1000 (100).
    limit: Option<usize>,
}

/// The answers of every stream route, for the document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum Answers {
    /// A page of the stream.
    #[response(status = OK)]
    Page(Page),
    /// `bad_request` (a bad `after` or `limit`, or user id) or `invalid_channel`.
    #[response(status = BAD_REQUEST)]
    BadRequest(ErrorBody<'static>),
    /// `unauthorized`: a missing or unknown publish key.
    #[response(status = UNAUTHORIZED)]
    Unauthorized(ErrorBody<'static>),
    /// `history_disabled`.
    #[response(status = CONFLICT)]
    Disabled(ErrorBody<'static>),
    /// `history_unavailable`.
    #[response(status = SERVICE_UNAVAILABLE)]
    Unavailable(ErrorBody<'static>),
}

/// A page of a user's stream.
#[utoipa::path(get, operation_id = "userStream", path = "/v1/streams/users/{user}", tag = "users", security(("publish_key" = [])),
    params(("user" = String, Path, description = "A user id"), Paging),
    responses(Answers))]
pub(super) async fn user(
    State(history): State<Arc<dyn History>>,
    Publisher(tenant): Publisher,
    UserId(user): UserId,
    RawQuery(query): RawQuery,
) -> Result<Json<Page>, ApiError> {
    page(&*history, &tenant, Target::User(&user), query.as_deref()).await
}

/// A page of a channel's stream.
#[utoipa::path(get, operation_id = "channelStream", path = "/v1/streams/channels/{channel}", tag = "users", security(("publish_key" = [])),
    params(("channel" = String, Path, description = "A channel name"), Paging),
    responses(Answers))]
pub(super) async fn channel(
    State(history): State<Arc<dyn History>>,
    Publisher(tenant): Publisher,
    PathParams(channel): PathParams<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page>, ApiError> {
    if !crate::channel::valid_name(&channel) {
        let message = "a channel name is 1-128 characters of A-Z a-z 0-9 _ - . : @";
        return Err(ApiError::new(ErrorCode::InvalidChannel, message));
    }
    page(&*history, &tenant, Target::Channel(&channel), query.as_deref()).await
}

/// A page of the tenant's broadcast stream.
#[utoipa::path(get, operation_id = "broadcastStream", path = "/v1/streams/broadcast", tag = "users", security(("publish_key" = [])),
    params(Paging),
    responses(Answers))]
pub(super) async fn broadcast(
    State(history): State<Arc<dyn History>>,
    Publisher(tenant): Publisher,
    RawQuery(query): RawQuery,
) -> Result<Json<Page>, ApiError> {
    page(&*history, &tenant, Target::Broadcast, query.as_deref()).await
}

/// The events after `after` (everything kept without it), at most `limit`.
async fn page(
    history: &dyn History,
    tenant: &Tenant,
    target: Target<'_>,
    query: Option<&str>,
) -> Result<Json<Page>, ApiError> {
    if !tenant.config.history.enabled() {
        let message = "this tenant keeps no history; set history.size above 0";
        return Err(ApiError::new(ErrorCode::HistoryDisabled, message));
    }
    let (after, limit) = paging(query)?;
    let after = match after {
        Some(after) => after,
        None => {
            let latest = history.read(tenant, target, Start { since: None, unacked: false }).await?;
            let epoch = latest.position.ok_or(crate::backend::history::HistoryError::NoPosition)?.epoch;
            Position { epoch, offset: 0 }
        }
    };
    let replay = history.read(tenant, target, Start { since: Some(&after), unacked: false }).await?;
    let more = replay.events.len() > limit;
    let events: Vec<Box<RawValue>> = replay
        .events
        .iter()
        .take(limit)
        .filter_map(|e| RawValue::from_string(String::from_utf8_lossy(frame::payload(&e.frame)).into_owned()).ok())
        .collect();
    let latest = replay.position.as_ref().map(|p| Latest { epoch: p.epoch.clone(), offset: p.offset });
    let next = replay.events.iter().take(limit).last().map_or(after.offset, |e| e.offset);
    let epoch = replay.position.map_or(after.epoch, |p| p.epoch);
    Ok(Json(Page { latest, recovered: replay.recovered, events, next: format!("{epoch}:{next}"), more }))
}

/// `after=EPOCH:OFFSET` and `limit` from the query.
fn paging(query: Option<&str>) -> Result<(Option<Position>, usize), ApiError> {
    let after = match query_param(query, "after") {
        None => None,
        Some(v) => Some(Position::parse(&v).ok_or_else(|| {
            ApiError::new(ErrorCode::BadRequest, "after must be EPOCH:OFFSET, as in the positions of event frames")
        })?),
    };
    let limit = match query_param(query, "limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
            ApiError::new(ErrorCode::BadRequest, format!("limit must be a number from 1 to {MAX_LIMIT}"))
        })?,
    };
    Ok((after, limit))
}
