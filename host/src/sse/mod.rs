//! Server-Sent Events transport: one task per SSE connection, on the connection's socket
//! itself (taken from hyper, `takeover`), that writes the answer's head and then the frames
//! the hub queued as SSE events (`encode`).
//!
//! The task joins the client's streams and its `?channels=` exactly as a WebSocket
//! connection does (`session`), so the hub, history, quotas and plugins see one kind of
//! connection. SSE is one-way: the client cannot ping, so there is no idle timeout; comment
//! lines every `heartbeat_interval` keep proxies from timing the stream out, and a client
//! that stops reading, so that the socket takes nothing for `write_timeout`, is closed as a
//! slow client. The answer has no length and closes the connection when it ends: nothing
//! but the stream is served on it. Before the stream ends the host sends a `close` event
//! carrying the close code a WebSocket client would get.

mod encode;

use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep_until, timeout};

pub(crate) use encode::{Cursor, Stream};

use crate::app::App;
use crate::auth::Identity;
use crate::hub::Conn;
use crate::protocol::{self, close};
use crate::session::{self, Joining, Resume};
use crate::takeover::Io;

/// How long a closing stream may take to hand over its last events.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most pieces handed to one vectored write (a frame is up to four: its fields, `data: `,
/// the shared JSON, the blank line).
const MAX_IOVECS: usize = 256;

/// Why the loop ended.
enum End {
    Drain,
    Close(u16, &'static str),
    /// The client went away.
    Gone,
}

/// Starts the connection task on `io`, the socket taken from hyper, which first gets `head`
/// (the answer's status line and headers). `cursor` holds the positions the client resumes
/// from, the same as `joining.resume`.
pub(crate) fn spawn(app: &App, joining: Joining, cursor: Cursor, io: Io, head: Bytes) {
    let Joining { tenant, identity, attributes, resume, admitted, quota, peer: _ } = joining;
    let conn = session::conn(app.hub(), tenant, &identity.user, attributes, (false, crate::protocol::Dialect::Native));
    let stall = app.config().connections.write_timeout;
    let writer = Writer { io, cursor, frames: Vec::new(), stall };
    let task_app = app.clone();
    app.lifecycle().connections.spawn(async move {
        let _slots = (admitted, quota);
        run(conn, identity, resume, writer, head, &task_app).await;
    });
}

/// Serves an SSE connection until it ends.
async fn run(conn: Arc<Conn>, identity: Identity, resume: Resume, mut writer: Writer, head: Bytes, app: &App) {
    if writer.write(&[head]).await.is_err() {
        return;
    }
    conn.tenant.metrics.handshakes.fetch_add(1, Relaxed);
    Box::pin(session::join(&conn, &identity, resume, app)).await;
    session::drain_if_draining(&conn, app);
    let end = established(&mut writer, &conn, &identity, app).await;
    session::leave(&conn, app);
    let (code, reason, bound) = match end {
        End::Gone => return,
        End::Drain => {
            (close::GOING_AWAY, "server shutting down; reconnect and resume", app.config().server.shutdown_grace)
        }
        End::Close(code, reason) => (code, reason, CLOSE_TIMEOUT),
    };
    let _ = timeout(bound, async {
        writer.send(&conn).await?;
        let mut last = BytesMut::new();
        let frame = json!({ "type": "close", "code": code, "reason": reason });
        encode::data(&serde_json::to_vec(&frame).expect("JSON values serialise"), &mut last);
        writer.write(&[last.freeze()]).await?;
        writer.io.shutdown().await.map_err(|_| End::Gone)
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
            () = conn.outbox.wait() => {
                if let Err(end) = w.send(conn).await {
                    break end;
                }
                if session::draining(conn) {
                    break End::Drain;
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
            () = gone(&mut w.io) => break End::Gone,
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

/// Resolves once the client closed the connection. A stream's client sends nothing more
/// after its request; whatever it sends anyway is read and discarded.
async fn gone(io: &mut Io) {
    let mut discard = [0; 64];
    while let Ok(1..) = io.read(&mut discard).await {}
}

/// Writes queued frames to the socket as SSE.
struct Writer {
    io: Io,
    cursor: Cursor,
    /// Reused between sends; emptied by each.
    frames: Vec<Bytes>,
    /// How long the socket may take nothing before the client counts as slow.
    stall: Duration,
}

impl Writer {
    /// Writes everything queued.
    async fn send(&mut self, conn: &Conn) -> Result<(), End> {
        let n = conn.outbox.take_all(&mut self.frames);
        if n == 0 {
            return Ok(());
        }
        let (mut fields, mut pieces) = (BytesMut::new(), Vec::with_capacity(n * 4));
        for f in self.frames.drain(..) {
            encode::frame(&f, &mut self.cursor, &mut fields, &mut pieces);
        }
        if self.frames.capacity() > 64 {
            self.frames = Vec::new();
        }
        self.write(&pieces).await?;
        conn.tenant.metrics.frames_delivered.fetch_add(n as u64, Relaxed);
        Ok(())
    }

    /// Writes `pieces` in order in as few writes as the socket allows.
    async fn write(&mut self, pieces: &[Bytes]) -> Result<(), End> {
        let mut slices = Vec::with_capacity(pieces.len().min(MAX_IOVECS));
        let (mut next, mut into) = (0, 0);
        while next < pieces.len() {
            slices.clear();
            let rest = pieces[next..].iter().take(MAX_IOVECS).enumerate();
            slices.extend(rest.map(|(i, p)| IoSlice::new(if i == 0 { &p[into..] } else { p })));
            let mut n = stalls(self.stall, self.io.write_vectored(&slices)).await?;
            while next < pieces.len() && n >= pieces[next].len() - into {
                n -= pieces[next].len() - into;
                (next, into) = (next + 1, 0);
            }
            into += n;
        }
        stalls(self.stall, self.io.flush()).await
    }
}

/// Waits for a write; the client is slow if the socket takes nothing for `stall`.
async fn stalls<T: Progress>(stall: Duration, write: impl Future<Output = std::io::Result<T>>) -> Result<T, End> {
    match timeout(stall, write).await {
        Ok(Ok(done)) if done.made() => Ok(done),
        Ok(_) => Err(End::Gone),
        Err(_) => Err(End::Close(close::SLOW_CLIENT, "write stalled; reconnect and resume")),
    }
}

/// Whether a write took anything: a write of nothing means the socket is closed.
trait Progress {
    fn made(&self) -> bool;
}

impl Progress for usize {
    fn made(&self) -> bool {
        *self > 0
    }
}

impl Progress for () {
    fn made(&self) -> bool {
        true
    }
}
