//! A WebSocket over TLS: the TCP stream and the rustls session taken back from the TLS
//! stream hyper served the upgrade on. Only the connection's task reads and writes it, so
//! pushers queue every frame (no direct writes), and the task encrypts what the outbox
//! holds, as many frames per call as the session takes.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Mutex;
use std::task::{Context, Poll, ready};

use rustls::ServerConnection;
use tokio::io::ReadBuf;
use tokio::net::TcpStream;

use super::socket::Wire;
use crate::fanout::{Sink, Written};
use crate::hub::Conn;

pub(crate) struct TlsWire {
    tcp: TcpStream,
    /// The session's state: decrypting reads and encrypting writes both change it. Only
    /// the connection's task takes the lock, never across an await.
    session: Mutex<ServerConnection>,
}

impl TlsWire {
    pub(crate) fn new(tcp: TcpStream, session: ServerConnection) -> Self {
        Self { tcp, session: Mutex::new(session) }
    }

    fn session(&self) -> std::sync::MutexGuard<'_, ServerConnection> {
        self.session.lock().expect("TLS session lock")
    }
}

impl Wire for TlsWire {
    fn tcp<'a>(&'a self, _: &'a Conn) -> &'a TcpStream {
        &self.tcp
    }

    fn poll_read(&self, conn: &Conn, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut session = self.session();
            match session.reader().read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            drop(session);
            ready!(self.tcp.poll_read_ready(cx))?;
            let mut session = self.session();
            match session.read_tls(&mut Nonblocking(&self.tcp)) {
                // The client closed the TCP stream without a TLS close: the end.
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => {
                    let processed = session.process_new_packets();
                    if session.wants_write() {
                        // An alert, or a reply to a key update: the task sends it.
                        conn.outbox.wake_writer();
                    }
                    processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn write_queued(&self, conn: &Conn) -> io::Result<Written> {
        conn.outbox.write_to(self)
    }
}

impl Sink for TlsWire {
    /// Encrypts what the session takes (up to its buffer limit) once the records before
    /// are on the wire; `WouldBlock` while they are not.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut session = self.session();
        send_records(&mut session, &self.tcp)?;
        let taken = session.writer().write_vectored(bufs)?;
        match send_records(&mut session, &self.tcp) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        if taken == 0 { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(taken) }
    }

    fn holds_back(&self) -> io::Result<bool> {
        let mut session = self.session();
        match send_records(&mut session, &self.tcp) {
            Ok(()) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(e) => Err(e),
        }
    }
}

/// Writes the session's pending records; `WouldBlock` when the socket is full first.
fn send_records(session: &mut ServerConnection, tcp: &TcpStream) -> io::Result<()> {
    while session.wants_write() {
        session.write_tls(&mut Nonblocking(tcp))?;
    }
    Ok(())
}

/// The TCP stream as `std::io`, without blocking: `WouldBlock` clears tokio's readiness.
struct Nonblocking<'a>(&'a TcpStream);

impl Read for Nonblocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Nonblocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
