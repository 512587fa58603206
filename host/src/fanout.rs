//! Per-connection bounded send queues ("outboxes") of pre-encoded frames, the slow-client
//! policy, and the vectored writer that flushes every queued frame in as few syscalls as the
//! socket allows.
//!
//! A WebSocket connection's socket is attached to its outbox, and every byte the host sends
//! on it goes through the outbox's lock: events, protocol frames, and tungstenite's own
//! control frames (`ws::socket`). So an event pushed to a connection whose queue is empty
//! is written to the socket at once by the pusher, with no wake-up of the connection's
//! task; only what the socket does not take is queued for the task to write.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Mutex, OnceLock};

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::config::SlowClientPolicy;

/// Most frames handed to one `writev`.
const MAX_IOVECS: usize = 64;

/// Limits every outbox is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub frames: usize,
    pub bytes: usize,
}

/// Why the writer must stop and close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kill {
    /// The queue overflowed under the `disconnect` policy: what is queued is dropped.
    SlowClient,
    /// The connection may have missed live events (the broker lost its subscriptions for a
    /// while): what is queued still goes out, then the client is told to resume.
    Resync,
    /// The connection could not be resumed now (history unreadable): its `reconnect` frame
    /// goes out, then the client is told to come back later with the same positions.
    Retry,
    /// The tenant was deleted: nothing more is sent, the client must not reconnect.
    TenantDeleted,
    /// A backend disconnected the user: what is queued still goes out, then the close.
    Disconnected,
    /// The node is shutting down: what is queued (its `reconnect` frame last) still goes out,
    /// for up to `server.shutdown_grace`, then 1001.
    Drain,
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// Queued behind frames that were still waiting: the connection is behind.
    Behind,
    /// Queued after discarding this many older frames (`drop_oldest`).
    QueuedDropping(usize),
    /// Written to the socket at once (the queue was empty): nothing was queued.
    Written,
    /// The queue was full: the connection is being closed as a slow client.
    Overflow,
    /// The connection is already being closed; the frame was discarded.
    Closed,
}

/// A connection's send queue. The hub pushes from any thread, writing to the socket itself
/// when nothing is queued; only the connection's own task pops. The mutex is never held
/// across an await: pushes and the non-blocking writes are synchronous.
#[derive(Default)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// The connection's socket (WebSocket), set once it is upgraded; read by its task
    /// without the lock, written only under it.
    socket: OnceLock<TcpStream>,
    /// Wakes the connection task when frames arrive or a kill is requested.
    wake: Notify,
}

/// A queued frame. Exempt frames (protocol replies, a resume's replay) do not count toward
/// the limits and are never dropped by `drop_oldest`: a catch-up of up to `history.size`
/// events must not look like a slow client.
struct Queued {
    bytes: Bytes,
    exempt: bool,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Queued>,
    /// Bytes still to be written, including the unwritten rest of a partly written front frame.
    bytes: usize,
    /// How many of `frames`, and of `bytes`, are exempt from the limits.
    exempt_frames: usize,
    exempt_bytes: usize,
    /// The front frame has been partly written, so it must go out whole before anything else.
    front_started: bool,
    kill: Option<Kill>,
    /// Pushers may write to the socket directly.
    attached: bool,
}

impl State {
    fn kill(&mut self, why: Kill) {
        self.kill.get_or_insert(why);
        if why == Kill::SlowClient {
            // A partly written frame must still go out whole before the close frame.
            let keep = usize::from(self.front_started);
            self.frames.truncate(keep);
            self.bytes = self.frames.front().map_or(0, |f| f.bytes.len());
            let exempt = self.frames.front().is_some_and(|f| f.exempt);
            self.exempt_frames = usize::from(exempt);
            self.exempt_bytes = if exempt { self.bytes } else { 0 };
        }
    }

    /// Gives back a drained queue's buffer: most connections are idle most of the time, and
    /// the allocator's cache makes the next one cheap.
    fn release(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            self.frames = VecDeque::new();
        }
    }

    fn counted(&self) -> (usize, usize) {
        (self.frames.len() - self.exempt_frames, self.bytes - self.exempt_bytes)
    }

    fn push_back(&mut self, bytes: Bytes, exempt: bool) {
        self.bytes += bytes.len();
        if exempt {
            self.exempt_frames += 1;
            self.exempt_bytes += bytes.len();
        }
        self.frames.push_back(Queued { bytes, exempt });
    }
}

impl Outbox {
    /// Queues an event frame, applying `limits` and `policy`; with `direct`, writes it to
    /// the attached socket instead when nothing is queued.
    pub(crate) fn push(&self, frame: Bytes, limits: QueueLimits, policy: SlowClientPolicy, direct: bool) -> Pushed {
        let mut s = self.state.lock().expect("outbox lock");
        if s.kill.is_some() {
            return Pushed::Closed;
        }
        let mut dropped = 0;
        loop {
            let (frames, bytes) = s.counted();
            if frames < limits.frames && bytes + frame.len() <= limits.bytes {
                break;
            }
            // The oldest counted frame that has not started going out.
            let first = usize::from(s.front_started);
            let oldest = s.frames.iter().skip(first).position(|f| !f.exempt).map(|i| i + first);
            let Some(oldest) = oldest.filter(|_| policy == SlowClientPolicy::DropOldest) else {
                s.kill(Kill::SlowClient);
                drop(s);
                self.wake.notify_one();
                return Pushed::Overflow;
            };
            let old = s.frames.remove(oldest).expect("index found above");
            s.bytes -= old.bytes.len();
            dropped += 1;
        }
        let behind = !s.frames.is_empty();
        // Straight to the socket when nothing waits before it. A full or failing socket
        // takes nothing: the connection's task meets the failure on its next write.
        let socket = self.socket.get().filter(|_| direct && !behind && dropped == 0 && s.attached);
        match socket.map_or(0, |socket| socket.try_write(&frame).unwrap_or(0)) {
            0 => s.push_back(frame, false),
            n if n == frame.len() => return Pushed::Written,
            n => {
                s.push_back(frame.slice(n..), false);
                s.front_started = true;
            }
        }
        drop(s);
        self.wake.notify_one();
        match (dropped, behind) {
            (0, false) => Pushed::Queued,
            (0, true) => Pushed::Behind,
            (n, _) => Pushed::QueuedDropping(n),
        }
    }

    /// Takes the connection's socket and lets pushers write to it directly while the queue is
    /// empty. Only once per outbox.
    pub(crate) fn attach(&self, socket: TcpStream) {
        let mut s = self.state.lock().expect("outbox lock");
        s.attached = self.socket.set(socket).is_ok();
    }

    /// The attached socket.
    pub(crate) fn socket(&self) -> Option<&TcpStream> {
        self.socket.get()
    }

    /// Ends direct writes; everything from now on goes through the connection's task.
    pub(crate) fn detach(&self) {
        self.state.lock().expect("outbox lock").attached = false;
    }

    /// Queues bytes the WebSocket library writes itself (pongs, the close frame): exempt, and
    /// queued even after a kill, behind whatever part of a frame must still go out.
    pub(crate) fn push_transport(&self, frame: Bytes) {
        self.state.lock().expect("outbox lock").push_back(frame, true);
        self.wake.notify_one();
    }

    /// Asks the writer to stop and close the connection; no event is queued after this.
    /// For a slow client, queued frames are discarded (a partly written one still goes out
    /// whole).
    pub(crate) fn kill(&self, why: Kill) {
        self.state.lock().expect("outbox lock").kill(why);
        self.wake.notify_one();
    }

    /// Queues a protocol frame (welcome, reply, ping) or a replayed event, exempt from the
    /// limits. False if the connection is being closed.
    pub(crate) fn push_exempt(&self, frame: Bytes) -> bool {
        let mut s = self.state.lock().expect("outbox lock");
        let open = s.kill.is_none();
        if open {
            s.push_back(frame, true);
        }
        drop(s);
        self.wake.notify_one();
        open
    }

    /// Queues a protocol frame (welcome, reply, ping), exempt from the limits.
    pub(crate) fn push_control(&self, frame: Bytes) {
        self.push_exempt(frame);
    }

    /// Waits until there is something to write or a kill was requested.
    pub(crate) async fn wait(&self) {
        self.wake.notified().await;
    }

    /// Frames waiting to be written.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.state.lock().expect("outbox lock").frames.len()
    }

    /// The pending kill, if any.
    pub(crate) fn killed(&self) -> Option<Kill> {
        self.state.lock().expect("outbox lock").kill
    }

    /// Takes every queued frame (none after a slow-client kill), for a transport that
    /// re-frames them itself (SSE). Returns how many were appended to `out`.
    pub(crate) fn take_all(&self, out: &mut Vec<Bytes>) -> usize {
        let mut s = self.state.lock().expect("outbox lock");
        let taken = if s.kill == Some(Kill::SlowClient) { 0 } else { s.frames.len() };
        out.extend(s.frames.drain(..).take(taken).map(|f| f.bytes));
        s.release();
        (s.bytes, s.exempt_frames, s.exempt_bytes, s.front_started) = (0, 0, 0, false);
        taken
    }

    /// Wakes the connection's task to write, for bytes its transport holds back (TLS).
    pub(crate) fn wake_writer(&self) {
        self.wake.notify_one();
    }

    /// Writes queued frames to `socket` without blocking, as many per `writev` as fit.
    /// Stops when the queue is empty, the socket is full, or a kill was requested.
    pub(crate) fn write_to(&self, socket: &impl Sink) -> io::Result<Written> {
        let mut s = self.state.lock().expect("outbox lock");
        let mut done = 0;
        loop {
            // After a slow-client kill the queue holds only the rest of a started frame and
            // the transport's own frames (the close frame): all of it goes out.
            if s.frames.is_empty() {
                s.release();
                return Ok(Written { frames: done, drained: !socket.holds_back()? });
            }
            let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
            let n = s.frames.len().min(MAX_IOVECS);
            for (slot, frame) in iov.iter_mut().zip(s.frames.iter()) {
                *slot = IoSlice::new(&frame.bytes);
            }
            let mut written = match socket.try_write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Written { frames: done, drained: false });
                }
                Err(e) => return Err(e),
            };
            s.bytes -= written;
            while written > 0 {
                let front = s.frames.front_mut().expect("written bytes belong to queued frames");
                let (len, exempt) = (front.bytes.len(), front.exempt);
                let n = written.min(len);
                if exempt {
                    s.exempt_bytes -= n;
                }
                if written >= len {
                    written -= len;
                    s.frames.pop_front();
                    s.exempt_frames -= usize::from(exempt);
                    s.front_started = false;
                    done += 1;
                } else {
                    s.frames.front_mut().expect("front checked above").bytes.advance(written);
                    s.front_started = true;
                    written = 0;
                }
            }
        }
    }
}

/// What an outbox writes to: the TCP stream, or a TLS session over it.
pub(crate) trait Sink {
    /// Writes what the socket takes now; `WouldBlock` when it takes nothing.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Whether bytes taken are still held back from the wire (TLS records the socket did
    /// not take yet), after trying once more to send them.
    fn holds_back(&self) -> io::Result<bool> {
        Ok(false)
    }
}

impl Sink for TcpStream {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }
}

/// Progress of one [`Outbox::write_to`] call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    /// Whole frames written.
    pub frames: usize,
    /// The queue is empty now.
    pub drained: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn disconnect_policy_kills_on_overflow() {
        let o = Outbox::default();
        let l = QueueLimits { frames: 2, bytes: 1000 };
        assert_eq!(o.push(f(10), l, SlowClientPolicy::Disconnect, true), Pushed::Queued);
        assert_eq!(o.push(f(10), l, SlowClientPolicy::Disconnect, true), Pushed::Behind);
        assert_eq!(o.push(f(10), l, SlowClientPolicy::Disconnect, true), Pushed::Overflow);
        assert_eq!(o.killed(), Some(Kill::SlowClient));
        assert_eq!(o.push(f(10), l, SlowClientPolicy::Disconnect, true), Pushed::Closed);
    }

    #[test]
    fn drop_oldest_keeps_newest_within_byte_limit() {
        let o = Outbox::default();
        let l = QueueLimits { frames: 10, bytes: 25 };
        o.push(f(10), l, SlowClientPolicy::DropOldest, true);
        o.push(f(10), l, SlowClientPolicy::DropOldest, true);
        assert_eq!(o.push(f(10), l, SlowClientPolicy::DropOldest, true), Pushed::QueuedDropping(1));
        assert_eq!(o.killed(), None);
        assert_eq!(o.state.lock().unwrap().bytes, 20);
    }

    #[test]
    fn exempt_frames_do_not_count_and_are_never_dropped() {
        let o = Outbox::default();
        let l = QueueLimits { frames: 2, bytes: 25 };
        // A replay larger than the limits is queued whole.
        for _ in 0..5 {
            assert!(o.push_exempt(f(10)));
        }
        assert_eq!(o.push(f(10), l, SlowClientPolicy::DropOldest, true), Pushed::Behind);
        assert_eq!(o.push(f(10), l, SlowClientPolicy::DropOldest, true), Pushed::Behind);
        // Only counted frames make room.
        assert_eq!(o.push(f(10), l, SlowClientPolicy::DropOldest, true), Pushed::QueuedDropping(1));
        let s = o.state.lock().unwrap();
        assert_eq!((s.frames.len(), s.exempt_frames, s.bytes, s.exempt_bytes), (7, 5, 70, 50));
        assert_eq!(s.frames.iter().filter(|f| f.exempt).count(), 5);
        drop(s);
        assert_eq!(o.push(f(10), l, SlowClientPolicy::Disconnect, true), Pushed::Overflow);
    }

    #[tokio::test]
    async fn writing_keeps_the_exempt_accounting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (_server, _) = listener.accept().await.unwrap();
        let o = Outbox::default();
        let l = QueueLimits { frames: 10, bytes: 1000 };
        o.push_exempt(f(7));
        o.push(f(5), l, SlowClientPolicy::Disconnect, true);
        o.push_exempt(f(3));
        client.writable().await.unwrap();
        let w = o.write_to(&client).unwrap();
        assert!(w.drained && w.frames == 3);
        let s = o.state.lock().unwrap();
        assert_eq!((s.frames.len(), s.bytes, s.exempt_frames, s.exempt_bytes), (0, 0, 0, 0));
    }

    /// A connected pair: the host's side (attached) and the peer's.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (host, _) = listener.accept().await.unwrap();
        host.writable().await.unwrap();
        (host, peer)
    }

    fn numbered(n: u32, len: usize) -> Bytes {
        let mut v = vec![b'.'; len];
        v[..4].copy_from_slice(&n.to_be_bytes());
        Bytes::from(v)
    }

    #[tokio::test]
    async fn an_attached_socket_is_written_at_once_and_order_holds_when_it_fills() {
        use tokio::io::AsyncReadExt;
        let (host, mut peer) = pair().await;
        let o = Outbox::default();
        let l = QueueLimits { frames: 100_000, bytes: 1 << 30 };
        assert_eq!(o.push(f(10), l, SlowClientPolicy::Disconnect, false), Pushed::Queued, "not attached");
        o.write_to(&host).unwrap();
        o.attach(host);
        let host = o.socket().unwrap();
        assert_eq!(o.push(f(10), l, SlowClientPolicy::Disconnect, true), Pushed::Written);
        assert_eq!(o.queued(), 0);
        // Frames beyond what the socket takes are queued (the first of them maybe in part),
        // never written ahead of what waits.
        let (len, count) = (16 * 1024, 2000);
        let mut outcomes = Vec::new();
        for n in 0..count {
            outcomes.push(o.push(numbered(n, len), l, SlowClientPolicy::Disconnect, true));
        }
        assert!(outcomes.contains(&Pushed::Written) && outcomes.contains(&Pushed::Behind), "{outcomes:?}");
        let reader = tokio::spawn(async move {
            let mut all = vec![0; 20 + len * count as usize];
            peer.read_exact(&mut all).await.unwrap();
            all
        });
        while !o.write_to(host).unwrap().drained {
            host.writable().await.unwrap();
        }
        let all = reader.await.unwrap();
        let frames: Vec<u32> = all[20..].chunks(len).map(|c| u32::from_be_bytes(c[..4].try_into().unwrap())).collect();
        assert_eq!(frames, (0..count).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn after_a_slow_client_kill_the_started_frame_and_the_close_frame_still_go_out() {
        use tokio::io::AsyncReadExt;
        let (host, mut peer) = pair().await;
        let o = Outbox::default();
        let l = QueueLimits { frames: 1, bytes: 1 << 30 };
        o.attach(host);
        let len = 64 * 1024;
        let mut pushed = 0;
        // Fill the socket until a frame is only partly written, then overflow the queue.
        while o.push(numbered(pushed, len), l, SlowClientPolicy::Disconnect, true) == Pushed::Written {
            pushed += 1;
        }
        assert_eq!(o.push(f(1), l, SlowClientPolicy::Disconnect, true), Pushed::Overflow);
        assert_eq!(o.push(f(1), l, SlowClientPolicy::Disconnect, true), Pushed::Closed);
        o.push_transport(Bytes::from_static(b"CLOSE"));
        let started = o.state.lock().unwrap().front_started;
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).await.unwrap();
            all
        });
        let host = o.socket().unwrap();
        while !o.write_to(host).unwrap().drained {
            host.writable().await.unwrap();
        }
        o.detach();
        drop(o);
        let all = reader.await.unwrap();
        let whole = if started { pushed as usize + 1 } else { pushed as usize };
        assert_eq!(all.len(), whole * len + 5, "whole frames, then the close frame");
        assert!(all.ends_with(b"CLOSE"));
    }
}
