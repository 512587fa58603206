//! The socket as tungstenite sees it: reads come from the wire (the TCP stream, or a TLS
//! session over it); writes (pongs, the close frame) are queued in the connection's outbox,
//! which owns every write to the wire, so tungstenite's frames and events pushed by the
//! fan-out never interleave.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::inflate::Inflate;
use crate::fanout::Written;
use crate::hub::Conn;

/// What a WebSocket connection's bytes travel on.
pub(crate) trait Wire: Send + Sync + Unpin + 'static {
    /// The TCP stream underneath, for write readiness.
    fn tcp<'a>(&'a self, conn: &'a Conn) -> &'a TcpStream;

    /// Reads what the client sent, as plain bytes.
    fn poll_read(&self, conn: &Conn, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>>;

    /// Writes the outbox's queued frames without blocking (`Outbox::write_to`).
    fn write_queued(&self, conn: &Conn) -> io::Result<Written>;
}

/// The plain TCP stream. It lives in the connection's outbox (`Outbox::attach`), where
/// pushers write to it directly, so it costs no allocation of its own.
pub(crate) struct Plain;

impl Wire for Plain {
    fn tcp<'a>(&'a self, conn: &'a Conn) -> &'a TcpStream {
        conn.outbox.socket().expect("attached when the socket was made")
    }

    fn poll_read(&self, conn: &Conn, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let tcp = self.tcp(conn);
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            match tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn write_queued(&self, conn: &Conn) -> io::Result<Written> {
        conn.outbox.write_to(self.tcp(conn))
    }
}

pub(crate) struct Socket<W> {
    conn: Arc<Conn>,
    wire: W,
    /// Inflates the client's compressed messages, where it negotiated permessage-deflate.
    inflate: Option<Box<Inflate>>,
}

impl Socket<Plain> {
    /// Hands `tcp` to the connection's outbox, which writes to it from now on.
    pub(crate) fn attach(tcp: TcpStream, conn: Arc<Conn>) -> Self {
        conn.outbox.attach(tcp);
        Self { conn, wire: Plain, inflate: None }
    }
}

impl<W: Wire> Socket<W> {
    /// A socket on `wire`, which the connection's task alone writes to.
    pub(crate) fn on(wire: W, conn: Arc<Conn>) -> Self {
        Self { conn, wire, inflate: None }
    }

    /// Inflates what the client sends if it negotiated permessage-deflate; no message
    /// inflates beyond `limit` bytes. `pre_read` (what the client sent before the upgrade
    /// was handed over) is read through it first; what this returns is what tungstenite
    /// must read first instead (all of `pre_read` without compression, none with).
    pub(crate) fn inflating(mut self, limit: usize, pre_read: Bytes) -> (Self, Bytes) {
        if !self.conn.deflate {
            return (self, pre_read);
        }
        self.inflate = Some(Box::new(Inflate::new(limit, &pre_read)));
        (self, Bytes::new())
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        self.wire.tcp(&self.conn)
    }

    pub(crate) fn write_queued(&self) -> io::Result<Written> {
        self.wire.write_queued(&self.conn)
    }
}

impl<W: Wire> AsyncRead for Socket<W> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.inflate {
            None => this.wire.poll_read(&this.conn, cx, buf),
            Some(inflate) => inflate.poll_read(buf, |b| this.wire.poll_read(&this.conn, cx, b)),
        }
    }
}

impl<W: Wire> AsyncWrite for Socket<W> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.conn.outbox.push_transport(Bytes::copy_from_slice(buf));
        Poll::Ready(Ok(buf.len()))
    }

    /// The connection's task writes the outbox (woken by the push); nothing to do here.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
