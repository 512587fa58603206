//! In-memory history of every stream on this node: the last `size` events of each stream,
//! for at most `ttl`. Appending and delivering one event happen under that stream's lock, so
//! live delivery follows offset order; a read takes the same lock for its snapshot.
//!
//! Each stream has its own epoch, made when the stream is created, so a stream untouched for
//! its `ttl` plus [`POSITION_GRACE`] can be dropped: recreated later, it starts a new epoch
//! and nobody mistakes its offsets for the old ones. Idle streams are swept a shard at a
//! time as streams are used.
//!
//! Only an append creates a stream: reading a stream that never held an event keeps
//! nothing, so a user who connects and never receives an event costs no memory here. Such a
//! read answers offset 0 of a *look epoch* naming this store and the second of the read. A
//! client resuming from it is at offset 0 of the stream created since, provided that stream
//! was created after the look and within `ttl` plus the grace of it: any earlier
//! incarnation created after the look would still exist, because a stream lives at least
//! that long after its creation.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

use crate::backend::BoxFuture;
use crate::backend::history::{Cursor, CursorMove, History, HistoryError, Limits, POSITION_GRACE, Start, plan};
use crate::segment::Filter;
use crate::stream::{Position, Replay, Stored, Target, new_epoch};
use crate::tenant::Tenant;

const SHARDS: usize = 64;
/// Every this many stream lookups, one shard is swept of idle streams.
const SWEEP_EVERY: u64 = 1024;

struct Stream {
    epoch: String,
    /// Unix second of the creation, which look epochs are compared with.
    created: u64,
    /// When the stream may be dropped: `ttl` plus the grace after its last use.
    expires: Instant,
    /// Offset of the last appended event (0: none yet).
    last: u64,
    /// The user's read cursor (user streams of tenants with acks).
    acked: u64,
    /// Kept events with the time they were appended, oldest first.
    entries: VecDeque<(Instant, Stored)>,
}

impl Stream {
    fn new(epochs: &Epochs) -> Self {
        let (epoch, created) = epochs.create();
        Self { epoch, created, expires: Instant::now(), last: 0, acked: 0, entries: VecDeque::new() }
    }

    fn position(&self) -> Position {
        Position { epoch: self.epoch.clone(), offset: self.last }
    }

    /// Trims and notes the use, which keeps the stream (its epoch and cursor) alive.
    fn touch(&mut self, limits: Limits) {
        let now = Instant::now();
        self.trim(limits, now);
        self.expires = now + limits.ttl + POSITION_GRACE;
    }

    fn trim(&mut self, limits: Limits, now: Instant) {
        while self.entries.len() > limits.size {
            self.entries.pop_front();
        }
        while self.entries.front().is_some_and(|(at, _)| now.duration_since(*at) > limits.ttl) {
            self.entries.pop_front();
        }
    }
}

/// This store's epoch names: `STORE` `CREATED` `s` `SEQ` for a stream, `STORE` `SECOND` for a
/// look at a stream that does not exist (all hex). `STORE` is random per store, so nothing
/// from before a restart is mistaken for a position of this one.
struct Epochs {
    store: String,
    /// Makes stream epochs unique even if the clock goes back.
    seq: AtomicU64,
}

impl Epochs {
    fn new() -> Self {
        Self { store: new_epoch(), seq: AtomicU64::new(0) }
    }

    /// A new stream's epoch and its creation second.
    fn create(&self) -> (String, u64) {
        let now = unix_secs();
        (format!("{}{now:x}s{:x}", self.store, self.seq.fetch_add(1, Relaxed)), now)
    }

    /// The epoch reported for a stream that does not exist.
    fn look(&self) -> String {
        format!("{}{:x}", self.store, unix_secs())
    }

    /// The second of a look epoch of this store.
    fn looked_at(&self, epoch: &str) -> Option<u64> {
        let rest = epoch.strip_prefix(&*self.store)?;
        u64::from_str_radix(rest, 16).ok()
    }

    /// Whether a client at `p` is at offset 0 of a look that covers a stream created at
    /// `created` (`None`: the stream still does not exist).
    fn starts(&self, p: &Position, created: Option<u64>, limits: Limits) -> bool {
        p.offset == 0 && self.covers(&p.epoch, created, limits)
    }

    /// Whether a client at offset 0 of look epoch `epoch` has missed nothing of a stream
    /// created at `created` (`None`: the stream still does not exist).
    fn covers(&self, epoch: &str, created: Option<u64>, limits: Limits) -> bool {
        let Some(looked) = self.looked_at(epoch) else { return false };
        // Whole seconds on both ends: a second less than the shortest lifetime.
        let lifetime = (limits.ttl + POSITION_GRACE).as_secs().saturating_sub(1);
        let until = created.unwrap_or_else(unix_secs);
        looked <= until && until - looked < lifetime
    }
}

fn unix_secs() -> u64 {
    crate::clock::now_millis() / 1000
}

type Key = (u32, u8, Box<str>);
type Shard = HashMap<Key, Arc<Mutex<Stream>>>;

/// In-memory history of every stream on this node.
pub(crate) struct MemoryHistory {
    /// Streams by key; a shard's lock is held to find or create a stream, or to sweep it.
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Stream lookups so far; paces the sweep.
    lookups: AtomicU64,
    epochs: Epochs,
}

impl Default for MemoryHistory {
    fn default() -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::default()).collect();
        Self { shards, hasher: RandomState::new(), lookups: AtomicU64::new(0), epochs: Epochs::new() }
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
    /// The shard `target`'s stream lives in, locked, with its key; every lookup paces the
    /// sweep. A shard's lock is held only to find, create or sweep streams.
    fn shard(&self, tenant: u32, target: Target<'_>) -> (std::sync::MutexGuard<'_, Shard>, Key) {
        let n = self.lookups.fetch_add(1, Relaxed);
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(((n / SWEEP_EVERY) as usize) % SHARDS, Instant::now());
        }
        let key = key(tenant, target);
        let shard = &self.shards[(self.hasher.hash_one(&key) as usize) % SHARDS];
        (shard.lock().expect("history lock"), key)
    }

    /// A stream's own lock is held while one event is appended and pushed to its
    /// connections, or while a read takes its snapshot; never across an await, and never
    /// together with another stream's. Only appends create a stream (`stream`); reads `find`.
    fn stream(&self, tenant: u32, target: Target<'_>) -> Arc<Mutex<Stream>> {
        let (mut shard, key) = self.shard(tenant, target);
        shard.entry(key).or_insert_with(|| Arc::new(Mutex::new(Stream::new(&self.epochs)))).clone()
    }

    fn find(&self, tenant: u32, target: Target<'_>) -> Option<Arc<Mutex<Stream>>> {
        let (shard, key) = self.shard(tenant, target);
        shard.get(&key).cloned()
    }

    /// Drops the shard's streams that expired and that nobody holds right now (a holder
    /// would have to find the stream through this shard's lock, which the sweep holds).
    fn sweep(&self, shard: usize, now: Instant) {
        let mut shard = self.shards[shard].lock().expect("history lock");
        shard.retain(|_, stream| Arc::strong_count(stream) > 1 || stream.try_lock().map_or(true, |s| s.expires > now));
    }

    fn streams(&self) -> usize {
        self.shards.iter().map(|s| s.lock().expect("history lock").len()).sum()
    }

    /// Appends one event: `encode` builds its frame for the new position, `deliver` pushes
    /// it to the stream's connections before the next event of the stream can be appended.
    pub(crate) fn append(
        &self,
        tenant: u32,
        target: Target<'_>,
        limits: Limits,
        filter: Option<&Arc<Filter>>,
        encode: impl FnOnce(&Position) -> Bytes,
        deliver: impl FnOnce(&Bytes, &Position),
    ) {
        let stream = self.stream(tenant, target);
        let mut stream = stream.lock().expect("stream lock");
        stream.last += 1;
        let position = stream.position();
        let frame = encode(&position);
        deliver(&frame, &position);
        stream.entries.push_back((Instant::now(), Stored { offset: position.offset, frame, filter: filter.cloned() }));
        stream.touch(limits);
    }

    fn snapshot(&self, tenant: &Tenant, target: Target<'_>, from: Start<'_>) -> Replay {
        let limits = Limits::from(tenant.config.history);
        let Some(stream) = self.find(tenant.index, target) else { return self.absent(from, limits) };
        let mut stream = stream.lock().expect("stream lock");
        stream.touch(limits);
        let covered = from.since.is_some_and(|p| self.epochs.starts(p, Some(stream.created), limits));
        let origin = covered.then(|| Position { epoch: stream.epoch.clone(), offset: 0 });
        let from = from.starting_at_origin(origin.as_ref());
        let oldest = stream.entries.front().map_or(stream.last + 1, |(_, e)| e.offset);
        let (start, recovered) = plan(from, &stream.epoch, stream.last, stream.acked, oldest);
        let events = match start {
            Some(s) => stream.entries.iter().filter(|(_, e)| e.offset > s).map(|(_, e)| e.clone()).collect(),
            None => Vec::new(),
        };
        Replay { recovered, events, position: Some(stream.position()), acked: stream.acked }
    }

    /// The snapshot of a stream that holds nothing: offset 0 of a look epoch. A client that
    /// comes with a position of an earlier incarnation missed what it held.
    fn absent(&self, from: Start<'_>, limits: Limits) -> Replay {
        let recovered = from.since.is_none_or(|p| self.epochs.starts(p, None, limits));
        let position = Position { epoch: self.epochs.look(), offset: 0 };
        Replay { recovered, events: Vec::new(), position: Some(position), acked: 0 }
    }

    fn ack_now(&self, tenant: &Tenant, user: &str, position: &Position) -> Result<CursorMove, HistoryError> {
        let limits = Limits::from(tenant.config.history);
        let Some(stream) = self.find(tenant.index, Target::User(user)) else {
            // Nothing to ack in a stream that holds nothing; offset 0 of a look is no news.
            if self.epochs.starts(position, None, limits) {
                let cursor = Cursor { epoch: self.epochs.look(), offset: 0, acked: 0 };
                return Ok(CursorMove { cursor, moved: false });
            }
            let p = position.clone();
            return Err(HistoryError::StalePosition(p.epoch, p.offset, self.epochs.look(), 0));
        };
        let mut stream = stream.lock().expect("stream lock");
        if self.epochs.starts(position, Some(stream.created), limits) {
            stream.touch(limits);
            let cursor = Cursor { epoch: stream.epoch.clone(), offset: stream.last, acked: stream.acked };
            return Ok(CursorMove { cursor, moved: false });
        }
        if position.epoch != stream.epoch || position.offset > stream.last {
            let p = position.clone();
            return Err(HistoryError::StalePosition(p.epoch, p.offset, stream.epoch.clone(), stream.last));
        }
        stream.touch(limits);
        let moved = position.offset > stream.acked;
        stream.acked = stream.acked.max(position.offset);
        Ok(CursorMove {
            cursor: Cursor { epoch: stream.epoch.clone(), offset: stream.last, acked: stream.acked },
            moved,
        })
    }
}

impl History for MemoryHistory {
    fn streams_kept(&self) -> Option<usize> {
        Some(self.streams())
    }

    fn forget<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<usize, HistoryError>> {
        let mut dropped = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().expect("history lock");
            let before = shard.len();
            shard.retain(|key, _| key.0 != tenant.index);
            dropped += before - shard.len();
        }
        Box::pin(async move { Ok(dropped) })
    }

    fn read<'a>(
        &'a self,
        tenant: &'a Tenant,
        target: Target<'a>,
        from: Start<'a>,
    ) -> BoxFuture<'a, Result<Replay, HistoryError>> {
        Box::pin(async move { Ok(self.snapshot(tenant, target, from)) })
    }

    fn ack<'a>(
        &'a self,
        tenant: &'a Tenant,
        user: &'a str,
        position: &'a Position,
    ) -> BoxFuture<'a, Result<CursorMove, HistoryError>> {
        Box::pin(async move { self.ack_now(tenant, user, position) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::tenant::Tenants;

    fn tenant(acks: bool) -> Arc<Tenant> {
        let toml = format!("[tenants.t]\npublish_key = \"key-1234\"\nhistory = {{ size = 3, acks = {acks} }}\n");
        let config = Config::from_toml(&toml, "test", []).unwrap();
        Tenants::from_config(&config).get("t").unwrap().clone()
    }

    fn append(h: &MemoryHistory, t: &Tenant, n: u8) {
        let limits = Limits::from(t.config.history);
        h.append(t.index, Target::User("u"), limits, None, |_| Bytes::from(vec![n]), |_, _| {});
    }

    fn read(h: &MemoryHistory, t: &Tenant, since: Option<&Position>, unacked: bool) -> Replay {
        h.snapshot(t, Target::User("u"), Start { since, unacked })
    }

    #[test]
    fn replays_after_a_position_and_reports_trimming() {
        let (h, t) = (MemoryHistory::default(), tenant(false));
        for n in 1..=5 {
            append(&h, &t, n);
        }
        let epoch = read(&h, &t, None, false).position.unwrap().epoch;
        let at = |offset| Position { epoch: epoch.clone(), offset };
        let replay = read(&h, &t, Some(&at(3)), false);
        assert!(replay.recovered);
        assert_eq!(replay.events.iter().map(|e| e.frame.clone()).collect::<Vec<_>>(), [vec![4], vec![5]]);
        assert_eq!(replay.position, Some(at(5)));
        // Offsets 1 and 2 were trimmed (size 3 keeps 3..=5): resuming after 1 misses 2.
        let replay = read(&h, &t, Some(&at(1)), false);
        assert!(!replay.recovered);
        assert_eq!(replay.events.len(), 3);
        let other_epoch = Position { epoch: "other".into(), offset: 4 };
        let replay = read(&h, &t, Some(&other_epoch), false);
        assert!(!replay.recovered);
        assert_eq!(replay.events.len(), 3, "another epoch gets everything kept");
        let replay = read(&h, &t, Some(&at(5)), false);
        assert!(replay.recovered && replay.events.is_empty());
    }

    #[test]
    fn acks_move_the_read_cursor_forward_only() {
        let (h, t) = (MemoryHistory::default(), tenant(true));
        for n in 1..=3 {
            append(&h, &t, n);
        }
        let epoch = read(&h, &t, None, false).position.unwrap().epoch;
        let at = |offset| Position { epoch: epoch.clone(), offset };
        let acked = |m: CursorMove| (m.cursor.acked, m.moved);
        assert_eq!(h.ack_now(&t, "u", &at(2)).map(acked).unwrap(), (2, true));
        assert_eq!(h.ack_now(&t, "u", &at(2)).map(acked).unwrap(), (2, false), "the same ack again moves nothing");
        assert_eq!(h.ack_now(&t, "u", &at(1)).map(acked).unwrap(), (2, false));
        assert!(matches!(h.ack_now(&t, "u", &at(4)), Err(HistoryError::StalePosition(..))));
        let replay = read(&h, &t, None, false);
        assert_eq!(replay.position.unwrap().offset - replay.acked, 1);
        // A device without a position gets what is unacked; one ahead of the cursor too.
        assert_eq!(read(&h, &t, None, true).events.len(), 1);
        assert_eq!(read(&h, &t, Some(&at(3)), true).events.len(), 1);
    }

    #[test]
    fn a_stream_that_never_held_an_event_keeps_nothing() {
        let (h, t) = (MemoryHistory::default(), tenant(true));
        let look = read(&h, &t, None, true);
        assert!(look.recovered && look.events.is_empty());
        let look = look.position.unwrap();
        assert_eq!(look.offset, 0);
        // Resuming from the look, and acking it, keeps nothing either.
        assert!(read(&h, &t, Some(&look), false).recovered);
        let acked = h.ack_now(&t, "u", &look).unwrap();
        assert_eq!((acked.cursor.acked, acked.moved), (0, false));
        assert_eq!(h.streams(), 0);
        // Events appended since are all replayed to a client that resumes from the look.
        for n in 1..=2 {
            append(&h, &t, n);
        }
        let replay = read(&h, &t, Some(&look), false);
        assert!(replay.recovered);
        assert_eq!(replay.events.iter().map(|e| e.frame.clone()).collect::<Vec<_>>(), [vec![1], vec![2]]);
        assert_eq!(replay.position.unwrap().offset, 2);
    }

    #[test]
    fn a_look_only_covers_this_store_and_a_stream_created_soon_enough() {
        let (h, t) = (MemoryHistory::default(), tenant(false));
        let elsewhere = read(&MemoryHistory::default(), &t, None, false).position.unwrap();
        assert!(!read(&h, &t, Some(&elsewhere), false).recovered);
        append(&h, &t, 1);
        assert!(!read(&h, &t, Some(&elsewhere), false).recovered);
        let limits = Limits::from(t.config.history);
        let created = h.find(t.index, Target::User("u")).unwrap().lock().unwrap().created;
        let look = |at: u64| format!("{}{at:x}", h.epochs.store);
        assert!(h.epochs.covers(&look(created), Some(created), limits));
        assert!(h.epochs.covers(&look(created - 60), Some(created), limits));
        // A stream created before the look, or long after it (an earlier incarnation may
        // have come and gone in between), is not covered.
        assert!(!h.epochs.covers(&look(created + 1), Some(created), limits));
        let long = (limits.ttl + POSITION_GRACE).as_secs();
        assert!(!h.epochs.covers(&look(created - long), Some(created), limits));
        // A stream's own epoch is not a look.
        let own = read(&h, &t, None, false).position.unwrap();
        assert!(!h.epochs.covers(&own.epoch, Some(created), limits));
    }

    #[tokio::test]
    async fn a_deleted_tenants_streams_are_dropped() {
        let h = MemoryHistory::default();
        let toml = "[tenants.a]\npublish_key = \"key-1234\"\n[tenants.b]\npublish_key = \"key-5678\"\n";
        let tenants = Tenants::from_config(&Config::from_toml(toml, "test", []).unwrap());
        let (a, b) = (tenants.get("a").unwrap().clone(), tenants.get("b").unwrap().clone());
        for n in 0..3 {
            let limits = Limits::from(a.config.history);
            h.append(a.index, Target::Channel(&format!("c{n}")), limits, None, |_| Bytes::new(), |_, _| {});
        }
        append(&h, &b, 1);
        assert_eq!(h.forget(&a).await.unwrap(), 3);
        assert_eq!(h.streams(), 1);
        assert_eq!(read(&h, &b, None, false).position.unwrap().offset, 1);
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[test]
    fn expired_streams_are_dropped_and_come_back_with_a_new_epoch() {
        let h = MemoryHistory::default();
        let limits = Limits { size: 10, ttl: std::time::Duration::from_secs(1) };
        for i in 0..100 {
            let user = format!("u{i}");
            h.append(0, Target::User(&user), limits, None, |_| Bytes::new(), |_, _| {});
        }
        let first = h.stream(0, Target::User("u1")).lock().unwrap().epoch.clone();
        assert_eq!(h.streams(), 100);
        // Nothing has expired yet: a sweep keeps everything.
        (0..SHARDS).for_each(|i| h.sweep(i, Instant::now()));
        assert_eq!(h.streams(), 100);
        let later = Instant::now() + limits.ttl + POSITION_GRACE + std::time::Duration::from_secs(1);
        // A stream someone holds survives the sweep.
        let held = h.stream(0, Target::User("u2"));
        (0..SHARDS).for_each(|i| h.sweep(i, later));
        assert_eq!(h.streams(), 1);
        drop(held);
        assert_ne!(h.stream(0, Target::User("u1")).lock().unwrap().epoch, first);
    }
}
