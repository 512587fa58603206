//! The Pusher Channels HTTP API for tenants with Pusher credentials (docs/PUSHER.md):
//! `POST /apps/{app_id}/events` and `POST /apps/{app_id}/batch_events`, signed as Pusher
//! signs them (`auth_key`, `auth_timestamp` within 600 s, `auth_version`, `body_md5`,
//! `auth_signature`), so the official server libraries publish to notify unchanged. Events
//! go through the same path as `POST /v1/publish`; errors are plain text, as Pusher's are.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::extract::{PathParams, read_body};
use super::publish::{not_draining, publish_events};
use crate::app::App;
use crate::config::PusherCredentials;
use crate::control::Command;
use crate::event::Event;
use crate::ingest;
use crate::protocol::pusher::{SocketId, USER_CHANNEL};
use crate::tenant::{Tenant, hex};

/// How far a request's `auth_timestamp` may be from this node's clock.
const MAX_SKEW_SECS: u64 = 600;
/// Channels one event may name, and events one batch may hold (Pusher's limits).
const MAX_CHANNELS: usize = 100;
const MAX_BATCH: usize = 10;
/// Presence channel names start with this.
const PRESENCE: &str = "presence-";
/// How long a query waits for the other nodes' answers.
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A refusal, answered as Pusher does: a status and a line of text.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.1).into_response()
    }
}

impl From<super::ApiError> for Refused {
    fn from(e: super::ApiError) -> Self {
        Self(e.status(), e.to_string())
    }
}

fn bad(message: impl Into<String>) -> Refused {
    Refused(StatusCode::BAD_REQUEST, message.into())
}

/// One event as Pusher's API takes it: `data` is a string (usually JSON text) delivered as is.
#[derive(Deserialize, ToSchema)]
pub(super) struct PusherEvent {
    name: String,
    data: String,
    channel: Option<String>,
    channels: Option<Vec<String>>,
    /// The sender's connection (`NODE.CONN`), left out of the delivery.
    socket_id: Option<String>,
    /// Attributes to answer about the channels: `subscription_count`, `user_count`.
    info: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub(super) struct PusherBatch {
    batch: Vec<PusherEvent>,
}

/// The query every signed request carries (docs/PUSHER.md), for the document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct Signature {
    /// The tenant's `pusher.key`.
    auth_key: String,
    /// Unix seconds, within 600 of the node's clock.
    auth_timestamp: u64,
    /// `1.0`.
    auth_version: String,
    /// The body's MD5, in hex (requests with a body).
    body_md5: Option<String>,
    /// HMAC-SHA256 of the request, in hex.
    auth_signature: String,
}

/// The answers of both publishing routes, for the document; refusals are plain text.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum Answers {
    /// Accepted: `{}`.
    #[response(status = OK)]
    Accepted(#[to_schema] Value),
    /// A body that is not a valid event or batch.
    #[response(status = BAD_REQUEST, content_type = "text/plain")]
    BadRequest(String),
    /// A wrong key, signature, MD5 or timestamp.
    #[response(status = UNAUTHORIZED, content_type = "text/plain")]
    Unauthorized(String),
    /// No tenant has this app id.
    #[response(status = NOT_FOUND, content_type = "text/plain")]
    UnknownApp(String),
    /// Over `server.max_publish_bytes` or the tenant's `max_event_bytes`.
    #[response(status = PAYLOAD_TOO_LARGE, content_type = "text/plain")]
    TooLarge(String),
    /// Over the tenant's publish rate.
    #[response(status = TOO_MANY_REQUESTS, content_type = "text/plain")]
    RateLimited(String),
    /// Draining, or the broker is unreachable.
    #[response(status = SERVICE_UNAVAILABLE, content_type = "text/plain")]
    Unavailable(String),
}

/// Triggers an event on one or more channels (at most 100).
#[utoipa::path(post, operation_id = "pusherTrigger", path = "/apps/{app_id}/events", tag = "pusher",
    params(("app_id" = String, Path, description = "The tenant's `pusher.app_id`"), Signature),
    request_body = PusherEvent,
    responses(Answers))]
pub(super) async fn trigger(
    State(app): State<App>,
    PathParams(app_id): PathParams<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = Request { app_id: &app_id, route: "events", query, headers: &headers };
    publish(&app, request, body, |app, body| {
        let event: PusherEvent = serde_json::from_slice(body).map_err(|e| bad(format!("Invalid JSON: {e}")))?;
        let info = event.info.clone();
        Ok((vec![native(app, event)?], Answer::Channels(info)))
    })
    .await
}

/// Triggers up to 10 events, each on its own channel; all or none.
#[utoipa::path(post, operation_id = "pusherTriggerBatch", path = "/apps/{app_id}/batch_events", tag = "pusher",
    params(("app_id" = String, Path, description = "The tenant's `pusher.app_id`"), Signature),
    request_body = PusherBatch,
    responses(Answers))]
pub(super) async fn trigger_batch(
    State(app): State<App>,
    PathParams(app_id): PathParams<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = Request { app_id: &app_id, route: "batch_events", query, headers: &headers };
    publish(&app, request, body, |app, body| {
        let batch: PusherBatch = serde_json::from_slice(body).map_err(|e| bad(format!("Invalid JSON: {e}")))?;
        if batch.batch.len() > MAX_BATCH {
            return Err(bad(format!("Batch too large: at most {MAX_BATCH} events")));
        }
        let infos = batch.batch.iter().map(|e| e.info.clone()).collect();
        let events = batch.batch.into_iter().map(|e| native(app, e)).collect::<Result<_, _>>()?;
        Ok((events, Answer::Batch(infos)))
    })
    .await
}

/// A request to one of the app's routes, before its body is read.
struct Request<'a> {
    app_id: &'a str,
    /// The route under `/apps/{app_id}/`.
    route: &'a str,
    query: Option<String>,
    headers: &'a HeaderMap,
}

/// What a publishing route answers beside `200`: the `info` each event asked for about
/// its channels (`user_count`, `subscription_count`), or `{}`.
enum Answer {
    /// One event: `{"channels": {NAME: {...}}}`.
    Channels(Option<String>),
    /// A batch: `{"batch": [{...}, ...]}`, each event's channel's.
    Batch(Vec<Option<String>>),
}

/// Checks the request's signature, reads its events with `events`, and publishes them;
/// `200` with what `info` asked for (`{}` without), or the refusal.
async fn publish(
    app: &App,
    request: Request<'_>,
    body: Body,
    events: impl FnOnce(&App, &[u8]) -> Result<(Vec<Event>, Answer), Refused>,
) -> Response {
    let answer = async {
        let path = format!("/apps/{}/{}", request.app_id, request.route);
        let query = pairs(request.query);
        let (tenant, body) = signed(app, request.app_id, &path, &query, request.headers, body).await?;
        let (events, answer) = events(app, &body)?;
        let channels: Vec<Vec<String>> = events.iter().map(|e| e.channels.clone()).collect();
        let infos: Vec<&String> = match &answer {
            Answer::Channels(info) => info.iter().collect(),
            Answer::Batch(infos) => infos.iter().flatten().collect(),
        };
        let presence_only = channels.iter().flatten().all(|c| c.starts_with(PRESENCE));
        if !presence_only && infos.iter().any(|i| i.split(',').any(|a| a.trim() == "user_count")) {
            return Err(bad("user_count may only be requested for presence channels"));
        }
        publish_events(app, &tenant, events).await?;
        let answer = match answer {
            Answer::Channels(None) => json!({}),
            Answer::Channels(Some(info)) => {
                let mut answer = serde_json::Map::new();
                for channel in channels.into_iter().flatten() {
                    answer.insert(channel.clone(), channel_info(app, &tenant, &channel, &info, false).await?);
                }
                json!({ "channels": answer })
            }
            Answer::Batch(infos) if infos.iter().all(Option::is_none) => json!({}),
            Answer::Batch(infos) => {
                let mut answers = Vec::new();
                for (info, channels) in infos.iter().zip(channels) {
                    let (Some(info), Some(channel)) = (info, channels.first()) else {
                        answers.push(json!({}));
                        continue;
                    };
                    answers.push(channel_info(app, &tenant, channel, info, false).await?);
                }
                json!({ "batch": answers })
            }
        };
        Ok::<_, Refused>(Json(answer))
    };
    answer.await.into_response()
}

/// What `info` (comma-separated `subscription_count`, `user_count`) asks about `channel`,
/// over every node, with `occupied` if `occupied`. `user_count` is for presence channels.
async fn channel_info(app: &App, tenant: &Tenant, channel: &str, info: &str, occupied: bool) -> Result<Value, Refused> {
    let asked = |name: &str| info.split(',').any(|i| i.trim() == name);
    let (subscriptions, users) = (asked("subscription_count"), asked("user_count"));
    if users && !channel.starts_with(PRESENCE) {
        return Err(bad("user_count may only be requested for presence channels"));
    }
    let mut answer = json!({});
    if subscriptions || occupied {
        let (subscribers, _, _) =
            crate::control::channel_presence(app, tenant, channel, ANSWER_WAIT).await.map_err(unavailable)?;
        let count: u64 = subscribers.users.values().sum();
        if occupied {
            answer["occupied"] = json!(count > 0);
        }
        if subscriptions {
            answer["subscription_count"] = json!(count);
        }
    }
    if users {
        answer["user_count"] = json!(app.members().list(tenant, channel).await.map_err(unavailable)?.len());
    }
    Ok(answer)
}

/// A query string's parameters, decoded.
fn pairs(query: Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The tenant of `app_id` and the request's body, once its signature checks out.
async fn signed(
    app: &App,
    app_id: &str,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: Body,
) -> Result<(Arc<Tenant>, bytes::Bytes), Refused> {
    not_draining(app)?;
    let (tenant, credentials) = credentials(app, app_id)?;
    let body = read_body(headers, body, app.config().server.max_publish_bytes).await?;
    verify(&credentials, "POST", path, query, &body, crate::clock::now_millis() / 1000)?;
    Ok((tenant, body))
}

/// The tenant of `app_id`, once the signature of a GET of `path` checks out.
fn signed_get(app: &App, app_id: &str, path: &str, query: Option<String>) -> Result<Arc<Tenant>, Refused> {
    let (tenant, credentials) = credentials(app, app_id)?;
    verify(&credentials, "GET", path, &pairs(query), b"", crate::clock::now_millis() / 1000)?;
    Ok(tenant)
}

/// The tenant whose `pusher.app_id` is `app_id`, with its credentials.
fn credentials(app: &App, app_id: &str) -> Result<(Arc<Tenant>, PusherCredentials), Refused> {
    let app_of = app.tenants().with_pusher(|p| p.app_id == app_id);
    app_of.ok_or_else(|| Refused(StatusCode::NOT_FOUND, format!("Unknown app: {app_id}")))
}

/// The answers of the query routes, for the document; refusals are plain text.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum QueryAnswers {
    /// The answer.
    #[response(status = OK)]
    Answer(#[to_schema] Value),
    /// A channel the route does not apply to.
    #[response(status = BAD_REQUEST, content_type = "text/plain")]
    BadRequest(String),
    /// A wrong key, signature or timestamp.
    #[response(status = UNAUTHORIZED, content_type = "text/plain")]
    Unauthorized(String),
    /// No tenant has this app id.
    #[response(status = NOT_FOUND, content_type = "text/plain")]
    UnknownApp(String),
    /// The presence store is unreachable.
    #[response(status = SERVICE_UNAVAILABLE, content_type = "text/plain")]
    Unavailable(String),
}

/// Closes every connection signed in as `user_id` (`pusher:signin`), on every node, with 4009.
#[utoipa::path(post, operation_id = "pusherTerminateConnections", path = "/apps/{app_id}/users/{user_id}/terminate_connections", tag = "pusher",
    params(
        ("app_id" = String, Path, description = "The tenant's `pusher.app_id`"),
        ("user_id" = String, Path, description = "A signed-in user's id"),
        Signature,
    ),
    responses(QueryAnswers))]
pub(super) async fn terminate_connections(
    State(app): State<App>,
    PathParams((app_id, user)): PathParams<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = format!("/apps/{app_id}/users/{user}/terminate_connections");
    terminate(&app, &app_id, &path, &user, (query, &headers, body)).await
}

/// [`terminate_connections`] at the path the official Python library sends it to (without
/// `/apps/{app_id}`): the app is the one whose key signed it.
#[utoipa::path(post, operation_id = "pusherTerminateConnectionsUnprefixed", path = "/users/{user_id}/terminate_connections", tag = "pusher",
    params(("user_id" = String, Path, description = "A signed-in user's id"), Signature),
    responses(QueryAnswers))]
pub(super) async fn terminate_connections_unprefixed(
    State(app): State<App>,
    PathParams(user): PathParams<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = pairs(query.clone()).into_iter().find(|(k, _)| k == "auth_key").map(|(_, v)| v).unwrap_or_default();
    let Some((_, PusherCredentials { app_id, .. })) = app.tenants().with_pusher(|p| p.key == key) else {
        return Refused(StatusCode::UNAUTHORIZED, "Unknown auth_key".into()).into_response();
    };
    let path = format!("/users/{user}/terminate_connections");
    terminate(&app, &app_id, &path, &user, (query, &headers, body)).await
}

/// Checks a terminate request signed for `path` and closes `user`'s connections on every node.
async fn terminate(
    app: &App,
    app_id: &str,
    path: &str,
    user: &str,
    (query, headers, body): (Option<String>, &HeaderMap, Body),
) -> Response {
    let answer = async {
        let (tenant, _) = signed(app, app_id, path, &pairs(query), headers, body).await?;
        let channel = crate::protocol::pusher::user_channel(user);
        let close = Command::CloseSubscribers { tenant: tenant.id.to_string(), channel };
        crate::control::send(app, close).await.map_err(unavailable)?;
        Ok::<_, Refused>(Json(json!({})))
    };
    answer.await.into_response()
}

/// The occupied channels (over every node) whose names start with `filter_by_prefix`, each
/// with its `user_count` when `info=user_count` (presence channels only).
#[utoipa::path(get, operation_id = "pusherChannels", path = "/apps/{app_id}/channels", tag = "pusher",
    params(
        ("app_id" = String, Path, description = "The tenant's `pusher.app_id`"),
        ("filter_by_prefix" = Option<String>, Query, description = "Only channels whose names start with it"),
        ("info" = Option<String>, Query, description = "`user_count` (with `filter_by_prefix=presence-`)"),
        Signature,
    ),
    responses(QueryAnswers))]
pub(super) async fn channels(
    State(app): State<App>,
    PathParams(app_id): PathParams<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let answer = async {
        let params = pairs(query.clone());
        let tenant = signed_get(&app, &app_id, &format!("/apps/{app_id}/channels"), query)?;
        let prefix = param(&params, "filter_by_prefix").unwrap_or_default();
        let user_count = infos(&params).any(|i| i == "user_count");
        if user_count && !prefix.starts_with(PRESENCE) {
            return Err(bad("user_count may only be requested with filter_by_prefix=presence-"));
        }
        let counts = crate::control::channels(&app, &tenant, prefix, ANSWER_WAIT).await.map_err(unavailable)?;
        let mut channels = serde_json::Map::new();
        for channel in counts.channels.into_keys() {
            let info = match user_count {
                true => {
                    json!({ "user_count": app.members().list(&tenant, &channel).await.map_err(unavailable)?.len() })
                }
                false => json!({}),
            };
            channels.insert(channel, info);
        }
        Ok::<_, Refused>(Json(json!({ "channels": channels })))
    };
    answer.await.into_response()
}

/// One channel, over every node: `occupied`, and `subscription_count` and `user_count`
/// (presence channels) when `info` asks for them.
#[utoipa::path(get, operation_id = "pusherChannel", path = "/apps/{app_id}/channels/{channel}", tag = "pusher",
    params(
        ("app_id" = String, Path, description = "The tenant's `pusher.app_id`"),
        ("channel" = String, Path, description = "A channel"),
        ("info" = Option<String>, Query, description = "`subscription_count`, `user_count` (presence channels), comma-separated"),
        Signature,
    ),
    responses(QueryAnswers))]
pub(super) async fn channel(
    State(app): State<App>,
    PathParams((app_id, channel)): PathParams<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let answer = async {
        let params = pairs(query.clone());
        let tenant = signed_get(&app, &app_id, &format!("/apps/{app_id}/channels/{channel}"), query)?;
        let info = param(&params, "info").unwrap_or_default();
        Ok::<_, Refused>(Json(channel_info(&app, &tenant, &channel, info, true).await?))
    };
    answer.await.into_response()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The attributes `info` asks for (comma-separated).
fn infos(params: &[(String, String)]) -> impl Iterator<Item = &str> {
    param(params, "info").unwrap_or_default().split(',').map(str::trim)
}

fn unavailable(e: impl std::fmt::Display) -> Refused {
    Refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// The users of a presence channel, over every node: `{"users": [{"id": ...}]}`.
#[utoipa::path(get, operation_id = "pusherChannelUsers", path = "/apps/{app_id}/channels/{channel}/users", tag = "pusher",
    params(
        ("app_id" = String, Path, description = "The tenant's `pusher.app_id`"),
        ("channel" = String, Path, description = "A `presence-` channel"),
        Signature,
    ),
    responses(QueryAnswers))]
pub(super) async fn channel_users(
    State(app): State<App>,
    PathParams((app_id, channel)): PathParams<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let answer = async {
        let tenant = signed_get(&app, &app_id, &format!("/apps/{app_id}/channels/{channel}/users"), query)?;
        if !channel.starts_with(PRESENCE) {
            return Err(bad("Only presence channels have users"));
        }
        let members = app.members().list(&tenant, &channel).await.map_err(unavailable)?;
        let users: Vec<Value> = members.iter().map(|(id, _)| json!({ "id": id })).collect();
        Ok::<_, Refused>(Json(json!({ "users": users })))
    };
    answer.await.into_response()
}

/// Checks a request as Pusher signs it: the key, the timestamp within 600 s of `now`, the
/// version, the body's MD5, and the HMAC-SHA256 (keyed by the secret) of the method, the
/// path and the sorted query without the signature.
fn verify(
    credentials: &PusherCredentials,
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: &[u8],
    now: u64,
) -> Result<(), Refused> {
    let unauthorized = |message: String| Refused(StatusCode::UNAUTHORIZED, message);
    let param = |name: &str| query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    if param("auth_key") != Some(credentials.key.as_str()) {
        return Err(unauthorized("Unknown auth_key".into()));
    }
    let timestamp: u64 = param("auth_timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| unauthorized("Missing auth_timestamp".into()))?;
    if timestamp.abs_diff(now) > MAX_SKEW_SECS {
        let message =
            format!("Timestamp expired: Given timestamp ({timestamp}) not within 600s of server time ({now})");
        return Err(unauthorized(message));
    }
    if param("auth_version") != Some("1.0") {
        return Err(unauthorized("auth_version must be 1.0".into()));
    }
    if !body.is_empty() && param("body_md5") != Some(hex(&Md5::digest(body)).as_str()) {
        return Err(unauthorized("body_md5 does not match the body".into()));
    }
    let to_sign = string_to_sign(method, path, query);
    let expected = crate::protocol::pusher::sign(&credentials.secret, &to_sign);
    let given = param("auth_signature").unwrap_or_default();
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        let shown = to_sign.replace('\n', "\\n");
        return Err(unauthorized(format!(
            "Invalid signature: you should have sent HmacSHA256Hex(\"{shown}\", your_secret_key), but you sent \"{given}\""
        )));
    }
    Ok(())
}

/// `METHOD\nPATH\nk=v&...`: the query's parameters but the signature, names lower-cased,
/// sorted by name.
fn string_to_sign(method: &str, path: &str, query: &[(String, String)]) -> String {
    let mut params: Vec<(String, &str)> = query
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .filter(|(k, _)| k != "auth_signature")
        .collect();
    params.sort();
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{method}\n{path}\n{}", query.join("&"))
}

/// The native event of a Pusher one: its name, its channels, and its `data` string as a JSON
/// string, checked as `POST /v1/publish` checks an event.
fn native(app: &App, event: PusherEvent) -> Result<Event, Refused> {
    let channels: Vec<String> = event.channels.into_iter().flatten().chain(event.channel).collect();
    if channels.is_empty() {
        return Err(bad("Missing channel or channels"));
    }
    if channels.len() > MAX_CHANNELS {
        return Err(bad(format!("Too many channels: at most {MAX_CHANNELS}")));
    }
    let except = match event.socket_id.as_deref() {
        None => None,
        Some(s) => Some(SocketId::parse(s).ok_or_else(|| bad(format!("Invalid socket id: '{s}'")))?),
    };
    // Users' channels are the host's own names, outside notify's channel rules.
    let (users, mut channels): (Vec<String>, Vec<String>) =
        channels.into_iter().partition(|c| c.starts_with(USER_CHANNEL));
    if users.iter().any(|c| !(1..=128).contains(&(c.len() - USER_CHANNEL.len()))) {
        return Err(bad("Invalid user id in #server-to-user- channel"));
    }
    let named = if channels.is_empty() { vec!["-".to_owned()] } else { channels.clone() };
    let body = json!({"channels": named, "event": event.name, "data": Value::String(event.data)});
    let body = serde_json::to_vec(&body).expect("JSON values serialise");
    let event = ingest::parse_one(app.ids(), &body).map_err(|e| bad(e.to_string()))?;
    channels.extend(users);
    Ok(Event { except, channels, ..event })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Pusher's HTTP API reference (authentication section).
    #[test]
    fn signs_as_pusher_documents() {
        let credentials = PusherCredentials {
            app_id: "3".into(),
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
            client_events: false,
        };
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(hex(&Md5::digest(body)), "ec365a775a4cd0599faeb73354201b6f");
        let query = |signature: &str| -> Vec<(String, String)> {
            [
                ("auth_key", "278d425bdf160c739803"),
                ("auth_timestamp", "1353088179"),
                ("auth_version", "1.0"),
                ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
                ("auth_signature", signature),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec()
        };
        let good = query("da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c");
        assert!(verify(&credentials, "POST", "/apps/3/events", &good, body, 1353088179).is_ok());
        let Err(Refused(status, message)) =
            verify(&credentials, "POST", "/apps/3/events", &query("00"), body, 1353088179)
        else {
            panic!("a wrong signature passed")
        };
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            message.starts_with(
                "Invalid signature: you should have sent HmacSHA256Hex(\"POST\\n/apps/3/events\\nauth_key="
            )
        );
        let late = verify(&credentials, "POST", "/apps/3/events", &good, body, 1353088179 + 601);
        assert!(late.is_err_and(|Refused(_, m)| m.starts_with("Timestamp expired")));
    }
}
