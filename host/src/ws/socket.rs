//! The socket as tungstenite sees it: reads go straight to the TCP stream; writes (pongs,
//! the close frame) are queued in the connection's outbox, which owns every write to the
//! stream, so tungstenite's frames and events pushed by the fan-out never interleave.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::hub::Conn;

/// The TCP stream lives in the connection's outbox (`Outbox::attach`), so it costs no
/// allocation of its own.
pub(crate) struct Socket {
    conn: Arc<Conn>,
}

impl Socket {
    /// Hands `tcp` to the connection's outbox, which writes to it from now on.
    pub(crate) fn attach(tcp: TcpStream, conn: Arc<Conn>) -> Self {
        conn.outbox.attach(tcp);
        Self { conn }
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        self.conn.outbox.socket().expect("attached when the socket was made")
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.tcp().poll_read_ready(cx))?;
            match self.tcp().try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Socket {
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
