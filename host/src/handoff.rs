//! Upgrading a node in place: the running node hands its listening socket to its successor
//! over a Unix socket (`server.handoff_socket`, the descriptor passed with `SCM_RIGHTS`), so
//! both accept from one kernel queue while the successor starts. Once the successor says it
//! accepts, the old node stops accepting and drains as on SIGTERM. No connect is refused and
//! none waiting in the queue is lost: the queue belongs to the socket, which outlives the old
//! node's copy of it.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::drain::Drain;

/// How long a successor that received the listener has to say it accepts; after that the
/// node goes on serving alone.
const READY_WAIT: Duration = Duration::from_secs(60);

/// What a successor sends once it accepts.
const READY: u8 = b'R';

/// Why the listener could not be taken over.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("handoff socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the node at {0} sent no listening socket")]
    NoSocket(PathBuf),
}

/// The node whose listener this one took over; it drains once told this one accepts.
pub(crate) struct Predecessor {
    stream: UnixStream,
}

impl Predecessor {
    pub(crate) async fn accepting(mut self) {
        if let Err(e) = self.stream.write_all(&[READY]).await {
            tracing::warn!("could not tell the previous node to drain: {e}");
        }
    }
}

/// Takes the listening socket of the node serving `path`; `None` when no node serves there.
pub(crate) async fn take_over(path: &Path) -> Result<Option<(std::net::TcpListener, Predecessor)>, HandoffError> {
    let error = |source| HandoffError::Io { path: path.to_owned(), source };
    let stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => return Ok(None),
        Err(e) => return Err(error(e)),
    };
    let fd = tokio::time::timeout(READY_WAIT, receive(&stream))
        .await
        .map_err(|_| error(io::ErrorKind::TimedOut.into()))?
        .map_err(error)?
        .ok_or_else(|| HandoffError::NoSocket(path.to_owned()))?;
    Ok(Some((std::net::TcpListener::from(fd), Predecessor { stream })))
}

/// Offers `listener` to a successor on `path` until this node drains. When a successor says
/// it accepts, `release` stops this node's accept loop and the node drains.
pub(crate) async fn offer(drain: Drain, path: PathBuf, listener: OwnedFd, release: CancellationToken) {
    let socket = match bind(&path) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!(path = %path.display(), "cannot offer the listener to a successor: {e}");
            return;
        }
    };
    loop {
        let stream = tokio::select! {
            () = drain.started() => return,
            accepted = socket.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("handoff socket accept failed: {e}");
                    continue;
                }
            },
        };
        match hand(stream, listener.as_fd()).await {
            Ok(()) => {
                tracing::info!("a successor accepts on the listener: draining");
                release.cancel();
                drain.start();
                return;
            }
            Err(e) => tracing::warn!("handoff failed, serving on: {e}"),
        }
    }
}

/// Replaces whatever is at `path` (the previous node's socket, or a stale file) and makes it
/// reachable by this user only: the listener is handed to whoever connects.
fn bind(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let socket = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(socket)
}

/// Sends the listener, then waits for the successor to accept on it.
async fn hand(mut stream: UnixStream, listener: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        stream.writable().await?;
        match stream.try_io(Interest::WRITABLE, || send(&stream, listener)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            sent => break sent?,
        }
    }
    let mut answer = [0u8; 1];
    match tokio::time::timeout(READY_WAIT, stream.read_exact(&mut answer)).await {
        Ok(Ok(_)) if answer[0] == READY => Ok(()),
        Ok(Ok(_)) => Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected answer")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

fn send(stream: &UnixStream, fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(stream, &[IoSlice::new(b"L")], &mut control, SendFlags::empty())?;
    Ok(())
}

async fn receive(stream: &UnixStream) -> io::Result<Option<OwnedFd>> {
    loop {
        stream.readable().await?;
        match stream.try_io(Interest::READABLE, || receive_now(stream)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            received => return received,
        }
    }
}

fn receive_now(stream: &UnixStream) -> io::Result<Option<OwnedFd>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let received =
        rustix::net::recvmsg(stream, &mut [IoSliceMut::new(&mut byte)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    if received.bytes == 0 {
        return Ok(None);
    }
    let fd = control.drain().find_map(|message| match message {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    Ok(fd)
}
