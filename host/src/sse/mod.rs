//! Server-Sent Events transport: one task per SSE connection that turns the frames the hub
//! queued into SSE events (`encode`) and hands them to hyper as the chunks of a streaming
//! response body.
//!
//! The task joins the client's streams and its `?channels=` exactly as a WebSocket
//! connection does (`session`), so the hub, history, quotas and plugins see one kind of
//! connection. SSE is one-way: the client cannot ping, so there is no idle timeout; comment
//! lines every `heartbeat_interval` keep proxies from timing the stream out, and a client
//! that stops reading fills the one-chunk hand-off to hyper and is closed as a slow client
//! after `write_timeout`. Before the stream ends the host sends a `close` event carrying the
//! close code a WebSocket client would get.

mod encode;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::sleep_until;

pub(crate) use encode::{Cursor, Stream};

use crate::app::App;
use crate::auth::Identity;
use crate::hub::Conn;
use crate::protocol::{self, close};
use crate::session::{self, Joining, Resume};

/// How long a closing stream may take to hand over its last events.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the loop ended.
enum End {
    Drain,
    Close(u16, &'static str),
    /// The client went away (hyper dropped the body).
    Gone,
}

/// Starts the connection task; returns the response body it feeds. `cursor` holds the
/// positions the client resumes from, the same as `joining.resume`.
pub(crate) fn spawn(app: &App, joining: Joining, cursor: Cursor) -> Body {
    let Joining { tenant, identity, attributes, resume, admitted, quota, peer: _ } = joining;
    // One chunk in flight: a client that stops reading stops the task's sends, and its
    // outbox (bounded by the send-queue limits) absorbs the rest.
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let conn = session::conn(app.hub(), tenant, &identity.user, attributes, (false, crate::protocol::Dialect::Native));
    let task_app = app.clone();
    app.lifecycle().connections.spawn(async move {
        let _slots = (admitted, quota);
        run(conn, identity, resume, cursor, tx, &task_app).await;
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    Body::from_stream(chunks)
}

/// Serves an SSE connection until it ends.
async fn run(conn: Arc<Conn>, identity: Identity, resume: Resume, cursor: Cursor, tx: mpsc::Sender<Bytes>, app: &App) {
    conn.tenant.metrics.handshakes.fetch_add(1, Relaxed);
    let mut writer = Writer { tx, cursor, frames: Vec::new(), stall: app.config().connections.write_timeout };
    Box::pin(session::join(&conn, &identity, resume, app)).await;
    let end = established(&mut writer, &conn, &identity, app).await;
    session::leave(&conn, app);
    let (code, reason, bound) = match end {
        End::Gone => return,
        End::Drain => {
            (close::GOING_AWAY, "server shutting down; reconnect and resume", app.config().server.shutdown_grace)
        }
        End::Close(code, reason) => (code, reason, CLOSE_TIMEOUT),
    };
    let _ = tokio::time::timeout(bound, async {
        writer.send(&conn).await?;
        let mut last = BytesMut::new();
        let frame = json!({ "type": "close", "code": code, "reason": reason });
        encode::data(&serde_json::to_vec(&frame).expect("JSON values serialise"), &mut last);
        writer.tx.send(last.freeze()).await.map_err(|_| End::Gone)
    })
    .await;
    tracing::trace!(conn = conn.id, "SSE connection closed");
}

async fn established(w: &mut Writer, conn: &Arc<Conn>, identity: &Identity, app: &App) -> End {
    let c = &app.config().connections;
    let mut expires = crate::refresh::deadline(identity, &conn.tenant);
    let mut next_ping = Instant::now() + c.heartbeat_interval;
    let deadline = |next_ping: Instant, expires: Option<Instant>| expires.map_or(next_ping, |e| e.min(next_ping));
    let timer = sleep_until(deadline(next_ping, expires).into());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            () = app.lifecycle().drain.started() => {
                conn.outbox.push_control(protocol::reconnect(conn.id, c.reconnect_spread, "server shutting down"));
                break End::Drain;
            }
            () = conn.outbox.wait() => {
                if let Err(end) = w.send(conn).await {
                    break end;
                }
                if let Some((code, reason)) = session::killed(conn) {
                    break End::Close(code, reason);
                }
                // A stream's grants are only read at connect, so of fresh credentials
                // (`POST .../refresh`) only the expiry matters here.
                if let Some(fresh) = app.hub().take_refreshed(conn.id) {
                    expires = crate::refresh::deadline(&fresh, &conn.tenant);
                    timer.as_mut().reset(deadline(next_ping, expires).into());
                }
            }
            () = w.tx.closed() => break End::Gone,
            () = &mut timer => {
                let now = Instant::now();
                if expires.is_some_and(|e| now >= e) {
                    break End::Close(close::CREDENTIALS_EXPIRED, "credentials expired; reconnect with fresh ones");
                }
                conn.gates.forget_floors();
                conn.outbox.push_control(protocol::frame::ping());
                next_ping = now + c.heartbeat_interval;
                timer.as_mut().reset(deadline(next_ping, expires).into());
            }
        }
    }
}

/// Re-frames queued frames as SSE and hands them to hyper.
struct Writer {
    tx: mpsc::Sender<Bytes>,
    cursor: Cursor,
    /// Reused between sends; emptied by each.
    frames: Vec<Bytes>,
    /// How long hyper may take to accept a chunk before the client counts as slow.
    stall: Duration,
}

impl Writer {
    /// Sends everything queued as one chunk.
    async fn send(&mut self, conn: &Conn) -> Result<(), End> {
        let n = conn.outbox.take_all(&mut self.frames);
        if n == 0 {
            return Ok(());
        }
        let mut chunk = BytesMut::with_capacity(self.frames.iter().map(|f| f.len() + 32).sum());
        for f in self.frames.drain(..) {
            encode::frame(&f, &mut self.cursor, &mut chunk);
        }
        if self.frames.capacity() > 64 {
            self.frames = Vec::new();
        }
        match tokio::time::timeout(self.stall, self.tx.send(chunk.freeze())).await {
            Ok(Ok(())) => {
                conn.tenant.metrics.frames_delivered.fetch_add(n as u64, Relaxed);
                Ok(())
            }
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Close(close::SLOW_CLIENT, "write stalled; reconnect and resume")),
        }
    }
}
