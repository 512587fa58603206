//! The Pusher protocol on a WebSocket connection (docs/PUSHER.md): the connection's socket
//! id and first frame, the client's frames (ping, subscribe with the signature private and
//! presence channels need, unsubscribe), closing with Pusher's codes, and refusing a
//! connection as Pusher does (after the upgrade: an error frame, then the close code).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Request;
use axum::http::request::Parts;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::app::App;
use crate::backend::history::Start;
use crate::backend::members::{Departed, Joined, MAX_MEMBERS};
use crate::bucket::Bucket;
use crate::config::PusherCredentials;
use crate::event::Event;
use crate::fanout::Kill;
use crate::hub::Conn;
use crate::protocol::code;
use crate::protocol::pusher::{self, ClientFrame, SocketId};
use crate::session::{self, Action, Checked};
use crate::stream::{Position, Replay, Target};
use crate::tenant::Tenant;
use crate::webhook::{Kind, Notice};

/// How long a refused connection may take to read its error and close.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Presence channel names start with this.
const PRESENCE: &str = "presence-";
/// Longest presence user id, and `user_info` (bytes of JSON), as Pusher limits them.
const MAX_USER_ID: usize = 128;
const MAX_USER_INFO: usize = 1024;
/// Client events one connection may send per second (and at once), as Pusher documents.
const CLIENT_EVENTS_PER_SEC: f64 = 10.0;
/// How often the members store is swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The connection's socket id.
fn socket_id(conn: &Conn) -> String {
    SocketId::of(conn.id).to_string()
}

/// Joins a Pusher connection (anonymous: the broadcast and the channels it subscribes) and
/// queues `pusher:connection_established`.
pub(super) async fn join(conn: &Arc<Conn>, app: &App) {
    let first = pusher::connection_established(&socket_id(conn));
    session::join_anonymous(conn, first, app).await;
}

/// A connection's rate of client events: made when it sends its first.
pub(super) type ClientEvents = Option<Box<Bucket>>;

/// Handles a Pusher client frame.
pub(super) async fn on_text(text: Utf8Bytes, conn: &Arc<Conn>, app: &App, rate: &mut ClientEvents) {
    let action = match pusher::parse(&text) {
        Err(e) => Action::Reply(pusher::error(None, &format!("invalid frame: {e}"))),
        Ok(ClientFrame::Ping) => Action::Reply(pusher::pong()),
        Ok(ClientFrame::Subscribe { channel, auth, channel_data }) if channel.starts_with(PRESENCE) => {
            let signed_data = (auth.as_deref(), channel_data.as_deref());
            return Box::pin(subscribe_presence(conn, app, &channel, signed_data)).await;
        }
        Ok(ClientFrame::Subscribe { channel, .. }) if channel.starts_with(pusher::USER_CHANNEL) => {
            Action::Reply(user_channel(conn, &channel))
        }
        Ok(ClientFrame::Subscribe { channel, auth, .. }) if pusher::is_cache(&channel) => {
            return Box::pin(subscribe_cached(conn, app, &channel, auth.as_deref())).await;
        }
        Ok(ClientFrame::Subscribe { channel, auth, .. }) => subscribe(conn, app, channel, auth.as_deref()),
        Ok(ClientFrame::Signin { auth, user_data }) => Box::pin(signin(conn, app, &auth, &user_data)).await,
        Ok(ClientFrame::Unsubscribe { channel }) => {
            if session::remove_subscription(conn, app, &channel) && channel.starts_with(PRESENCE) {
                Box::pin(leave_presence(app, conn.tenant.clone(), &channel, conn.id)).await;
            }
            Action::Done
        }
        Ok(ClientFrame::ClientEvent { event, channel, data }) => {
            match Box::pin(client_event(conn, app, rate, event, channel, data)).await {
                Ok(()) => Action::Done,
                Err(reply) => Action::Reply(reply),
            }
        }
        Ok(ClientFrame::Other) => Action::Done,
    };
    session::act(action, conn, app).await;
}

/// The answer to a subscription to a server-to-user channel: the node subscribed it at
/// signin, and pusher-js asks again to hear it took.
fn user_channel(conn: &Conn, channel: &str) -> Bytes {
    match conn.subscribed_to(channel) {
        true => pusher::subscription_succeeded(channel, &json!({})),
        false => pusher::subscription_error(channel, "AuthError", "sign in as this user first", 401),
    }
}

/// Joins a presence channel (a cache one's last event follows the answer).
async fn subscribe_presence(conn: &Arc<Conn>, app: &App, channel: &str, signed_data: (Option<&str>, Option<&str>)) {
    let cached = pusher::is_cache(channel) && conn.tenant.config.history.enabled();
    let (reply, joined) = Box::pin(join_presence(conn, app, channel, signed_data, cached)).await;
    conn.outbox.push_control(reply);
    if joined && pusher::is_cache(channel) {
        replay_last(conn, app, channel, cached).await;
    }
}

/// Subscribes to a public or private channel, after checking a private one's signature.
fn subscribe(conn: &Arc<Conn>, app: &App, channel: String, auth: Option<&str>) -> Action {
    if channel.starts_with("private-") && !signed(conn, app, &channel, auth, None) {
        return Action::Reply(bad_signature(&channel));
    }
    let succeeded = || pusher::subscription_succeeded(&channel, &json!({}));
    match session::add_subscription(conn, app, Checked::Grants(None), &channel, false, false) {
        Ok(None) => Action::Reply(succeeded()),
        Ok(Some(ticket)) => Action::AfterSync(succeeded(), ticket),
        Err(refusal) => Action::Reply(refused(&channel, refusal)),
    }
}

/// Subscribes to a cache channel (its private one's signature checked), then sends its
/// last event, or `pusher:cache_miss`.
async fn subscribe_cached(conn: &Arc<Conn>, app: &App, channel: &str, auth: Option<&str>) {
    if channel.starts_with("private-") && !signed(conn, app, channel, auth, None) {
        return conn.outbox.push_control(bad_signature(channel));
    }
    let history = conn.tenant.config.history.enabled();
    match session::add_subscription(conn, app, Checked::Grants(None), channel, false, history) {
        Ok(Some(ticket)) => {
            session::sync_interest(&*app.pipeline().broker, ticket).await;
            conn.outbox.push_control(pusher::subscription_succeeded(channel, &json!({})));
            replay_last(conn, app, channel, history).await;
        }
        Ok(None) => conn.outbox.push_control(pusher::subscription_succeeded(channel, &json!({}))),
        Err(refusal) => conn.outbox.push_control(refused(channel, refusal)),
    }
}

/// Queues a cache channel's last event (its latest in history, while history keeps it) or
/// `pusher:cache_miss`, then the live events its resume gate held (`history`: the tenant
/// keeps it, and the gate was closed when it subscribed).
async fn replay_last(conn: &Arc<Conn>, app: &App, channel: &str, history: bool) {
    let target = Target::Channel(channel);
    let start = |since| Start { since, unacked: false };
    let replay = match history {
        false => None,
        true => match app.history().read(&conn.tenant, target, start(None)).await {
            Ok(latest) => match &latest.position {
                Some(p) if p.offset > 0 => {
                    let before = Position { epoch: p.epoch.clone(), offset: p.offset - 1 };
                    Some(app.history().read(&conn.tenant, target, start(Some(&before))).await.unwrap_or(latest))
                }
                _ => Some(latest),
            },
            Err(_) => Some(Replay::unavailable()),
        },
    };
    if replay.as_ref().is_none_or(|r| r.events.is_empty()) {
        conn.outbox.push_control(pusher::cache_miss(channel));
        hook(app, &conn.tenant.id, Kind::CacheMiss, || json!({ "channel": channel }));
    }
    if let Some(replay) = replay {
        app.hub().resume(conn, target, &replay);
    }
}

fn bad_signature(channel: &str) -> Bytes {
    let error = "Invalid signature: the auth does not sign this socket id and channel";
    pusher::subscription_error(channel, "AuthError", error, 401)
}

/// The `pusher:subscription_error` of a subscription `session` refused.
fn refused(channel: &str, (code, message): (&str, &str)) -> Bytes {
    match code {
        code::TOO_MANY_SUBSCRIPTIONS => pusher::subscription_error(channel, "LimitReached", message, 429),
        _ => pusher::subscription_error(channel, "InvalidChannel", message, 400),
    }
}

/// A presence channel's `channel_data`: the member's user id (a string, or a number taken
/// as its digits) and `user_info`.
#[derive(Deserialize)]
struct ChannelData {
    user_id: Value,
    #[serde(default)]
    user_info: Option<Box<RawValue>>,
}

/// The user id and `user_info` (`null` without) of `channel_data`, within Pusher's limits.
fn member(channel_data: &str) -> Option<(String, Box<RawValue>)> {
    let data: ChannelData = serde_json::from_str(channel_data).ok()?;
    let user = match data.user_id {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let info = data.user_info.unwrap_or_else(|| RawValue::from_string("null".into()).expect("JSON"));
    (!user.is_empty() && user.len() <= MAX_USER_ID && info.get().len() <= MAX_USER_INFO).then_some((user, info))
}

/// Subscribes to a presence channel as the member its signed `channel_data` names (its
/// resume gate closed if `gated`, for a cache channel's replay); tells the channel when the
/// member is new to it. The reply, and whether it joined.
async fn join_presence(
    conn: &Arc<Conn>,
    app: &App,
    channel: &str,
    (auth, data): (Option<&str>, Option<&str>),
    gated: bool,
) -> (Bytes, bool) {
    let Some(data) = data.filter(|d| signed(conn, app, channel, auth, Some(d))) else {
        return (bad_signature(channel), false);
    };
    let Some((user, info)) = member(data) else {
        let error = "channel_data must be JSON with a user_id (at most 128 characters) and user_info under 1 KB";
        return (pusher::subscription_error(channel, "InvalidChannelData", error, 400), false);
    };
    let ticket = match session::add_subscription(conn, app, Checked::Grants(None), channel, false, gated) {
        Ok(Some(ticket)) => ticket,
        Ok(None) => return (pusher::error(None, "already subscribed to this presence channel"), false),
        Err(refusal) => return (refused(channel, refusal), false),
    };
    session::sync_interest(&*app.pipeline().broker, ticket).await;
    let joined = app.members().join(&conn.tenant, channel, conn.id, (&user, &info)).await;
    let (first, members) = match joined {
        Ok(Joined::In { first, members }) => (first, members),
        Ok(Joined::Full) => {
            session::remove_subscription(conn, app, channel);
            let error = format!("presence channels hold at most {MAX_MEMBERS} members");
            return (pusher::subscription_error(channel, "LimitReached", &error, 429), false);
        }
        Err(e) => {
            session::remove_subscription(conn, app, channel);
            tracing::warn!(tenant = &*conn.tenant.id, error = %e, "presence channel join failed");
            return (pusher::subscription_error(channel, "ServiceUnavailable", "presence is unavailable", 503), false);
        }
    };
    if first {
        let data = json!({ "user_id": user, "user_info": info });
        tell(app, &conn.tenant, channel, "pusher_internal:member_added", &data, Some(SocketId::of(conn.id))).await;
        hook(app, &conn.tenant.id, Kind::MemberAdded, || json!({ "channel": channel, "user_id": user }));
    }
    let ids: Vec<&str> = members.iter().map(|(id, _)| &**id).collect();
    let hash: BTreeMap<&str, &RawValue> = members.iter().map(|(id, info)| (&**id, &**info)).collect();
    let presence = json!({ "presence": { "ids": ids, "hash": hash, "count": ids.len() } });
    (pusher::subscription_succeeded(channel, &presence), true)
}

/// Ends connection `conn`'s membership of a presence channel; tells the channel when it
/// was the member's last connection in it.
async fn leave_presence(app: &App, tenant: Arc<Tenant>, channel: &str, conn: u64) {
    match app.members().leave(&tenant, channel, conn).await {
        Ok(Some(user)) => member_removed(app, &tenant, channel, &user).await,
        Ok(None) => {}
        // The leave is retried by the sweep, which tells the channel then.
        Err(e) => tracing::warn!(tenant = &*tenant.id, error = %e, "presence channel leave failed"),
    }
}

/// Leaves the presence channels of an ending connection (in the background: its close
/// does not wait for the store).
pub(super) fn leave(conn: &Conn, app: &App) {
    let presence: Vec<Box<str>> = conn
        .subscriptions
        .lock()
        .expect("subscriptions lock")
        .iter()
        .filter(|c| c.starts_with(PRESENCE))
        .cloned()
        .collect();
    if presence.is_empty() {
        return;
    }
    let (app2, tenant, id) = (app.clone(), conn.tenant.clone(), conn.id);
    app.lifecycle().connections.spawn(async move {
        for channel in presence {
            leave_presence(&app2, tenant.clone(), &channel, id).await;
        }
    });
}

/// Publishes a client event to the other subscribers of its channel, on every node, as
/// Pusher allows it: tenants that enable them, private and presence channels the
/// connection is subscribed to (not encrypted ones), at most 10 a second per connection.
/// It passes the tenant's publish rate, event size and plugins as any publish does.
async fn client_event(
    conn: &Conn,
    app: &App,
    rate: &mut ClientEvents,
    name: String,
    channel: Option<String>,
    data: Box<RawValue>,
) -> Result<(), Bytes> {
    let tenant = &conn.tenant;
    if !credentials(conn, app).is_some_and(|p| p.client_events) {
        return Err(pusher::error(None, "client events are not enabled for this app"));
    }
    let channel = channel.unwrap_or_default();
    let allowed = (channel.starts_with("private-") && !channel.starts_with("private-encrypted-"))
        || channel.starts_with(PRESENCE);
    if !allowed || !conn.subscribed_to(&channel) {
        let message =
            "Client event rejected - only supported on private and presence channels the connection is subscribed to";
        return Err(pusher::error(None, message));
    }
    let now = Instant::now();
    let bucket = rate.get_or_insert_with(|| Box::new(Bucket::full(CLIENT_EVENTS_PER_SEC, now)));
    bucket.refill(CLIENT_EVENTS_PER_SEC, CLIENT_EVENTS_PER_SEC, now);
    if bucket.take(1.0, CLIENT_EVENTS_PER_SEC).is_err() {
        let message = "Client event rejected due to rate limit";
        return Err(pusher::error(Some(pusher::close::CLIENT_EVENT_RATE), message));
    }
    let mut event = Event::on_channel(app.ids().next_id(), &name, &channel, data, Some(SocketId::of(conn.id)));
    if channel.starts_with(PRESENCE) {
        event.sender = app.members().member_of(tenant, &channel, conn.id);
    }
    let event = vec![event];
    if tenant.quota.oversized(&event).is_some() || tenant.quota.publish(1).is_err() {
        return Err(pusher::error(None, "Client event rejected: over the app's event size or publish rate"));
    }
    let told = || {
        let (e, socket_id) = (&event[0], SocketId::of(conn.id).to_string());
        let mut data = json!({ "channel": channel, "event": name, "data": e.data.get(), "socket_id": socket_id });
        if let Some(user) = &e.sender {
            data["user_id"] = json!(user);
        }
        data
    };
    hook(app, &tenant.id, Kind::ClientEvent, told);
    let published = crate::ingest::pipeline::publish(app.pipeline(), tenant, event).await;
    published.map(drop).map_err(|e| pusher::error(None, &format!("Client event not published: {e}")))
}

/// Tells a presence channel's subscribers, and the tenant's webhooks, that `user` left it.
async fn member_removed(app: &App, tenant: &Arc<Tenant>, channel: &str, user: &str) {
    tell(app, tenant, channel, "pusher_internal:member_removed", &json!({ "user_id": user }), None).await;
    hook(app, &tenant.id, Kind::MemberRemoved, || json!({ "channel": channel, "user_id": user }));
}

/// Hands a notice of `kind` (its data made only then) to the tenant's webhooks that want it.
fn hook(app: &App, tenant: &str, kind: Kind, data: impl FnOnce() -> Value) {
    if app.webhooks().wants(tenant, kind.bit()) {
        app.webhooks().emit(tenant, Notice::new(kind, data()));
    }
}

/// Publishes a presence channel's member event to its subscribers on every node.
async fn tell(app: &App, tenant: &Arc<Tenant>, channel: &str, name: &str, data: &Value, except: Option<SocketId>) {
    let data = serde_json::to_string(&data.to_string()).expect("strings serialise");
    let data = RawValue::from_string(data).expect("a JSON string");
    let event = Event::on_channel(app.ids().next_id(), name, channel, data, except);
    if let Err(e) = app.pipeline().broker.publish(tenant, &[event]).await {
        tracing::warn!(tenant = &*tenant.id, channel, error = %e, "presence channel member event not published");
    }
}

/// Every second: marks this node live in the members store and tells the channels of the
/// members a stopped node took with it.
pub(crate) async fn sweep_members(app: App) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        let tenants: Vec<Arc<Tenant>> = app.tenants().all().into_iter().filter(|t| t.config.pusher.is_some()).collect();
        let departed = app.members().sweep(&tenants).await.unwrap_or_default();
        for Departed { tenant, channel, user } in departed {
            let Some(tenant) = app.tenants().get(&tenant) else { continue };
            member_removed(&app, &tenant, &channel, &user).await;
        }
    }
}

/// Signs the connection in as the user `user_data` names (`{"id": ..., ...}`), when the
/// app's backend signed `SOCKET_ID::user::USER_DATA`: the connection then gets the events
/// sent to that user (`#server-to-user-ID`), and `terminate_connections` closes it. A bad
/// signature closes the connection with 4009, as Pusher does; a connection signs in as one
/// user only.
async fn signin(conn: &Arc<Conn>, app: &App, auth: &str, user_data: &str) -> Action {
    let user = serde_json::from_str::<Value>(user_data).ok().and_then(|d| match d.get("id")? {
        Value::String(id) if !id.is_empty() && id.len() <= MAX_USER_ID => Some(id.clone()),
        _ => None,
    });
    let text = format!("{}::user::{user_data}", socket_id(conn));
    let (Some(user), true) = (user, signed_text(conn, app, Some(auth), &text)) else {
        conn.outbox
            .push_control(pusher::error(None, "Invalid signin: the auth does not sign this socket id and user_data"));
        conn.outbox.kill(Kill::Disconnected);
        return Action::Done;
    };
    let channel = pusher::user_channel(&user);
    let signed_in =
        conn.subscriptions.lock().expect("subscriptions lock").iter().any(|c| c.starts_with(pusher::USER_CHANNEL));
    if signed_in && !conn.subscribed_to(&channel) {
        return Action::Reply(pusher::error(None, "this connection is signed in as another user"));
    }
    match session::add_subscription(conn, app, Checked::Host, &channel, false, false) {
        Ok(Some(ticket)) => Action::AfterSync(pusher::signin_success(user_data), ticket),
        _ => Action::Reply(pusher::signin_success(user_data)),
    }
}

/// Whether `auth` (`KEY:SIGNATURE`) signs `SOCKET_ID:CHANNEL[:CHANNEL_DATA]` with the
/// tenant's Pusher secret; compared in constant time.
fn signed(conn: &Conn, app: &App, channel: &str, auth: Option<&str>, channel_data: Option<&str>) -> bool {
    let mut text = format!("{}:{channel}", socket_id(conn));
    if let Some(data) = channel_data {
        text.push(':');
        text.push_str(data);
    }
    signed_text(conn, app, auth, &text)
}

/// The tenant's Pusher app as it is now (its secret may have been rotated since the
/// connection opened).
fn credentials(conn: &Conn, app: &App) -> Option<PusherCredentials> {
    app.tenants().get(&conn.tenant.id)?.config.pusher.clone()
}

/// Whether `auth` (`KEY:SIGNATURE`) signs `text` with the tenant's Pusher secret.
fn signed_text(conn: &Conn, app: &App, auth: Option<&str>, text: &str) -> bool {
    let Some(credentials) = credentials(conn, app) else { return false };
    let Some((key, signature)) = auth.and_then(|a| a.split_once(':')) else { return false };
    let expected = pusher::sign(&credentials.secret, text);
    key == credentials.key && bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
}

/// The code a Pusher connection closes with for `code` (native, docs/PROTOCOL.md): Pusher's
/// code of the same meaning, told first in a `pusher:error` frame when it is one of Pusher's.
pub(super) fn closing(conn: &Conn, code: u16, reason: &str) -> u16 {
    let code = pusher::close_code(code);
    if (4000..4300).contains(&code) {
        // Queued as the close frame is: a closing connection's outbox takes no other frame.
        conn.outbox.push_transport(pusher::error(Some(code), reason));
    }
    code
}

/// Refuses a connection as Pusher does: answers the upgrade, sends `pusher:error` with
/// `code` and `message`, and closes with `code`, which tells the client whether to retry.
pub(crate) fn refuse(app: &App, req: Parts, code: u16, message: String) {
    let on_upgrade = hyper::upgrade::on(Request::from_parts(req, ()));
    let wait = app.config().server.handshake_timeout;
    app.lifecycle().connections.spawn(async move {
        let Ok(Ok(upgraded)) = tokio::time::timeout(wait, on_upgrade).await else { return };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let error = pusher::error(Some(code), &message);
        let text = String::from_utf8_lossy(crate::protocol::frame::payload(&error)).into_owned();
        let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
            ws.send(Message::text(text)).await?;
            let reason = message.chars().take(100).collect::<String>();
            ws.close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() })).await?;
            while let Some(Ok(_)) = ws.next().await {}
            Ok::<_, tokio_tungstenite::tungstenite::Error>(())
        })
        .await;
    });
}
