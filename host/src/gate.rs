//! Resume gates: while a connection resumes a stream, live events of that stream wait at
//! its gate instead of going out, so the replay can go first. Released, the gate drops live
//! events the replay already covered (same epoch, offset at most the snapshot's) and lets
//! the rest through; it disappears at the first event past the snapshot.
//!
//! The connection joins the stream's live delivery (gate closed) before history is read, so
//! every event after the client's position is either in the snapshot or arrives live: none
//! is missed, none is sent twice.
//!
//! A floor only guards against events that were in flight (published before the snapshot,
//! not yet received by this node) when the gate opened; the connection forgets its floors at
//! its first heartbeat, long after any such event arrived, so idle connections keep no gate.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use bytes::Bytes;

use crate::stream::{Position, Target};

/// Live events a closed gate holds before the connection is treated as a slow client.
const HOLD_LIMIT: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
enum Stream {
    User,
    Broadcast,
    Channel(Box<str>),
}

impl Stream {
    fn of(target: Target<'_>) -> Self {
        match target {
            Target::User(_) => Self::User,
            Target::Broadcast => Self::Broadcast,
            Target::Channel(c) => Self::Channel(c.into()),
        }
    }

    fn is(&self, target: Target<'_>) -> bool {
        match (self, target) {
            (Self::User, Target::User(_)) | (Self::Broadcast, Target::Broadcast) => true,
            (Self::Channel(a), Target::Channel(b)) => **a == *b,
            _ => false,
        }
    }
}

enum State {
    /// Resuming: live events wait here, with their positions.
    Closed { held: Vec<(Option<Position>, Bytes)>, overflowed: bool },
    /// Replayed up to `offset` of the epoch with this hash: live events at or before it are
    /// duplicates.
    Floor { epoch: u64, offset: u64 },
}

/// Epochs are compared by a fixed 64-bit hash, so a floor holds no allocation.
fn epoch_hash(epoch: &str) -> u64 {
    let mut h = DefaultHasher::new();
    epoch.hash(&mut h);
    h.finish()
}

/// What a gate does with one live event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Deliver it now.
    Pass,
    /// Kept until the gate opens.
    Held,
    /// Already replayed; drop it.
    Duplicate,
}

/// The gates of one connection.
#[derive(Default)]
pub(crate) struct Gates {
    /// How many gates exist: deliveries skip the lock when there are none (the usual case).
    count: AtomicUsize,
    /// Held to check or change one gate; never across an await.
    gates: Mutex<Vec<(Stream, State)>>,
}

impl Gates {
    /// Closes the gate of `target`: its live events wait for [`Gates::open`].
    pub(crate) fn close(&self, target: Target<'_>) {
        let mut gates = self.gates.lock().expect("gate lock");
        gates.retain(|(s, _)| !s.is(target));
        gates.reserve_exact(1);
        gates.push((Stream::of(target), State::Closed { held: Vec::new(), overflowed: false }));
        self.count.store(gates.len(), Relaxed);
    }

    /// Decides about one live event of `target` at `position`.
    pub(crate) fn admit(&self, target: Target<'_>, position: Option<&Position>, frame: &Bytes) -> Admit {
        if self.count.load(Relaxed) == 0 {
            return Admit::Pass;
        }
        let mut gates = self.gates.lock().expect("gate lock");
        let Some(i) = gates.iter().position(|(s, _)| s.is(target)) else { return Admit::Pass };
        match &mut gates[i].1 {
            State::Closed { held, overflowed } => {
                if held.len() < HOLD_LIMIT {
                    held.push((position.cloned(), frame.clone()));
                } else {
                    *overflowed = true;
                }
                Admit::Held
            }
            State::Floor { epoch, offset } => {
                if position.is_some_and(|p| p.offset <= *offset && epoch_hash(&p.epoch) == *epoch) {
                    return Admit::Duplicate;
                }
                gates.swap_remove(i);
                self.count.store(gates.len(), Relaxed);
                Admit::Pass
            }
        }
    }

    /// Opens the gate of `target` after a replay up to `replayed` (none when history could
    /// not be read). Under the gate's lock, `emit` queues the replay (`None`), then each held
    /// event the replay did not cover. Returns false if events were lost because the gate
    /// held too many.
    pub(crate) fn open(
        &self,
        target: Target<'_>,
        replayed: Option<&Position>,
        mut emit: impl FnMut(Option<&Bytes>),
    ) -> bool {
        let mut gates = self.gates.lock().expect("gate lock");
        emit(None);
        let Some(i) = gates.iter().position(|(s, _)| s.is(target)) else { return true };
        let (_, state) = gates.swap_remove(i);
        let State::Closed { held, overflowed } = state else { return true };
        let covered = |p: &Option<Position>| match (p, replayed) {
            (Some(p), Some(r)) => p.epoch == r.epoch && p.offset <= r.offset,
            _ => false,
        };
        let mut passed = false;
        for (position, frame) in &held {
            if !covered(position) {
                emit(Some(frame));
                passed = true;
            }
        }
        // Offsets start at 1, so a floor at 0 would never drop anything.
        match (passed, replayed) {
            (false, Some(r)) if r.offset > 0 => {
                gates.push((Stream::of(target), State::Floor { epoch: epoch_hash(&r.epoch), offset: r.offset }));
            }
            _ if gates.is_empty() => *gates = Vec::new(),
            _ => {}
        }
        self.count.store(gates.len(), Relaxed);
        !overflowed
    }

    /// Forgets every floor (see the module docs), and the memory of an empty gate list.
    pub(crate) fn forget_floors(&self) {
        if self.count.load(Relaxed) == 0 {
            return;
        }
        let mut gates = self.gates.lock().expect("gate lock");
        gates.retain(|(_, state)| matches!(state, State::Closed { .. }));
        if gates.is_empty() {
            *gates = Vec::new();
        }
        self.count.store(gates.len(), Relaxed);
    }

    /// Forgets the gate of `target` (the connection left the stream).
    pub(crate) fn remove(&self, target: Target<'_>) {
        let mut gates = self.gates.lock().expect("gate lock");
        gates.retain(|(s, _)| !s.is(target));
        self.count.store(gates.len(), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Position {
        Position { epoch: "e".into(), offset }
    }

    #[test]
    fn holds_then_drops_what_the_replay_covered() {
        let gates = Gates::default();
        let f = |n: u8| Bytes::from(vec![n]);
        assert_eq!(gates.admit(Target::User("u"), Some(&at(1)), &f(1)), Admit::Pass);
        gates.close(Target::User("u"));
        assert_eq!(gates.admit(Target::Broadcast, Some(&at(9)), &f(9)), Admit::Pass);
        assert_eq!(gates.admit(Target::User("u"), Some(&at(4)), &f(4)), Admit::Held);
        assert_eq!(gates.admit(Target::User("u"), Some(&at(5)), &f(5)), Admit::Held);
        let mut out = Vec::new();
        assert!(gates.open(Target::User("u"), Some(&at(4)), |held| out.push(held.cloned())));
        assert_eq!(out, [None, Some(f(5))]);
        assert_eq!(gates.admit(Target::User("u"), Some(&at(6)), &f(6)), Admit::Pass);
    }

    #[test]
    fn a_floor_drops_late_duplicates_until_the_first_new_event() {
        let gates = Gates::default();
        let f = Bytes::from_static(b"x");
        gates.close(Target::Channel("c"));
        assert!(gates.open(Target::Channel("c"), Some(&at(10)), |held| assert!(held.is_none())));
        assert_eq!(gates.admit(Target::Channel("c"), Some(&at(9)), &f), Admit::Duplicate);
        assert_eq!(gates.admit(Target::Channel("c"), Some(&at(10)), &f), Admit::Duplicate);
        // Another epoch is a new history, not a duplicate.
        let other = Position { epoch: "f".into(), offset: 1 };
        assert_eq!(gates.admit(Target::Channel("c"), Some(&other), &f), Admit::Pass);
        assert_eq!(gates.admit(Target::Channel("c"), Some(&at(3)), &f), Admit::Pass);
        gates.close(Target::User("u"));
        assert!(gates.open(Target::User("u"), Some(&at(10)), |_| {}));
        gates.forget_floors();
        assert_eq!(gates.admit(Target::User("u"), Some(&at(9)), &f), Admit::Pass);
    }
}
