//! A client connection's socket, plain TCP or TLS, while hyper serves HTTP on it, and taking
//! it back from hyper. An SSE stream is served on the socket itself (`sse`): its handler
//! takes the socket, and hyper's connection, with its buffers, ends as soon as the handler
//! returns. A WebSocket gets its socket back through hyper's upgrade instead (`ws`).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client connection's socket.
pub(crate) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The socket as hyper reads and writes it. Once a handler took it, reads end and writes
/// vanish, so hyper "sends" the handler's answer into nothing and then sees the connection
/// closed, quietly.
pub(crate) struct Served(Slot);

/// A request's way to its connection's socket (a request extension).
#[derive(Clone)]
pub(crate) struct Takeover(Slot);

/// Shared by hyper's side and the requests' side. Locked for each of hyper's reads and writes
/// (never across an await, never contended but by the one take).
type Slot = Arc<Mutex<Option<Io>>>;

impl Served {
    pub(crate) fn new(io: Io) -> (Self, Takeover) {
        let slot = Arc::new(Mutex::new(Some(io)));
        (Self(slot.clone()), Takeover(slot))
    }

    /// The socket, once hyper handed it over with an upgrade.
    pub(crate) fn take(&self) -> Option<Io> {
        lock(&self.0).take()
    }
}

impl Takeover {
    /// Takes the socket from hyper. The caller answers the request on it itself; what the
    /// handler returns afterwards is discarded.
    pub(crate) fn take(&self) -> Option<Io> {
        lock(&self.0).take()
    }
}

fn lock(slot: &Slot) -> MutexGuard<'_, Option<Io>> {
    slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for Served {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match lock(&self.0).as_mut() {
            Some(io) => Pin::new(io).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Served {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match lock(&self.0).as_mut() {
            Some(io) => Pin::new(io).poll_write(cx, buf),
            None => Poll::Ready(Ok(buf.len())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match lock(&self.0).as_mut() {
            Some(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        lock(&self.0).as_ref().is_none_or(Io::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match lock(&self.0).as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match lock(&self.0).as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn once_taken_hyper_side_reads_the_end_and_writes_vanish_while_the_taker_holds_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (mut served, takeover) = Served::new(Io::Plain(server));
        served.write_all(b"before ").await.unwrap();
        let mut taken = takeover.take().expect("the socket");
        assert!(takeover.take().is_none(), "taken once");
        served.write_all(b"into nothing").await.unwrap();
        assert_eq!(served.read(&mut [0; 8]).await.unwrap(), 0, "hyper's side sees the end");
        taken.write_all(b"after").await.unwrap();
        drop((served, taken));
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "before after");
    }
}
