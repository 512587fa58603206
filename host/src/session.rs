//! What every client transport (WebSocket, SSE) shares once a client is admitted: the
//! connection as the hub sees it, joining the client's own streams with `welcome` and the
//! replay, channel subscriptions with resume (asked by the client or by a backend), acks,
//! and leaving the hub when the connection ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;

use crate::admission::Admitted;
use crate::app::App;
use crate::auth::Identity;
use crate::backend::Broker;
use crate::backend::history::{Cursor, CursorMove, History, HistoryError, Start};
use crate::backend::interest::Ticket;
use crate::channel;
use crate::fanout::Kill;
use crate::hub::{Conn, Hub};
use crate::protocol::{self, Dialect, StreamState, close, code};
use crate::quota::Slots;
use crate::stream::{Position, Replay, Target};
use crate::tenant::Tenant;
use crate::webhook::{Kind, Notice};

/// Longest wait for the broker to subscribe a connection's streams before replying anyway.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// Positions a connecting client resumes its streams from: its own (`user_since`,
/// `broadcast_since`) and the channels it subscribes at connect (`channels`).
#[derive(Debug, Default)]
pub(crate) struct Resume {
    pub user: Option<Position>,
    pub broadcast: Option<Position>,
    pub channels: Vec<(String, Option<Position>)>,
    /// The `channels` get delta updates (`delta=fossil`, WebSocket only).
    pub delta: bool,
}

/// What an accepted handshake hands to its connection task.
pub(crate) struct Joining {
    pub(crate) tenant: Arc<Tenant>,
    pub(crate) identity: Identity,
    pub(crate) attributes: Vec<(String, String)>,
    pub(crate) resume: Resume,
    /// The connection's slot under `server.max_connections`, freed when the task ends.
    pub(crate) admitted: Admitted,
    /// Its place in the tenant's connection counts, freed likewise.
    pub(crate) quota: Slots,
    pub(crate) peer: SocketAddr,
}

/// The hub's view of a joining client; `deflate`: it negotiated permessage-deflate. An
/// anonymous client (a Pusher connection) has an empty `user`: it has no user stream and no
/// presence.
pub(crate) fn conn(
    hub: &Hub,
    tenant: Arc<Tenant>,
    user: &str,
    attributes: Vec<(String, String)>,
    (deflate, dialect): (bool, Dialect),
) -> Arc<Conn> {
    Arc::new(Conn {
        id: hub.next_conn_id(),
        segment: tenant.segments.intern(attributes),
        tenant,
        user: user.into(),
        outbox: Default::default(),
        gates: Default::default(),
        subscriptions: Default::default(),
        deflate,
        dialect,
    })
}

/// Joins the connection to its own streams and queues `welcome` and their replay, then
/// subscribes the channels it asked for at connect, each resumed. Counts the connection
/// and its presence until [`leave`].
pub(crate) async fn join(conn: &Arc<Conn>, identity: &Identity, resume: Resume, app: &App) {
    join_own(conn, &resume, identity.expires_at, app).await;
    let grants = grants(identity, &conn.tenant);
    for (channel, since) in resume.channels {
        let action = subscribe(conn, app, Some(grants), channel, since, resume.delta);
        act(action, conn, app).await;
    }
}

/// Joins the connection to its own streams (user, broadcast) and queues `welcome`, then the
/// replay of what the client missed; live events follow them, with nothing in between.
async fn join_own(conn: &Arc<Conn>, resume: &Resume, expires_at: Option<u64>, app: &App) {
    let tenant = &conn.tenant;
    let c = &app.config().connections;
    let welcome = |streams: Option<[StreamState<'_>; 2]>| {
        protocol::welcome(&protocol::Welcome {
            conn_id: conn.id,
            user: &conn.user,
            tenant: &tenant.id,
            heartbeat_interval_ms: c.heartbeat_interval.as_millis(),
            idle_timeout_ms: c.idle_timeout.as_millis(),
            streams,
            acks: tenant.config.history.acks,
            attributes: &conn.segment,
            expires_at,
        })
    };
    let own_streams = [Target::User(&conn.user), Target::Broadcast];
    let history = history(app, tenant);
    if history.is_some() {
        // Live events wait until `welcome` and the replay are queued.
        own_streams.iter().for_each(|s| conn.gates.close(*s));
    }
    app.hub().register(conn);
    let ticket = app.pipeline().broker.interest(tenant, &own_streams, 1);
    // `welcome` promises that events published from now on arrive.
    sync_interest(&*app.pipeline().broker, ticket).await;
    match history {
        Some(h) => {
            let unacked = tenant.config.history.acks;
            let (user, broadcast) = tokio::join!(
                read(h, tenant, own_streams[0], Start { since: resume.user.as_ref(), unacked }),
                read(h, tenant, Target::Broadcast, Start { since: resume.broadcast.as_ref(), unacked: false }),
            );
            if unreadable(resume.user.as_ref(), &user) || unreadable(resume.broadcast.as_ref(), &broadcast) {
                // A welcome would tell the client that what it missed is gone; it is only
                // out of reach for now.
                conn.outbox.push_control(protocol::reconnect(conn.id, c.reconnect_spread, "history unavailable"));
                conn.outbox.kill(Kill::Retry);
            } else {
                conn.outbox.push_control(welcome(Some([(&user).into(), (&broadcast).into()])));
                app.hub().resume(conn, own_streams[0], &user);
                app.hub().resume(conn, Target::Broadcast, &broadcast);
            }
        }
        None => conn.outbox.push_control(welcome(None)),
    }
    app.presence().connected(tenant, &conn.user);
    tenant.metrics.connections.fetch_add(1, Relaxed);
}

/// The streams a connection is in from its start: its user's (unless it is anonymous) and
/// the broadcast.
fn own_streams(conn: &Conn) -> [Option<Target<'_>>; 2] {
    [(!conn.user.is_empty()).then_some(Target::User(&conn.user)), Some(Target::Broadcast)]
}

/// Joins an anonymous connection to the broadcast and queues `first`, its first frame.
pub(crate) async fn join_anonymous(conn: &Arc<Conn>, first: Bytes, app: &App) {
    app.hub().register(conn);
    let ticket = app.pipeline().broker.interest(&conn.tenant, &[Target::Broadcast], 1);
    sync_interest(&*app.pipeline().broker, ticket).await;
    conn.outbox.push_control(first);
    conn.tenant.metrics.connections.fetch_add(1, Relaxed);
}

/// Removes an ended connection from the hub, the broker's interest and presence.
pub(crate) fn leave(conn: &Conn, app: &App) {
    let tenant = &conn.tenant;
    let subscriptions = std::mem::take(&mut *conn.subscriptions.lock().expect("subscriptions lock"));
    app.hub().unregister(conn, subscriptions.iter().map(|s| &**s));
    app.hub().forget_conn(conn.id);
    subscriptions.iter().for_each(|channel| subscription_changed(app, conn, channel, Kind::SubscriptionRemoved));
    if !conn.user.is_empty() {
        app.presence().disconnected(tenant, &conn.user);
    }
    let channels = subscriptions.iter().map(|s| Target::Channel(s));
    let streams: Vec<Target<'_>> = own_streams(conn).into_iter().flatten().chain(channels).collect();
    app.pipeline().broker.interest(tenant, &streams, -1);
    tenant.metrics.connections.fetch_sub(1, Relaxed);
}

/// The close code and reason of a connection whose outbox was killed.
pub(crate) fn killed(conn: &Conn) -> Option<(u16, &'static str)> {
    Some(match conn.outbox.killed()? {
        Kill::SlowClient => (close::SLOW_CLIENT, "send queue overflow; reconnect and resume"),
        Kill::Resync => (close::SERVICE_RESTART, "events may have been missed; reconnect and resume"),
        Kill::Retry => (close::TRY_AGAIN_LATER, "history unavailable; reconnect and resume later"),
        Kill::TenantDeleted => (close::TENANT_DELETED, "the tenant was deleted"),
        Kill::Disconnected => (close::DISCONNECTED, "disconnected by the server"),
        Kill::Drain => (close::GOING_AWAY, "server shutting down; reconnect and resume"),
    })
}

/// Whether the connection is to close because the node is shutting down: it then flushes
/// for up to `server.shutdown_grace` rather than the short close bound.
pub(crate) fn draining(conn: &Conn) -> bool {
    conn.outbox.killed() == Some(Kill::Drain)
}

/// Tells a connection that joined after the node began to drain (the hub's `drain` told
/// those it held then). Call once the connection is in the hub: the drain signal is set
/// before the hub is walked, so each connection is told by one or the other (or both: a
/// connection already closing takes nothing more).
pub(crate) fn drain_if_draining(conn: &Conn, app: &App) {
    if app.lifecycle().drain.is_draining() {
        crate::hub::tell_drain(conn, app.config().connections.reconnect_spread);
    }
}

/// The history store, when the tenant keeps history.
fn history<'a>(app: &'a App, tenant: &Tenant) -> Option<&'a dyn History> {
    tenant.config.history.enabled().then_some(app.history())
}

/// Reads a stream's history; a store that cannot be read gives an empty, unrecovered replay.
async fn read(h: &dyn History, tenant: &Tenant, target: Target<'_>, start: Start<'_>) -> Replay {
    let m = &tenant.metrics;
    m.history_reads.fetch_add(1, Relaxed);
    let replay = h.read(tenant, target, start).await.unwrap_or_else(|e| {
        m.history_errors.fetch_add(1, Relaxed);
        tracing::warn!(tenant = %tenant.id, error = %e, "history unavailable for a resuming connection");
        Replay::unavailable()
    });
    m.history_replayed.fetch_add(replay.events.len() as u64, Relaxed);
    if !replay.recovered {
        m.history_unrecovered.fetch_add(1, Relaxed);
    }
    replay
}

/// Whether a stream the client resumes from `since` could not be read from the store.
fn unreadable(since: Option<&Position>, replay: &Replay) -> bool {
    since.is_some() && replay.position.is_none()
}

/// Waits (bounded) until the broker carries the streams behind `ticket` to this node.
pub(crate) async fn sync_interest(broker: &dyn Broker, ticket: Option<Ticket>) {
    if let Some(ticket) = ticket {
        let _ = tokio::time::timeout(SYNC_TIMEOUT, broker.synced(ticket)).await;
    }
}

/// What a client request (or a backend's) asks of a connection, once its synchronous part
/// (hub, gates, interest) is done.
pub(crate) enum Action {
    Reply(Bytes),
    /// Reply once the interest change behind the ticket (a new subscription) is in effect.
    AfterSync(Bytes, Option<Ticket>),
    /// Resume a newly subscribed channel (its gate is closed) once the broker carries it.
    Resume {
        channel: String,
        since: Option<Position>,
        ticket: Option<Ticket>,
    },
    Ack(Position),
    /// Fresh credentials (`refresh`), for the connection's own task to check and take.
    Refresh(String),
    /// A subscription with a subscription token, for the connection's own task to check.
    SubscribeWithToken {
        token: String,
        channel: String,
        since: Option<Position>,
        delta: bool,
    },
    /// Nothing to reply.
    Done,
}

/// Carries out an [`Action`]; the awaits (broker sync, history) happen here.
pub(crate) async fn act(action: Action, conn: &Arc<Conn>, app: &App) {
    let tenant = &conn.tenant;
    let reply = match action {
        Action::Done => return,
        Action::Refresh(_) => protocol::error(code::REFRESH_REFUSED, "this connection cannot refresh", None),
        Action::SubscribeWithToken { channel, .. } => {
            protocol::error(code::FORBIDDEN_CHANNEL, "this connection cannot use subscription tokens", Some(&channel))
        }
        Action::Reply(reply) => reply,
        Action::AfterSync(reply, ticket) => {
            sync_interest(&*app.pipeline().broker, ticket).await;
            reply
        }
        Action::Resume { channel, since, ticket } => {
            sync_interest(&*app.pipeline().broker, ticket).await;
            let target = Target::Channel(&channel);
            let replay = read(app.history(), tenant, target, Start { since: since.as_ref(), unacked: false }).await;
            conn.outbox.push_control(protocol::subscribed(&channel, Some((&replay).into())));
            app.hub().resume(conn, target, &replay);
            return;
        }
        // Config validation makes acks imply history.
        Action::Ack(_) if !tenant.config.history.acks => {
            protocol::error(code::ACKS_DISABLED, "this tenant keeps no read cursors (history.acks is off)", None)
        }
        Action::Ack(position) => match app.history().ack(tenant, &conn.user, &position).await {
            Ok(change) => {
                let cursor = acked(app, tenant, &conn.user, change);
                protocol::acked(&cursor.epoch, cursor.acked, cursor.unread())
            }
            Err(e @ HistoryError::StalePosition(..)) => protocol::error(code::STALE_POSITION, &e.to_string(), None),
            Err(e) => {
                tenant.metrics.history_errors.fetch_add(1, Relaxed);
                protocol::error(code::HISTORY_UNAVAILABLE, &e.to_string(), None)
            }
        },
    };
    conn.outbox.push_control(reply);
}

/// Tells presence (channel occupancy) and the tenant's webhooks that `conn` subscribed to
/// `channel` or left it (`kind`).
fn subscription_changed(app: &App, conn: &Conn, channel: &str, kind: Kind) {
    let tenant = &conn.tenant;
    match kind {
        Kind::SubscriptionAdded => app.presence().subscribed(tenant, channel),
        _ => app.presence().unsubscribed(tenant, channel),
    }
    if app.webhooks().wants(&tenant.id, kind.bit()) {
        let data = serde_json::json!({"user": conn.user, "channel": channel, "connection": conn.id});
        app.webhooks().emit(&tenant.id, Notice::new(kind, data));
    }
}

/// Counts an ack (over WebSocket or SSE) and, when it moved the user's read cursor, tells
/// the tenant's webhooks (`event.acked`); the cursor after it.
pub(crate) fn acked(app: &App, tenant: &Arc<Tenant>, user: &str, change: CursorMove) -> Cursor {
    tenant.metrics.acks.fetch_add(1, Relaxed);
    let cursor = change.cursor;
    if change.moved {
        let data = serde_json::json!({"user": user, "stream": "user", "epoch": cursor.epoch, "offset": cursor.acked,
                                      "unread": cursor.unread()});
        app.webhooks().emit(&tenant.id, Notice::new(Kind::EventAcked, data));
        if crate::push::Pusher::configured(tenant) {
            let (push, tenant) = (app.pipeline().push.clone(), tenant.clone());
            let (user, epoch) = (user.to_owned(), cursor.epoch.clone());
            let acked = cursor.acked;
            tokio::spawn(async move { push.withdraw_read(&tenant, &user, &epoch, acked).await });
        }
    }
    cursor
}

/// Why a channel cannot be subscribed: the `error` frame code and message.
pub(crate) fn refuse_channel(
    app: &App,
    conn_tenant: &Tenant,
    grants: Option<&[String]>,
    name: &str,
    subscribed: usize,
) -> Option<(&'static str, &'static str)> {
    if !channel::valid_name(name) {
        Some((code::INVALID_CHANNEL, "channel names are 1-128 characters of A-Z a-z 0-9 _ - . : @"))
    } else if grants.is_some_and(|patterns| !channel::allowed(patterns, name)) {
        Some((code::FORBIDDEN_CHANNEL, "your credentials do not grant this channel"))
    } else if subscribed >= max_subscriptions(app, conn_tenant) {
        Some((code::TOO_MANY_SUBSCRIPTIONS, "subscription limit reached"))
    } else {
        None
    }
}

/// The channel patterns `identity` may subscribe to.
pub(crate) fn grants<'a>(identity: &'a Identity, tenant: &'a Tenant) -> &'a [String] {
    identity.channels.as_deref().unwrap_or(&tenant.config.default_channels)
}

/// Subscribes `conn` to `name` (resuming after `since` when the tenant keeps history), with
/// delta updates if `delta`.
/// `grants` are the patterns the client's credentials allow; a backend's request has none
/// to check.
pub(crate) fn subscribe(
    conn: &Arc<Conn>,
    app: &App,
    grants: Option<&[String]>,
    name: String,
    since: Option<Position>,
    delta: bool,
) -> Action {
    let resume = history(app, &conn.tenant).is_some();
    match add_subscription(conn, app, Checked::Grants(grants), &name, delta, resume) {
        Err((code, message)) => Action::Reply(protocol::error(code, message, Some(&name))),
        Ok(None) => Action::Reply(protocol::subscribed(&name, None)),
        Ok(Some(ticket)) if resume => Action::Resume { since, channel: name, ticket },
        Ok(Some(ticket)) => Action::AfterSync(protocol::subscribed(&name, None), ticket),
    }
}

/// How a subscription is checked: against the channel name rules and `Grants` (the
/// patterns the credentials allow; `None`: a backend's request, with none to check), or
/// not at all (`Host`: a stream the host itself puts the connection in, under a name of its
/// own, such as a Pusher connection's signed-in user's).
#[derive(Clone, Copy)]
pub(crate) enum Checked<'a> {
    Grants(Option<&'a [String]>),
    Host,
}

/// Adds `name` to `conn`'s subscriptions in the hub, the broker and presence, its gate
/// closed for a resume if `resume`; the interest ticket to wait on, `None` if it was
/// subscribed already, or why it cannot be (an `error` frame's code and message).
pub(crate) fn add_subscription(
    conn: &Arc<Conn>,
    app: &App,
    checked: Checked<'_>,
    name: &str,
    delta: bool,
    resume: bool,
) -> Result<Option<Option<Ticket>>, (&'static str, &'static str)> {
    // Held while the hub and the broker learn of the subscription, so a concurrent
    // unsubscribe (client or backend) sees it whole.
    let mut subscriptions = conn.subscriptions.lock().expect("subscriptions lock");
    if subscriptions.iter().any(|s| **s == *name) {
        return Ok(None);
    }
    if let Checked::Grants(grants) = checked
        && let Some(refusal) = refuse_channel(app, &conn.tenant, grants, name, subscriptions.len())
    {
        return Err(refusal);
    }
    subscriptions.push(name.into());
    let target = Target::Channel(name);
    if resume {
        conn.gates.close(target);
    }
    app.hub().subscribe(conn, name, delta);
    subscription_changed(app, conn, name, Kind::SubscriptionAdded);
    Ok(Some(app.pipeline().broker.interest(&conn.tenant, &[target], 1)))
}

/// Unsubscribes `conn` from `name`; the `unsubscribed` reply.
pub(crate) fn unsubscribe(conn: &Conn, app: &App, name: &str) -> Bytes {
    remove_subscription(conn, app, name);
    protocol::unsubscribed(name)
}

/// Removes `name` from `conn`'s subscriptions in the hub, the broker and presence; false if
/// it was not subscribed.
pub(crate) fn remove_subscription(conn: &Conn, app: &App, name: &str) -> bool {
    let mut subscriptions = conn.subscriptions.lock().expect("subscriptions lock");
    let Some(i) = subscriptions.iter().position(|s| **s == *name) else { return false };
    subscriptions.swap_remove(i);
    app.hub().unsubscribe(conn, name);
    subscription_changed(app, conn, name, Kind::SubscriptionRemoved);
    conn.gates.remove(Target::Channel(name));
    app.pipeline().broker.interest(&conn.tenant, &[Target::Channel(name)], -1);
    true
}

/// The tenant's subscription quota per connection, or the node's.
pub(crate) fn max_subscriptions(app: &App, tenant: &Tenant) -> usize {
    match tenant.quota.limits().max_subscriptions {
        0 => app.config().connections.max_subscriptions,
        n => n,
    }
}
