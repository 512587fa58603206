//! The connection loop: one task per connection that reads client frames, writes queued
//! frames, sends heartbeats, enforces the idle timeout and credential expiry, and drains on
//! shutdown.
//!
//! Lifecycle: the handshake and authentication happen in `api::websocket`; this loop serves
//! the established connection until it ends (`End`): the host drains (flush for up to
//! `shutdown_grace`, then 1001), the host closes it with a code below, or the client is gone.
//! The hub then forgets the connection.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::sleep_until;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};

use crate::app::App;
use crate::auth::Identity;
use crate::backend::history::{History, HistoryError, Start};
use crate::backend::interest::Ticket;
use crate::channel;
use crate::config::ConnectionConfig;
use crate::fanout::Kill;
use crate::hub::Conn;
use crate::protocol::{self, ClientFrame, StreamState, close, code};
use crate::stream::{Position, Replay, Target};
use crate::tenant::Tenant;

/// Longest wait for the broker to subscribe a connection's streams before replying anyway.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a closing connection may take to flush its last frames and the close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the loop ended.
enum End {
    /// The host is draining: flush for up to `shutdown_grace`, then close with 1001.
    Drain,
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The client closed or the socket failed; nothing more can be sent.
    Gone,
}

/// Positions a connecting client resumes its own streams from (`user_since`,
/// `broadcast_since`).
#[derive(Debug, Default)]
pub(crate) struct Resume {
    pub user: Option<Position>,
    pub broadcast: Option<Position>,
}

/// Runs an established connection until it closes.
pub(crate) async fn run(
    mut ws: WebSocketStream<TcpStream>,
    conn: Arc<Conn>,
    identity: Identity,
    resume: Resume,
    app: &Arc<App>,
) {
    let tenant = conn.tenant.clone();
    let c = &app.config.connections;
    // Boxed: joining runs once, and its state must not stay in every idle connection's task.
    Box::pin(join(&conn, resume, app)).await;
    let own_streams = [Target::User(&conn.user), Target::Broadcast];
    app.presence.connected(&tenant, &conn.user);
    tenant.metrics.connections.fetch_add(1, Relaxed);
    let mut subscriptions: Vec<Box<str>> = Vec::new();
    let end = established(&mut ws, &conn, &identity, app, &mut subscriptions).await;
    app.hub.unregister(&conn, subscriptions.iter().map(|s| &**s));
    app.presence.disconnected(&tenant, &conn.user);
    let channels = subscriptions.iter().map(|s| Target::Channel(s));
    app.broker.interest(&tenant, &own_streams.into_iter().chain(channels).collect::<Vec<_>>(), -1);
    tenant.metrics.connections.fetch_sub(1, Relaxed);

    // A draining host lets queues flush for up to the grace period; any other close gets a
    // short bound. The close handshake itself is always short.
    let (end, flush_bound) = match end {
        End::Drain => (
            End::Close(close::GOING_AWAY, "server shutting down; reconnect and resume"),
            app.config.server.shutdown_grace,
        ),
        other => (other, CLOSE_TIMEOUT),
    };
    match end {
        End::Close(code, reason) => {
            let flushed = tokio::time::timeout(flush_bound, flush(&mut ws, &conn, c.write_timeout, true)).await;
            if matches!(flushed, Ok(Ok(()))) {
                let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    let _ = ws.close(Some(frame)).await;
                    // Wait for the client's close reply so the close is clean on both sides.
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
            }
        }
        End::Gone | End::Drain => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
        }
    }
    tracing::trace!(conn = conn.id, "connection closed");
}

/// Joins the connection to its own streams (user, broadcast) and queues `welcome`, then the
/// replay of what the client missed; live events follow them, with nothing in between.
async fn join(conn: &Arc<Conn>, resume: Resume, app: &App) {
    let tenant = &conn.tenant;
    let c = &app.config.connections;
    let welcome = |streams: Option<[StreamState<'_>; 2]>| {
        protocol::welcome(&protocol::Welcome {
            conn_id: conn.id,
            user: &conn.user,
            tenant: &tenant.id,
            heartbeat_interval_ms: c.heartbeat_interval.as_millis(),
            idle_timeout_ms: c.idle_timeout.as_millis(),
            streams,
            acks: tenant.config.history.acks,
        })
    };
    let own_streams = [Target::User(&conn.user), Target::Broadcast];
    let history = history(app, tenant);
    if history.is_some() {
        // Live events wait until `welcome` and the replay are queued.
        own_streams.iter().for_each(|s| conn.gates.close(*s));
    }
    app.hub.register(conn);
    let ticket = app.broker.interest(tenant, &own_streams, 1);
    // `welcome` promises that events published from now on arrive.
    sync_interest(app, ticket).await;
    match history {
        Some(h) => {
            let unacked = tenant.config.history.acks;
            let (user, broadcast) = tokio::join!(
                read(h, tenant, own_streams[0], Start { since: resume.user.as_ref(), unacked }),
                read(h, tenant, Target::Broadcast, Start { since: resume.broadcast.as_ref(), unacked: false }),
            );
            conn.outbox.push_control(welcome(Some([(&user).into(), (&broadcast).into()])));
            app.hub.resume(conn, own_streams[0], &user);
            app.hub.resume(conn, Target::Broadcast, &broadcast);
        }
        None => conn.outbox.push_control(welcome(None)),
    }
}

async fn established(
    ws: &mut WebSocketStream<TcpStream>,
    conn: &Arc<Conn>,
    identity: &Identity,
    app: &Arc<App>,
    subscriptions: &mut Vec<Box<str>>,
) -> End {
    let c = &app.config.connections;
    let mut clock = Clock::start(c, identity.expires_at.map(unix_to_instant));
    let timer = sleep_until(clock.deadline(c).into());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            () = app.drain.started() => {
                conn.outbox.push_control(protocol::reconnect(conn.id, c.reconnect_spread, "server shutting down"));
                break End::Drain;
            }
            () = conn.outbox.wait() => {
                if let Err(end) = flush(ws, conn, c.write_timeout, false).await {
                    break end;
                }
                if let Some(end) = killed(conn) {
                    break end;
                }
            }
            msg = ws.next() => {
                clock.last_seen = Instant::now();
                match received(msg, conn) {
                    Received::Text(text) => {
                        let action = on_text(&text, conn, identity, app, subscriptions);
                        // Boxed: the rare frame handler must not grow every idle connection's task.
                        Box::pin(act(action, conn, app)).await;
                    }
                    Received::Nothing => {}
                    Received::End(end) => break end,
                }
            }
            () = &mut timer => {
                if let Err(end) = clock.tick(conn, c) {
                    break end;
                }
                timer.as_mut().reset(clock.deadline(c).into());
            }
        }
    }
}

/// The connection's timers: when the client was last heard from, the next heartbeat ping,
/// and when its credentials expire.
struct Clock {
    last_seen: Instant,
    next_ping: Instant,
    expires: Option<Instant>,
}

impl Clock {
    fn start(c: &ConnectionConfig, expires: Option<Instant>) -> Self {
        let now = Instant::now();
        Self { last_seen: now, next_ping: now + c.heartbeat_interval, expires }
    }

    /// The next instant something is due: a ping, the idle timeout or the expiry.
    fn deadline(&self, c: &ConnectionConfig) -> Instant {
        let d = self.next_ping.min(self.last_seen + c.idle_timeout);
        self.expires.map_or(d, |e| d.min(e))
    }

    /// Closes an idle or expired connection, or sends the heartbeat ping when it is due.
    fn tick(&mut self, conn: &Conn, c: &ConnectionConfig) -> Result<(), End> {
        let now = Instant::now();
        if now >= self.last_seen + c.idle_timeout {
            return Err(End::Close(close::IDLE_TIMEOUT, "idle timeout: no pong or frame received"));
        }
        if self.expires.is_some_and(|e| now >= e) {
            return Err(End::Close(close::CREDENTIALS_EXPIRED, "credentials expired; reconnect with fresh ones"));
        }
        if now >= self.next_ping {
            conn.gates.forget_floors();
            conn.outbox.push_control(protocol::frame::ping());
            self.next_ping = now + c.heartbeat_interval;
        }
        Ok(())
    }
}

/// How a connection whose outbox was killed closes.
fn killed(conn: &Conn) -> Option<End> {
    Some(match conn.outbox.killed()? {
        Kill::SlowClient => End::Close(close::SLOW_CLIENT, "send queue overflow; reconnect and resume"),
        Kill::Resync => End::Close(close::SERVICE_RESTART, "events may have been missed; reconnect and resume"),
        Kill::TenantDeleted => End::Close(close::TENANT_DELETED, "the tenant was deleted"),
        Kill::Disconnected => End::Close(close::DISCONNECTED, "disconnected by the server"),
    })
}

/// What a read from the client amounts to.
enum Received {
    Text(tokio_tungstenite::tungstenite::Utf8Bytes),
    Nothing,
    End(End),
}

/// Sorts what the socket gave: a text frame to handle, nothing to do (control frames, a
/// refused binary frame), or the end of the connection.
fn received(msg: Option<Result<Message, WsError>>, conn: &Conn) -> Received {
    let end = match msg {
        Some(Ok(Message::Text(text))) => return Received::Text(text),
        Some(Ok(Message::Binary(_))) => {
            let reply = protocol::error(code::BAD_FRAME, "binary frames are not supported; send JSON text", None);
            conn.outbox.push_control(reply);
            return Received::Nothing;
        }
        None | Some(Ok(Message::Close(_))) => End::Gone,
        Some(Ok(_)) => return Received::Nothing,
        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
            End::Close(close::MESSAGE_TOO_BIG, "message too big")
        }
        Some(Err(WsError::Utf8(_))) => End::Close(close::INVALID_PAYLOAD, "invalid UTF-8"),
        Some(Err(WsError::Protocol(_))) => End::Close(close::PROTOCOL_ERROR, "protocol error"),
        Some(Err(_)) => End::Gone,
    };
    Received::End(end)
}

/// The history store, when the tenant keeps history.
fn history<'a>(app: &'a App, tenant: &Tenant) -> Option<&'a dyn History> {
    tenant.config.history.enabled().then_some(&*app.history)
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

/// Waits (bounded) until the broker carries the streams behind `ticket` to this node.
async fn sync_interest(app: &App, ticket: Option<Ticket>) {
    if let Some(ticket) = ticket {
        let _ = tokio::time::timeout(SYNC_TIMEOUT, app.broker.synced(ticket)).await;
    }
}

/// What a client frame asks for.
enum Action {
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
}

/// Carries out what `on_text` decided; the awaits (broker sync, history) happen here.
async fn act(action: Action, conn: &Arc<Conn>, app: &App) {
    let tenant = &conn.tenant;
    let reply = match action {
        Action::Reply(reply) => reply,
        Action::AfterSync(reply, ticket) => {
            sync_interest(app, ticket).await;
            reply
        }
        Action::Resume { channel, since, ticket } => {
            sync_interest(app, ticket).await;
            let target = Target::Channel(&channel);
            let replay = read(&*app.history, tenant, target, Start { since: since.as_ref(), unacked: false }).await;
            conn.outbox.push_control(protocol::subscribed(&channel, Some((&replay).into())));
            app.hub.resume(conn, target, &replay);
            return;
        }
        // Config validation makes acks imply history.
        Action::Ack(_) if !tenant.config.history.acks => {
            protocol::error(code::ACKS_DISABLED, "this tenant keeps no read cursors (history.acks is off)", None)
        }
        Action::Ack(position) => match app.history.ack(tenant, &conn.user, &position).await {
            Ok(cursor) => {
                tenant.metrics.acks.fetch_add(1, Relaxed);
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

/// Handles a client frame: checks it and makes the synchronous changes (hub, gates,
/// interest); `act` does the rest.
fn on_text(text: &str, conn: &Arc<Conn>, identity: &Identity, app: &App, subscriptions: &mut Vec<Box<str>>) -> Action {
    let reply = match protocol::parse(text) {
        Err(e) => protocol::error(code::BAD_FRAME, &format!("invalid client frame: {e}"), None),
        Ok(ClientFrame::Ping) => protocol::pong(),
        Ok(ClientFrame::Ack { epoch, offset }) => return Action::Ack(Position { epoch, offset }),
        Ok(ClientFrame::Subscribe { channel: name, since }) => {
            let patterns = identity.channels.as_ref().unwrap_or(&conn.tenant.config.default_channels);
            if !channel::valid_name(&name) {
                protocol::error(
                    code::INVALID_CHANNEL,
                    "channel names are 1-128 characters of A-Z a-z 0-9 _ - . : @",
                    Some(&name),
                )
            } else if !channel::allowed(patterns, &name) {
                protocol::error(code::FORBIDDEN_CHANNEL, "your credentials do not grant this channel", Some(&name))
            } else if subscriptions.iter().any(|s| **s == *name) {
                protocol::subscribed(&name, None)
            } else if subscriptions.len() >= max_subscriptions(app, &conn.tenant) {
                protocol::error(code::TOO_MANY_SUBSCRIPTIONS, "subscription limit reached", Some(&name))
            } else {
                subscriptions.push(name.as_str().into());
                let target = Target::Channel(&name);
                let resume = history(app, &conn.tenant).is_some();
                if resume {
                    conn.gates.close(target);
                }
                app.hub.subscribe(conn, &name);
                let ticket = app.broker.interest(&conn.tenant, &[target], 1);
                if resume {
                    return Action::Resume { since: since.map(Position::from), channel: name, ticket };
                }
                return Action::AfterSync(protocol::subscribed(&name, None), ticket);
            }
        }
        Ok(ClientFrame::Unsubscribe { channel: name }) => {
            if let Some(i) = subscriptions.iter().position(|s| **s == *name) {
                subscriptions.swap_remove(i);
                app.hub.unsubscribe(conn, &name);
                conn.gates.remove(Target::Channel(&name));
                app.broker.interest(&conn.tenant, &[Target::Channel(&name)], -1);
            }
            protocol::unsubscribed(&name)
        }
    };
    Action::Reply(reply)
}

/// The tenant's subscription quota per connection, or the node's.
fn max_subscriptions(app: &App, tenant: &Tenant) -> usize {
    match tenant.quota.limits().max_subscriptions {
        0 => app.config.connections.max_subscriptions,
        n => n,
    }
}

/// Writes everything queued (after a kill: only the rest of a partly written frame). Returns
/// once that is done and never leaves a frame partly written, because tungstenite may write a
/// pong or close frame next. A socket that accepts nothing for `stall` is a slow client.
/// After a kill, only a `finishing` (closing) connection keeps writing; the loop returns at once.
async fn flush(ws: &mut WebSocketStream<TcpStream>, conn: &Conn, stall: Duration, finishing: bool) -> Result<(), End> {
    // Anything tungstenite queued itself (a pong, a close reply) goes out first.
    ws.flush().await.map_err(|_| End::Gone)?;
    let metrics = &conn.tenant.metrics;
    loop {
        let written = conn.outbox.write_to(ws.get_ref()).map_err(|_| End::Gone)?;
        metrics.frames_delivered.fetch_add(written.frames as u64, Relaxed);
        if written.drained || (conn.outbox.killed().is_some() && !finishing) {
            return Ok(());
        }
        tokio::select! {
            ready = ws.get_ref().writable() => ready.map_err(|_| End::Gone)?,
            () = conn.outbox.wait() => {}
            () = tokio::time::sleep(stall) => {
                return Err(End::Close(close::SLOW_CLIENT, "write stalled; reconnect and resume"));
            }
        }
    }
}

fn unix_to_instant(secs: u64) -> Instant {
    let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let target = Duration::from_secs(secs);
    let now = Instant::now();
    match target.checked_sub(now_unix) {
        Some(ahead) => now + ahead,
        None => now,
    }
}
