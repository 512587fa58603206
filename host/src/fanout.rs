//! Per-connection bounded send queues ("outboxes") of pre-encoded frames, the slow-client
//! policy, and the vectored writer that flushes every queued frame in as few syscalls as the
//! socket allows.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Mutex;

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::config::SlowClientPolicy;

/// Most frames handed to one `writev`.
const MAX_IOVECS: usize = 64;
/// A drained queue whose buffer grew past this many slots gives the memory back.
const SHRINK_ABOVE: usize = 64;

/// Limits every outbox is held to.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub frames: usize,
    pub bytes: usize,
}

/// Why the writer must stop and close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// The queue overflowed under the `disconnect` policy: what is queued is dropped.
    SlowClient,
    /// The connection may have missed live events (the broker lost its subscriptions for a
    /// while): what is queued still goes out, then the client is told to resume.
    Resync,
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued after discarding this many older frames (`drop_oldest`).
    QueuedDropping(usize),
    /// The queue was full: the connection is being closed as a slow client.
    Overflow,
    /// The connection is already being closed; the frame was discarded.
    Closed,
}

/// A connection's send queue. The hub pushes from any thread; only the connection's own task
/// pops. The mutex is never held across an await: pushes and the non-blocking `writev` are
/// synchronous.
#[derive(Default)]
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the connection task when frames arrive or a kill is requested.
    wake: Notify,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Bytes>,
    /// Bytes still to be written, including the unwritten rest of a partly written front frame.
    bytes: usize,
    /// The front frame has been partly written, so it must go out whole before anything else.
    front_started: bool,
    kill: Option<Kill>,
}

impl State {
    fn kill(&mut self, why: Kill) {
        self.kill.get_or_insert(why);
        if why == Kill::SlowClient {
            // A partly written frame must still go out whole before the close frame.
            let keep = usize::from(self.front_started);
            self.frames.truncate(keep);
            self.bytes = self.frames.front().map_or(0, Bytes::len);
        }
    }
}

impl Outbox {
    /// Queues an event frame, applying `limits` and `policy`.
    pub fn push(&self, frame: Bytes, limits: QueueLimits, policy: SlowClientPolicy) -> Pushed {
        let mut s = self.state.lock().expect("outbox lock");
        if s.kill.is_some() {
            return Pushed::Closed;
        }
        let mut dropped = 0;
        while s.frames.len() >= limits.frames || s.bytes + frame.len() > limits.bytes {
            let removable = usize::from(s.front_started);
            if policy == SlowClientPolicy::Disconnect || s.frames.len() <= removable {
                s.kill(Kill::SlowClient);
                drop(s);
                self.wake.notify_one();
                return Pushed::Overflow;
            }
            let old = s.frames.remove(removable).expect("index checked above");
            s.bytes -= old.len();
            dropped += 1;
        }
        s.bytes += frame.len();
        s.frames.push_back(frame);
        drop(s);
        self.wake.notify_one();
        if dropped > 0 { Pushed::QueuedDropping(dropped) } else { Pushed::Queued }
    }

    /// Asks the writer to stop and close the connection; no event is queued after this.
    /// For a slow client, queued frames are discarded (a partly written one still goes out
    /// whole).
    pub fn kill(&self, why: Kill) {
        self.state.lock().expect("outbox lock").kill(why);
        self.wake.notify_one();
    }

    /// Queues a protocol frame (welcome, reply, ping) that is exempt from the limits.
    pub fn push_control(&self, frame: Bytes) {
        let mut s = self.state.lock().expect("outbox lock");
        if s.kill.is_none() {
            s.bytes += frame.len();
            s.frames.push_back(frame);
        }
        drop(s);
        self.wake.notify_one();
    }

    /// Waits until there is something to write or a kill was requested.
    pub async fn wait(&self) {
        self.wake.notified().await;
    }

    /// The pending kill, if any.
    pub fn killed(&self) -> Option<Kill> {
        self.state.lock().expect("outbox lock").kill
    }

    /// Writes queued frames to `socket` without blocking, as many per `writev` as fit.
    /// Stops when the queue is empty, the socket is full, or a kill was requested.
    pub fn write_to(&self, socket: &TcpStream) -> io::Result<Written> {
        let mut s = self.state.lock().expect("outbox lock");
        let mut done = 0;
        loop {
            if s.kill == Some(Kill::SlowClient) && !s.front_started {
                return Ok(Written { frames: done, drained: true });
            }
            if s.frames.is_empty() {
                if s.frames.capacity() > SHRINK_ABOVE {
                    s.frames.shrink_to(0);
                }
                return Ok(Written { frames: done, drained: true });
            }
            let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
            let n = s.frames.len().min(MAX_IOVECS);
            for (slot, frame) in iov.iter_mut().zip(s.frames.iter()) {
                *slot = IoSlice::new(frame);
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
                if written >= front.len() {
                    written -= front.len();
                    s.frames.pop_front();
                    s.front_started = false;
                    done += 1;
                } else {
                    front.advance(written);
                    s.front_started = true;
                    written = 0;
                }
            }
        }
    }
}

/// Progress of one [`Outbox::write_to`] call.
#[derive(Debug, Clone, Copy)]
pub struct Written {
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
        assert_eq!(o.push(f(10), l, SlowClientPolicy::Disconnect), Pushed::Queued);
        assert_eq!(o.push(f(10), l, SlowClientPolicy::Disconnect), Pushed::Queued);
        assert_eq!(o.push(f(10), l, SlowClientPolicy::Disconnect), Pushed::Overflow);
        assert_eq!(o.killed(), Some(Kill::SlowClient));
        assert_eq!(o.push(f(10), l, SlowClientPolicy::Disconnect), Pushed::Closed);
    }

    #[test]
    fn drop_oldest_keeps_newest_within_byte_limit() {
        let o = Outbox::default();
        let l = QueueLimits { frames: 10, bytes: 25 };
        o.push(f(10), l, SlowClientPolicy::DropOldest);
        o.push(f(10), l, SlowClientPolicy::DropOldest);
        assert_eq!(o.push(f(10), l, SlowClientPolicy::DropOldest), Pushed::QueuedDropping(1));
        assert_eq!(o.killed(), None);
        assert_eq!(o.state.lock().unwrap().bytes, 20);
    }
}
