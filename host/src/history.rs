//! Stream history: every user, channel and broadcast stream of a tenant has positions
//! `(epoch, offset)`; offsets increase by one per event with no gaps, and the epoch names
//! one lifetime of the stream's history (a new one after a restart of the in-memory store),
//! so a client can tell a continuation from a new history.
//!
//! The in-memory store keeps the last `size` frames of each stream for at most `ttl`.
//! Appending and delivering one event to a stream happen under that stream's lock, and so do
//! replaying history to a resuming connection and attaching it to the stream: a resuming
//! client gets every event after its position exactly once, in order, replayed or live.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::event::Target;

const SHARDS: usize = 64;

/// A position in a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

impl Position {
    /// Parses `EPOCH:OFFSET` (the `user_since` / `broadcast_since` query form).
    pub fn parse(s: &str) -> Option<Self> {
        let (epoch, offset) = s.rsplit_once(':')?;
        let valid = !epoch.is_empty() && epoch.len() <= 64 && epoch.bytes().all(|b| b.is_ascii_alphanumeric());
        valid.then_some(())?;
        Some(Self { epoch: epoch.to_owned(), offset: offset.parse().ok()? })
    }
}

/// What a resuming connection gets: the frames it missed, in order, and whether they are all
/// of them (`recovered`; false when history was trimmed past the position or the epoch is
/// another one). `position` is the stream's latest.
#[derive(Debug)]
pub struct Replay {
    pub recovered: bool,
    pub frames: Vec<Bytes>,
    pub position: Position,
}

/// How much history a tenant keeps per stream.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub size: usize,
    pub ttl: Duration,
}

impl From<crate::config::HistoryConfig> for Limits {
    fn from(c: crate::config::HistoryConfig) -> Self {
        Self { size: c.size, ttl: c.ttl }
    }
}

#[derive(Default)]
struct Stream {
    /// Offset of the last appended event (0: none yet).
    last: u64,
    /// `(offset, appended at, frame)`, oldest first.
    entries: VecDeque<(u64, Instant, Bytes)>,
}

impl Stream {
    fn trim(&mut self, limits: Limits, now: Instant) {
        while self.entries.len() > limits.size {
            self.entries.pop_front();
        }
        while self.entries.front().is_some_and(|(_, at, _)| now.duration_since(*at) > limits.ttl) {
            self.entries.pop_front();
        }
    }
}

type Key = (u32, u8, Box<str>);
type Shard = HashMap<Key, Arc<Mutex<Stream>>>;

/// In-memory history of every stream on this node.
pub struct MemoryHistory {
    epoch: String,
    /// Streams by key; a shard's lock is held only to find or create a stream. Streams are
    /// never removed: dropping one would restart its offsets under the same epoch.
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Default for MemoryHistory {
    fn default() -> Self {
        let hasher = RandomState::new();
        let epoch = format!("{:016x}", hasher.hash_one(crate::event::now_micros()));
        Self { epoch, shards: (0..SHARDS).map(|_| Mutex::default()).collect(), hasher }
    }
}

fn key(tenant: u32, target: Target<'_>) -> Key {
    match target {
        Target::User(u) => (tenant, 0, u.into()),
        Target::Channel(c) => (tenant, 1, c.into()),
        Target::Broadcast => (tenant, 2, "".into()),
    }
}

impl MemoryHistory {
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The stream's own lock is held while one event is appended and pushed to its
    /// connections, or while a resuming connection is replayed and attached; never across an
    /// await. A connection resumes its user stream, then the broadcast, in that order.
    fn stream(&self, tenant: u32, target: Target<'_>) -> Arc<Mutex<Stream>> {
        let key = key(tenant, target);
        let shard = &self.shards[(self.hasher.hash_one(&key) as usize) % SHARDS];
        shard.lock().expect("history lock").entry(key).or_default().clone()
    }

    /// Appends one event: `encode` builds its frame for the new position, `deliver` pushes
    /// it to the stream's connections before the next event of the stream can be appended.
    pub fn append(
        &self,
        tenant: u32,
        target: Target<'_>,
        limits: Limits,
        encode: impl FnOnce(&Position) -> Bytes,
        deliver: impl FnOnce(&Bytes),
    ) {
        let stream = self.stream(tenant, target);
        let mut stream = stream.lock().expect("stream lock");
        stream.last += 1;
        let frame = encode(&Position { epoch: self.epoch.clone(), offset: stream.last });
        deliver(&frame);
        let now = Instant::now();
        let offset = stream.last;
        stream.entries.push_back((offset, now, frame));
        stream.trim(limits, now);
    }

    /// Replays what came after `since` (nothing without one) and calls `attach` with it,
    /// under the stream's lock, so no event of the stream falls between the replay and the
    /// connection joining the stream.
    pub fn resume<R>(
        &self,
        tenant: u32,
        target: Target<'_>,
        limits: Limits,
        since: Option<&Position>,
        attach: impl FnOnce(Replay) -> R,
    ) -> R {
        let stream = self.stream(tenant, target);
        let mut stream = stream.lock().expect("stream lock");
        stream.trim(limits, Instant::now());
        let position = Position { epoch: self.epoch.clone(), offset: stream.last };
        let (recovered, frames) = match since {
            None => (true, Vec::new()),
            Some(p) if p.epoch != self.epoch || p.offset > stream.last => (false, Vec::new()),
            Some(p) => {
                // Recovered when nothing after `p` was trimmed: the oldest kept entry is at
                // most p + 1 (or nothing was missed at all).
                let oldest = stream.entries.front().map_or(stream.last + 1, |(o, _, _)| *o);
                let frames = stream.entries.iter().filter(|(o, _, _)| *o > p.offset).map(|(_, _, f)| f.clone());
                (oldest <= p.offset + 1, frames.collect())
            }
        };
        attach(Replay { recovered, frames, position })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { size: 3, ttl: Duration::from_secs(60) };

    fn append(h: &MemoryHistory, n: u8) {
        h.append(0, Target::User("u"), LIMITS, |_| Bytes::from(vec![n]), |_| {});
    }

    #[test]
    fn a_connection_resumes_its_user_stream_and_the_broadcast_together() {
        // Each stream has its own lock, so holding a user stream while resuming the
        // broadcast never waits on itself, whichever shards the keys fall in.
        let h = MemoryHistory::default();
        for i in 0..500 {
            let user = format!("user-{i}");
            let both = h.resume(0, Target::User(&user), LIMITS, None, |u| {
                h.resume(0, Target::Broadcast, LIMITS, None, |b| u.recovered && b.recovered)
            });
            assert!(both);
        }
    }

    #[test]
    fn replays_after_a_position_and_reports_trimming() {
        let h = MemoryHistory::default();
        for n in 1..=5 {
            append(&h, n);
        }
        let at = |offset| Position { epoch: h.epoch().to_owned(), offset };
        let replay = h.resume(0, Target::User("u"), LIMITS, Some(&at(3)), |r| r);
        assert!(replay.recovered);
        assert_eq!(replay.frames, [Bytes::from(vec![4]), Bytes::from(vec![5])]);
        assert_eq!(replay.position.offset, 5);
        // Offsets 1 and 2 were trimmed (size 3 keeps 3..=5): resuming after 1 misses 2.
        let replay = h.resume(0, Target::User("u"), LIMITS, Some(&at(1)), |r| r);
        assert!(!replay.recovered);
        assert_eq!(replay.frames.len(), 3);
        let other_epoch = Position { epoch: "other".into(), offset: 4 };
        assert!(!h.resume(0, Target::User("u"), LIMITS, Some(&other_epoch), |r| r).recovered);
        assert!(h.resume(0, Target::User("u"), LIMITS, Some(&at(5)), |r| r.recovered && r.frames.is_empty()));
    }
}
