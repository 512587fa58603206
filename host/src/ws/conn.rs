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
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::time::sleep_until;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes, error::CapacityError};

use super::inflate::InflateError;
use super::socket::{Socket, Wire};
use crate::app::App;
use crate::auth::Identity;
use crate::config::ConnectionConfig;
use crate::hub::Conn;
use crate::protocol::{self, ClientFrame, Dialect, close, code};
use crate::refresh;
use crate::session::{self, Action};
use crate::stream::Position;

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

/// Runs a connection that has joined (`session::join`) until it closes.
pub(crate) async fn run<W: Wire>(
    mut ws: Box<WebSocketStream<Socket<W>>>,
    conn: &Arc<Conn>,
    identity: &mut Identity,
    app: &App,
) {
    let end = established(&mut ws, conn, identity, app).await;
    if conn.dialect == Dialect::Pusher {
        super::pusher::leave(conn, app);
    }
    session::leave(conn, app);
    // Boxed: the closing state exists only while a connection closes.
    Box::pin(close(ws, conn, end, app)).await;
    tracing::trace!(conn = conn.id, "connection closed");
}

/// Flushes what is queued and closes the socket the way `end` says.
async fn close<W: Wire>(ws: Box<WebSocketStream<Socket<W>>>, conn: &Conn, end: End, app: &App) {
    let mut ws = *ws;
    // A draining host lets queues flush for up to the grace period; any other close gets a
    // short bound. The close handshake itself is always short.
    let (end, flush_bound) = match end {
        End::Drain => (
            End::Close(close::GOING_AWAY, "server shutting down; reconnect and resume"),
            app.config().server.shutdown_grace,
        ),
        other => (other, CLOSE_TIMEOUT),
    };
    let stall = app.config().connections.write_timeout;
    let end = match end {
        End::Close(code, reason) if conn.dialect == Dialect::Pusher => {
            End::Close(super::pusher::closing(conn, code, reason), reason)
        }
        other => other,
    };
    match end {
        End::Close(code, reason) => {
            let flushed = tokio::time::timeout(flush_bound, flush(&mut ws, conn, stall, true)).await;
            if matches!(flushed, Ok(Ok(()))) {
                let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    // The close frame is queued in the outbox like everything else.
                    let _ = ws.close(Some(frame)).await;
                    if flush(&mut ws, conn, stall, true).await.is_ok() {
                        // Wait for the client's close reply so the close is clean on both sides.
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                })
                .await;
            }
        }
        End::Gone | End::Drain => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                let _ = ws.close(None).await;
                let _ = flush(&mut ws, conn, stall, true).await;
            })
            .await;
        }
    }
    conn.outbox.detach();
}

async fn established<W: Wire>(
    ws: &mut WebSocketStream<Socket<W>>,
    conn: &Arc<Conn>,
    identity: &mut Identity,
    app: &App,
) -> End {
    let c = &app.config().connections;
    let mut clock = Clock::start(c, refresh::deadline(identity, &conn.tenant));
    let timer = sleep_until(clock.deadline(c).into());
    tokio::pin!(timer);
    let mut client_events: super::pusher::ClientEvents = None;
    loop {
        tokio::select! {
            biased;
            () = conn.outbox.wait() => {
                if let Err(end) = flush(ws, conn, c.write_timeout, false).await {
                    break end;
                }
                if let Some(end) = killed(conn) {
                    break end;
                }
                if let Some(fresh) = app.hub().take_refreshed(conn.id) {
                    clock.adopt(identity, fresh, conn);
                    timer.as_mut().reset(clock.deadline(c).into());
                }
            }
            msg = ws.next() => {
                clock.last_seen = Instant::now();
                match received(msg, conn) {
                    Received::Text(text) => {
                        // Boxed: the rare frame handler must not grow every idle connection's task.
                        // Boxed, the frame moved in: this loop's state holds one pointer for it.
                        let fresh = Box::pin(text_frame(text, conn, identity, app, &mut client_events)).await;
                        if let Some(fresh) = fresh {
                            clock.adopt(identity, fresh, conn);
                            timer.as_mut().reset(clock.deadline(c).into());
                        }
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

    /// Takes refreshed credentials: their grants, and their expiry as the new deadline.
    fn adopt(&mut self, identity: &mut Identity, fresh: Identity, conn: &Conn) {
        self.expires = refresh::deadline(&fresh, &conn.tenant);
        // The hub's `Conn` holds the user id.
        *identity = Identity { user: String::new(), ..fresh };
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
    if session::draining(conn) {
        return Some(End::Drain);
    }
    session::killed(conn).map(|(code, reason)| End::Close(code, reason))
}

/// What a read from the client amounts to.
enum Received {
    Text(Utf8Bytes),
    Nothing,
    End(End),
}

/// Sorts what the socket gave: a text frame to handle, nothing to do (control frames, a
/// refused binary frame), or the end of the connection.
fn received(msg: Option<Result<Message, WsError>>, conn: &Conn) -> Received {
    let end = match msg {
        Some(Ok(Message::Text(text))) => return Received::Text(text),
        Some(Ok(Message::Binary(_))) => {
            let message = "binary frames are not supported; send JSON text";
            let reply = match conn.dialect {
                Dialect::Native => protocol::error(code::BAD_FRAME, message, None),
                Dialect::Pusher => protocol::pusher::error(None, message),
            };
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
        Some(Err(WsError::Io(e))) => match e.get_ref().and_then(|e| e.downcast_ref::<InflateError>()) {
            Some(InflateError::TooBig) => End::Close(close::MESSAGE_TOO_BIG, "message too big"),
            Some(InflateError::Corrupt) => End::Close(close::INVALID_PAYLOAD, "invalid compressed data"),
            Some(InflateError::Protocol(_)) => End::Close(close::PROTOCOL_ERROR, "protocol error"),
            None => End::Gone,
        },
        Some(Err(_)) => End::Gone,
    };
    Received::End(end)
}

/// Handles a text frame in the connection's protocol; fresh credentials the client sent.
async fn text_frame(
    text: Utf8Bytes,
    conn: &Arc<Conn>,
    identity: &Identity,
    app: &App,
    client_events: &mut super::pusher::ClientEvents,
) -> Option<Identity> {
    match conn.dialect {
        Dialect::Native => match on_text(&text, conn, identity, app) {
            Action::SubscribeWithToken { token, channel, since, delta } => {
                let action = match refresh::verify_channel(app, conn, &channel, &token).await {
                    Ok(()) => session::subscribe(conn, app, None, channel, since, delta),
                    Err(e) => Action::Reply(protocol::error(code::FORBIDDEN_CHANNEL, &e.to_string(), Some(&channel))),
                };
                session::act(action, conn, app).await;
            }
            Action::Refresh(token) => match refresh::verify(app, &conn.tenant, Some(&conn.user), &token).await {
                Ok(fresh) => {
                    refresh::apply(app, conn, &fresh);
                    return Some(fresh);
                }
                Err(e) => conn.outbox.push_control(protocol::error(code::REFRESH_REFUSED, &e.to_string(), None)),
            },
            action => session::act(action, conn, app).await,
        },
        Dialect::Pusher => super::pusher::on_text(text, conn, app, client_events).await,
    }
    None
}

/// Handles a client frame: checks it and makes the synchronous changes (hub, gates,
/// interest); `session::act` does the rest.
pub(crate) fn on_text(text: &str, conn: &Arc<Conn>, identity: &Identity, app: &App) -> Action {
    let reply = match protocol::parse(text) {
        Err(e) => protocol::error(code::BAD_FRAME, &format!("invalid client frame: {e}"), None),
        Ok(ClientFrame::Ping) => protocol::pong(),
        Ok(ClientFrame::Ack { epoch, offset }) => return Action::Ack(Position { epoch, offset }),
        Ok(ClientFrame::Subscribe { channel, since, delta, token }) => {
            let (since, delta) = (since.map(Position::from), delta.is_some());
            if let Some(token) = token {
                return Action::SubscribeWithToken { token, channel, since, delta };
            }
            let grants = session::grants(identity, &conn.tenant);
            return session::subscribe(conn, app, Some(grants), channel, since, delta);
        }
        Ok(ClientFrame::Unsubscribe { channel }) => session::unsubscribe(conn, app, &channel),
        Ok(ClientFrame::Refresh { token }) => return Action::Refresh(token),
    };
    Action::Reply(reply)
}

/// Writes everything queued (after a kill: only the rest of a partly written frame). A
/// socket that accepts nothing for `stall` is a slow client. After a kill, only a
/// `finishing` (closing) connection keeps writing; the loop returns at once.
///
/// The usual case, a socket that takes everything at once, completes without waiting; only
/// a full socket boxes the waiting state, so it does not weigh on every connection's task.
async fn flush<W: Wire>(
    ws: &mut WebSocketStream<Socket<W>>,
    conn: &Conn,
    stall: Duration,
    finishing: bool,
) -> Result<(), End> {
    // Moves anything tungstenite holds back (a pong) into the outbox. `Socket` accepts every
    // write at once, so this never waits.
    if let Some(Err(_)) = ws.flush().now_or_never() {
        return Err(End::Gone);
    }
    if write_queued(ws, conn, finishing)? {
        return Ok(());
    }
    Box::pin(flush_waiting(ws, conn, stall, finishing)).await
}

/// [`flush`] for a socket that does not take everything at once.
async fn flush_waiting<W: Wire>(
    ws: &WebSocketStream<Socket<W>>,
    conn: &Conn,
    stall: Duration,
    finishing: bool,
) -> Result<(), End> {
    while !write_queued(ws, conn, finishing)? {
        tokio::select! {
            ready = ws.get_ref().tcp().writable() => ready.map_err(|_| End::Gone)?,
            () = conn.outbox.wait() => {}
            () = tokio::time::sleep(stall) => {
                return Err(End::Close(close::SLOW_CLIENT, "write stalled; reconnect and resume"));
            }
        }
    }
    Ok(())
}

/// Writes what the socket takes now; true when there is nothing more to write.
fn write_queued<W: Wire>(ws: &WebSocketStream<Socket<W>>, conn: &Conn, finishing: bool) -> Result<bool, End> {
    let written = ws.get_ref().write_queued().map_err(|_| End::Gone)?;
    conn.tenant.metrics.frames_delivered.fetch_add(written.frames as u64, Relaxed);
    Ok(written.drained || (conn.outbox.killed().is_some() && !finishing))
}
