//! The sharded registry of local connections: tenant -> user -> connections, tenant ->
//! channel -> subscribers, tenant -> everyone (broadcast). Delivery encodes each event once
//! per target stream and pushes the shared bytes into every subscriber's outbox.
//!
//! Channels with subscribers who asked for delta updates keep their last event: the next
//! event published with `delta` goes to subscribers holding that one as the difference
//! from it, made once.
//!
//! Locks are short and synchronous: a shard's `RwLock` is held while one stream's
//! subscribers are pushed to (each push takes only that connection's outbox mutex, and a
//! delta channel's `last` mutex is held around them), never across an await.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::Identity;
use crate::event::Event;
use crate::fanout::{Kill, Outbox, Pushed, QueueLimits};
use crate::gate::{Admit, Gates};
use crate::metrics::ShrinkMetrics;
use crate::protocol::Dialect;
use crate::protocol::delta::Base;
use crate::protocol::pusher::SocketId;
use crate::segment::{Filter, Segment, Verdicts};
use crate::stream::{Position, Replay, Target};
use crate::tenant::Tenant;

const SHARDS: usize = 64;

/// A connection as the hub sees it.
pub(crate) struct Conn {
    pub id: u64,
    pub tenant: Arc<Tenant>,
    pub user: Box<str>,
    /// The connection's subscriber attributes, shared with equal connections.
    pub segment: Arc<Segment>,
    pub outbox: Outbox,
    /// Streams the connection is resuming: their live events wait until the replay is queued.
    pub gates: Gates,
    /// The channels the connection is subscribed to. Locked by the connection's own task and
    /// by backends' subscription requests, never across an await.
    pub subscriptions: Mutex<Vec<Box<str>>>,
    /// Whether the connection negotiated permessage-deflate: it gets events' compressed
    /// frames.
    pub deflate: bool,
    /// The protocol it speaks: a Pusher connection gets events' Pusher frames.
    pub dialect: Dialect,
}

impl Conn {
    pub(crate) fn subscribed_to(&self, channel: &str) -> bool {
        self.subscriptions.lock().expect("subscriptions lock").iter().any(|s| **s == *channel)
    }
}

/// Adds `n` to `key`'s count, unless `key` is new and `counts` already has `cap` keys;
/// returns false then.
pub(crate) fn count_capped<K: Ord>(counts: &mut BTreeMap<K, u64>, key: K, n: u64, cap: usize) -> bool {
    let len = counts.len();
    match counts.entry(key) {
        std::collections::btree_map::Entry::Occupied(mut e) => *e.get_mut() += n,
        std::collections::btree_map::Entry::Vacant(e) if len < cap => drop(e.insert(n)),
        std::collections::btree_map::Entry::Vacant(_) => return false,
    }
    true
}

/// Shrinks a map that has become mostly empty, so the memory of a crowd that left comes
/// back. Halving only below a quarter full keeps the rehashing amortised.
fn give_back<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

/// A channel's local subscribers, and what delta updates need of it.
#[derive(Default)]
struct Channel {
    subs: HashMap<u64, Sub>,
    /// How many of `subs` asked for delta updates (changed under the shard's write lock).
    deltas: usize,
    /// The channel's last event while it has delta subscribers: the base of the next delta.
    /// Held for the whole of a delivery to such a channel, so every subscriber's queue gets
    /// the channel's events in the order their deltas chain in.
    last: Mutex<Option<Base>>,
}

/// One connection's subscription to a channel.
struct Sub {
    conn: Arc<Conn>,
    /// It asked for delta updates.
    delta: bool,
    /// It was handed the channel's last event (`Channel::last`), so the next can be a delta.
    holds: AtomicBool,
}

#[derive(Default)]
struct TenantShard {
    /// A user's devices: usually few, so a vector.
    users: HashMap<Box<str>, Vec<Arc<Conn>>>,
    channels: HashMap<Box<str>, Channel>,
    /// This shard's slice of the tenant's connections, by connection id.
    everyone: HashMap<u64, Arc<Conn>>,
}

type Shard = HashMap<u32, TenantShard>;

/// Local connection registry and fan-out.
pub(crate) struct Hub {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    next_id: AtomicU64,
    limits: QueueLimits,
    pace: Pace,
    compression: ShrinkMetrics,
    deltas: ShrinkMetrics,
    /// Fresh credentials accepted for connections by another task (an SSE stream's POST),
    /// until each connection's own task takes them.
    refreshes: ByConn<Identity>,
    /// Channels subscription tokens granted to connections: they stay when the connection's
    /// own grants change.
    token_grants: ByConn<Vec<Box<str>>>,
}

/// Values kept for some connections apart from their `Conn`, so that the many connections
/// without one cost nothing: a map by connection id, not locked while it is empty.
struct ByConn<T> {
    /// Locked briefly, never across an await.
    map: Mutex<HashMap<u64, T>>,
    /// Entries in `map`: a connection that looks while it is 0 reads this and nothing else.
    count: AtomicUsize,
}

impl<T> Default for ByConn<T> {
    fn default() -> Self {
        Self { map: Mutex::default(), count: AtomicUsize::new(0) }
    }
}

impl<T> ByConn<T> {
    /// Sets `conn`'s entry.
    fn put(&self, conn: u64, value: T) {
        if self.map.lock().expect("per-connection map lock").insert(conn, value).is_none() {
            self.count.fetch_add(1, Relaxed);
        }
    }

    /// Changes `conn`'s entry, made with `T::default()` if it has none.
    fn update(&self, conn: u64, change: impl FnOnce(&mut T))
    where
        T: Default,
    {
        let mut map = self.map.lock().expect("per-connection map lock");
        let entry = map.entry(conn).or_insert_with(|| {
            self.count.fetch_add(1, Relaxed);
            T::default()
        });
        change(entry);
    }

    fn take(&self, conn: u64) -> Option<T> {
        if self.count.load(Relaxed) == 0 {
            return None;
        }
        let taken = self.map.lock().expect("per-connection map lock").remove(&conn);
        if taken.is_some() {
            self.count.fetch_sub(1, Relaxed);
        }
        taken
    }

    fn get(&self, conn: u64) -> Option<T>
    where
        T: Clone,
    {
        if self.count.load(Relaxed) == 0 {
            return None;
        }
        self.map.lock().expect("per-connection map lock").get(&conn).cloned()
    }
}

/// How one encoded frame of a stream is delivered.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Routing<'a> {
    /// A route plugin's filter: only subscribers whose segment passes get the frame.
    pub filter: Option<&'a Filter>,
    /// The frame's position in the stream's history, when the tenant keeps one.
    pub position: Option<&'a Position>,
    /// The publisher asked for delta updates.
    pub delta: bool,
    /// The Pusher connection that published it (`socket_id`), which does not get it.
    pub except: Option<SocketId>,
}

/// Whether a broadcast writes to sockets itself. Writing from the fan-out saves waking
/// every connection's task, but puts every write on the publishing thread, one frame per
/// syscall. That is cheaper while broadcasts leave the node idle in between; when they come
/// back to back, queueing lets the connections' tasks write in parallel on every worker
/// and batch several frames per `writev`. So a broadcast writes directly only if the time
/// since the previous one ended is at least what that one took, and that one did not find
/// connections still behind (their tasks busy with earlier frames).
struct Pace {
    /// Microseconds since `origin`: when the last broadcast fan-out ended, and how long it took.
    ended: AtomicU64,
    took: AtomicU64,
    /// Whether the last one found more than a tenth of its connections behind.
    behind: AtomicBool,
    origin: std::time::Instant,
}

impl Pace {
    fn new() -> Self {
        let origin = std::time::Instant::now();
        Self { ended: AtomicU64::new(0), took: AtomicU64::new(0), behind: AtomicBool::new(false), origin }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    fn direct(&self) -> bool {
        !self.behind.load(Relaxed) && self.now().saturating_sub(self.ended.load(Relaxed)) >= self.took.load(Relaxed)
    }

    fn done(&self, started: u64, d: Delivery) {
        let now = self.now();
        self.took.store(now.saturating_sub(started), Relaxed);
        self.ended.store(now, Relaxed);
        self.behind.store(d.behind * 10 > d.queued, Relaxed);
    }
}

/// How many local connections one delivery reached.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub queued: u64,
    /// Of `queued`, queued behind frames still waiting.
    pub behind: u64,
    /// Of `queued`, written to the socket by the fan-out itself.
    pub written: u64,
    pub dropped: u64,
    pub slow_disconnects: u64,
}

impl Delivery {
    fn add(&mut self, other: Delivery) {
        self.queued += other.queued;
        self.behind += other.behind;
        self.written += other.written;
        self.dropped += other.dropped;
        self.slow_disconnects += other.slow_disconnects;
    }
}

/// Tells a connection whose tenant keeps history to reconnect and resume (after up to
/// `spread`); true if it was told.
/// Pusher connections cannot resume, so they are not told.
fn tell_resync(conn: &Conn, spread: Duration) -> bool {
    if !conn.tenant.config.history.enabled() || conn.dialect == Dialect::Pusher {
        return false;
    }
    let reason = "events may have been missed";
    conn.outbox.push_control(crate::protocol::reconnect(conn.id, spread, reason));
    conn.outbox.kill(Kill::Resync);
    true
}

/// Tells a connection the node is shutting down: a native one gets a `reconnect` frame
/// (after up to `spread`), then every one flushes its queue and closes with 1001.
pub(crate) fn tell_drain(conn: &Conn, spread: Duration) {
    if conn.dialect == Dialect::Native {
        conn.outbox.push_control(crate::protocol::reconnect(conn.id, spread, "server shutting down"));
    }
    conn.outbox.kill(Kill::Drain);
}

/// Adds one delivery's outcome to the tenant's counters.
fn count(tenant: &Tenant, total: Delivery) {
    let m = &tenant.metrics;
    m.frames_enqueued.fetch_add(total.queued, Relaxed);
    m.frames_delivered.fetch_add(total.written, Relaxed);
    m.frames_dropped.fetch_add(total.dropped, Relaxed);
    m.slow_client_disconnects.fetch_add(total.slow_disconnects, Relaxed);
}

impl Hub {
    pub(crate) fn new(limits: QueueLimits) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
            next_id: AtomicU64::new(1),
            limits,
            pace: Pace::new(),
            compression: ShrinkMetrics::default(),
            deltas: ShrinkMetrics::default(),
            refreshes: ByConn::default(),
            token_grants: ByConn::default(),
        }
    }

    /// What making delta frames did on this node.
    pub(crate) fn deltas(&self) -> &ShrinkMetrics {
        &self.deltas
    }

    /// What compressing frames for permessage-deflate did on this node.
    pub(crate) fn compression(&self) -> &ShrinkMetrics {
        &self.compression
    }

    /// Hands `identity` to connection `conn`'s task, which takes it when next woken.
    pub(crate) fn refreshed(&self, conn: u64, identity: Identity) {
        self.refreshes.put(conn, identity);
    }

    /// Fresh credentials handed to connection `conn`, if any.
    pub(crate) fn take_refreshed(&self, conn: u64) -> Option<Identity> {
        self.refreshes.take(conn)
    }

    /// Remembers that a subscription token granted `channel` to connection `conn`.
    pub(crate) fn grant_channel(&self, conn: u64, channel: &str) {
        self.token_grants.update(conn, |channels| {
            if !channels.iter().any(|c| **c == *channel) {
                channels.push(channel.into());
            }
        });
    }

    /// The channels subscription tokens granted to connection `conn`.
    pub(crate) fn granted_channels(&self, conn: u64) -> Vec<Box<str>> {
        self.token_grants.get(conn).unwrap_or_default()
    }

    /// Forgets what was kept for an ended connection.
    pub(crate) fn forget_conn(&self, conn: u64) {
        self.refreshes.take(conn);
        self.token_grants.take(conn);
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }

    fn shard_of(&self, key: impl Hash) -> &RwLock<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    fn everyone_shard(&self, conn_id: u64) -> &RwLock<Shard> {
        &self.shards[(conn_id as usize) % SHARDS]
    }

    /// Adds a connection to its user stream (unless it is anonymous: no user) and its
    /// tenant's broadcast.
    pub(crate) fn register(&self, conn: &Arc<Conn>) {
        let t = conn.tenant.index;
        if !conn.user.is_empty() {
            self.shard_of((t, 0u8, &*conn.user))
                .write()
                .expect("hub lock")
                .entry(t)
                .or_default()
                .users
                .entry(conn.user.clone())
                .or_default()
                .push(conn.clone());
        }
        self.everyone_shard(conn.id)
            .write()
            .expect("hub lock")
            .entry(t)
            .or_default()
            .everyone
            .insert(conn.id, conn.clone());
    }

    /// Removes a connection from everything it was in; `channels` are its subscriptions.
    pub(crate) fn unregister<'a>(&self, conn: &Conn, channels: impl IntoIterator<Item = &'a str>) {
        for channel in channels {
            self.unsubscribe(conn, channel);
        }
        let t = conn.tenant.index;
        if !conn.user.is_empty() {
            let mut shard = self.shard_of((t, 0u8, &*conn.user)).write().expect("hub lock");
            if let Some(ts) = shard.get_mut(&t)
                && let Some(devices) = ts.users.get_mut(&*conn.user)
            {
                devices.retain(|c| c.id != conn.id);
                if devices.is_empty() {
                    ts.users.remove(&*conn.user);
                    give_back(&mut ts.users);
                }
            }
        }
        let mut shard = self.everyone_shard(conn.id).write().expect("hub lock");
        if let Some(ts) = shard.get_mut(&t) {
            ts.everyone.remove(&conn.id);
            give_back(&mut ts.everyone);
        }
    }

    /// How many local connections `user` has.
    pub(crate) fn user_connections(&self, tenant: &Tenant, user: &str) -> usize {
        let t = tenant.index;
        let shard = self.shard_of((t, 0u8, user)).read().expect("hub lock");
        shard.get(&t).and_then(|ts| ts.users.get(user)).map_or(0, Vec::len)
    }

    /// Every local user of `tenant` with their connection count.
    pub(crate) fn user_counts(&self, tenant: &Tenant) -> Vec<(Box<str>, u32)> {
        self.tenant_counts(tenant, |ts| ts.users.iter().map(|(u, d)| (u.clone(), d.len() as u32)).collect())
    }

    /// Every channel of `tenant` with local subscribers, with their count.
    pub(crate) fn channel_counts(&self, tenant: &Tenant) -> Vec<(Box<str>, u32)> {
        self.tenant_counts(tenant, |ts| ts.channels.iter().map(|(c, ch)| (c.clone(), ch.subs.len() as u32)).collect())
    }

    fn tenant_counts(
        &self,
        tenant: &Tenant,
        counts: impl Fn(&TenantShard) -> Vec<(Box<str>, u32)>,
    ) -> Vec<(Box<str>, u32)> {
        let shards = self.shards.iter().map(|s| s.read().expect("hub lock").get(&tenant.index).map(&counts));
        shards.flatten().flatten().collect()
    }

    /// The local connections of `user`.
    pub(crate) fn user_conns(&self, tenant: &Tenant, user: &str) -> Vec<Arc<Conn>> {
        let t = tenant.index;
        let shard = self.shard_of((t, 0u8, user)).read().expect("hub lock");
        shard.get(&t).and_then(|ts| ts.users.get(user)).cloned().unwrap_or_default()
    }

    /// Ends a resume of `target` on `conn` (whose gate was closed before the history read):
    /// queues the replayed events, honouring their route filters, then the live events the
    /// gate held that the replay did not cover, and opens the gate.
    pub(crate) fn resume(&self, conn: &Arc<Conn>, target: Target<'_>, replay: &Replay) {
        let mut total = Delivery::default();
        let complete = conn.gates.open(target, replay.position.as_ref(), |held| match held {
            // A replay is a catch-up, not a backlog: it is exempt from the queue limits (it
            // is bounded by `history.size`).
            None => {
                for e in &replay.events {
                    if e.filter.as_ref().is_none_or(|f| f.matches(&conn.segment)) {
                        // Stored frames are native; a Pusher connection gets each one's Pusher form.
                        let frame = match conn.dialect {
                            Dialect::Native => e.frame.clone(),
                            Dialect::Pusher => {
                                let Some(frame) = crate::protocol::pusher::event_from(&e.frame) else { continue };
                                frame
                            }
                        };
                        if conn.outbox.push_exempt(frame) {
                            total.queued += 1;
                        } else {
                            total.dropped += 1;
                        }
                    }
                }
            }
            Some(frame) => {
                self.push_one(conn, frame, false, &mut total);
            }
        });
        if !complete {
            // Live events were lost while the gate held too many; the client resumes again.
            conn.outbox.kill(Kill::SlowClient);
            total.slow_disconnects += 1;
        }
        count(&conn.tenant, total);
    }

    /// Tells every connection of tenants with history to reconnect and resume (after a
    /// `reconnect` frame with a delay up to `spread`, closed with 1012): live events may
    /// have passed this node by while its broker subscriptions were down. Returns how many.
    pub(crate) fn resync(&self, spread: Duration) -> usize {
        let mut n = 0;
        for shard in &self.shards {
            let shard = shard.read().expect("hub lock");
            n += shard.values().flat_map(|ts| ts.everyone.values()).filter(|c| tell_resync(c, spread)).count();
        }
        n
    }

    /// [`Hub::resync`] for the local connections of one stream.
    pub(crate) fn resync_stream(&self, tenant: &Tenant, target: Target<'_>, spread: Duration) -> usize {
        let t = tenant.index;
        match target {
            Target::User(user) => {
                let shard = self.shard_of((t, 0u8, user)).read().expect("hub lock");
                let devices = shard.get(&t).and_then(|ts| ts.users.get(user));
                devices.into_iter().flatten().filter(|c| tell_resync(c, spread)).count()
            }
            Target::Channel(channel) => {
                let shard = self.shard_of((t, 1u8, channel)).read().expect("hub lock");
                let subs = shard.get(&t).and_then(|ts| ts.channels.get(channel));
                subs.into_iter().flat_map(|c| c.subs.values()).filter(|s| tell_resync(&s.conn, spread)).count()
            }
            Target::Broadcast => {
                let mut n = 0;
                for shard in &self.shards {
                    let shard = shard.read().expect("hub lock");
                    n += shard
                        .get(&t)
                        .into_iter()
                        .flat_map(|ts| ts.everyone.values())
                        .filter(|c| tell_resync(c, spread))
                        .count();
                }
                n
            }
        }
    }

    /// The users subscribed to `channel` on this node with their connection counts, at most
    /// `cap` users (true when there were more).
    pub(crate) fn channel_users(&self, tenant: &Tenant, channel: &str, cap: usize) -> (BTreeMap<Box<str>, u64>, bool) {
        let t = tenant.index;
        let shard = self.shard_of((t, 1u8, channel)).read().expect("hub lock");
        let mut users: BTreeMap<Box<str>, u64> = BTreeMap::new();
        let mut truncated = false;
        for sub in shard.get(&t).and_then(|ts| ts.channels.get(channel)).into_iter().flat_map(|c| c.subs.values()) {
            truncated |= !count_capped(&mut users, sub.conn.user.clone(), 1, cap);
        }
        (users, truncated)
    }

    /// The local subscribers of `channel`.
    pub(crate) fn channel_conns(&self, tenant: &Tenant, channel: &str) -> Vec<Arc<Conn>> {
        let t = tenant.index;
        let shard = self.shard_of((t, 1u8, channel)).read().expect("hub lock");
        let subs = shard.get(&t).and_then(|ts| ts.channels.get(channel));
        subs.into_iter().flat_map(|c| c.subs.values()).map(|s| s.conn.clone()).collect()
    }

    /// Closes every local connection of `user` with 4005, after a `disconnected` frame
    /// carrying `reason`; returns how many. Connections already closing are left alone, so
    /// a command that reaches the node twice sends one frame.
    pub(crate) fn disconnect_user(&self, tenant: &Tenant, user: &str, reason: Option<&str>) -> usize {
        let t = tenant.index;
        let shard = self.shard_of((t, 0u8, user)).read().expect("hub lock");
        let conns = shard.get(&t).and_then(|ts| ts.users.get(user)).map_or(&[][..], Vec::as_slice);
        let frame = crate::protocol::disconnected(reason);
        let mut closed = 0;
        for conn in conns.iter().filter(|c| c.outbox.killed().is_none()) {
            conn.outbox.push_control(frame.clone());
            conn.outbox.kill(Kill::Disconnected);
            closed += 1;
        }
        closed
    }

    /// Tells every local connection the node is shutting down ([`tell_drain`]): returns how
    /// many. A connection that joins later learns it from the drain signal itself
    /// (`session::drain_if_draining`).
    pub(crate) fn drain(&self, spread: Duration) -> usize {
        let mut n = 0;
        for shard in &self.shards {
            let shard = shard.read().expect("hub lock");
            for conn in shard.values().flat_map(|ts| ts.everyone.values()) {
                tell_drain(conn, spread);
                n += 1;
            }
        }
        n
    }

    /// Closes every local connection of `tenant` (deleted): returns how many.
    pub(crate) fn close_tenant(&self, tenant: &Tenant) -> usize {
        let mut n = 0;
        for shard in &self.shards {
            let shard = shard.read().expect("hub lock");
            for conn in shard.get(&tenant.index).into_iter().flat_map(|ts| ts.everyone.values()) {
                conn.outbox.kill(Kill::TenantDeleted);
                n += 1;
            }
        }
        n
    }

    /// Adds a channel subscription, with delta updates if `delta`; false if it already
    /// existed (it starts over: its next event is whole).
    pub(crate) fn subscribe(&self, conn: &Arc<Conn>, channel: &str, delta: bool) -> bool {
        let t = conn.tenant.index;
        let mut shard = self.shard_of((t, 1u8, channel)).write().expect("hub lock");
        let ch = shard.entry(t).or_default().channels.entry(channel.into()).or_default();
        ch.deltas += usize::from(delta);
        let old = ch.subs.insert(conn.id, Sub { conn: conn.clone(), delta, holds: AtomicBool::new(false) });
        ch.deltas -= usize::from(old.as_ref().is_some_and(|s| s.delta));
        old.is_none()
    }

    /// Removes a channel subscription; false if there was none.
    pub(crate) fn unsubscribe(&self, conn: &Conn, channel: &str) -> bool {
        let t = conn.tenant.index;
        let mut shard = self.shard_of((t, 1u8, channel)).write().expect("hub lock");
        let Some(ts) = shard.get_mut(&t) else {
            return false;
        };
        let Some(ch) = ts.channels.get_mut(channel) else {
            return false;
        };
        let Some(removed) = ch.subs.remove(&conn.id) else {
            return false;
        };
        give_back(&mut ch.subs);
        ch.deltas -= usize::from(removed.delta);
        if ch.deltas == 0 {
            *ch.last.get_mut().expect("channel lock") = None;
        }
        if ch.subs.is_empty() {
            ts.channels.remove(channel);
            give_back(&mut ts.channels);
        }
        true
    }

    /// Pushes `event` to every local connection it addresses, encoding it once per target
    /// stream (and only for streams with local connections).
    pub(crate) fn deliver(&self, tenant: &Tenant, event: &Event) -> Delivery {
        let mut total = Delivery::default();
        let routing =
            Routing { filter: event.filter.as_deref(), position: None, delta: event.delta, except: event.except };
        for target in event.targets() {
            let frame = || event.encode_for(target, None);
            self.deliver_to(tenant, target, routing, frame, &mut total);
        }
        self.account(tenant, total, event.received_at.elapsed());
        total
    }

    /// Pushes an already encoded frame of one stream to its local connections; `latency`
    /// is the time from its publication to this call (the fan-out's own time is added).
    pub(crate) fn deliver_frame(
        &self,
        tenant: &Tenant,
        target: Target<'_>,
        frame: &Bytes,
        routing: Routing<'_>,
        latency: Duration,
    ) -> Delivery {
        let started = Instant::now();
        let mut total = Delivery::default();
        self.deliver_to(tenant, target, routing, || frame.clone(), &mut total);
        self.account(tenant, total, latency + started.elapsed());
        total
    }

    fn deliver_to(
        &self,
        tenant: &Tenant,
        target: Target<'_>,
        routing: Routing<'_>,
        frame: impl FnOnce() -> Bytes,
        total: &mut Delivery,
    ) {
        let t = tenant.index;
        let at = routing.position.map(|p| (target, p));
        let filter = routing.filter;
        let frames = || Shared::new(frame(), tenant, &self.compression).except(routing.except);
        match target {
            Target::User(user) => {
                let shard = self.shard_of((t, 0u8, user)).read().expect("hub lock");
                if let Some(devices) = shard.get(&t).and_then(|ts| ts.users.get(user)) {
                    self.push_all(filter, at, devices.iter(), &frames(), true, total);
                }
            }
            Target::Channel(channel) => {
                let shard = self.shard_of((t, 1u8, channel)).read().expect("hub lock");
                match shard.get(&t).and_then(|ts| ts.channels.get(channel)) {
                    Some(ch) if ch.deltas > 0 => self.push_channel(ch, routing, at, frames(), total),
                    Some(ch) => self.push_all(filter, at, ch.subs.values().map(|s| &s.conn), &frames(), true, total),
                    None => {}
                }
            }
            Target::Broadcast => {
                let frame = frames();
                let (started, direct) = (self.pace.now(), self.pace.direct());
                let mut this = Delivery::default();
                for shard in &self.shards {
                    let shard = shard.read().expect("hub lock");
                    if let Some(ts) = shard.get(&t) {
                        self.push_all(filter, at, ts.everyone.values(), &frame, direct, &mut this);
                    }
                }
                self.pace.done(started, this);
                total.add(this);
            }
        }
    }

    fn account(&self, tenant: &Tenant, total: Delivery, latency: Duration) {
        count(tenant, total);
        tenant.metrics.publish_to_enqueue.observe(latency);
    }

    /// Pushes `frames` to each of `conns` the filter admits (compressed to those that
    /// negotiated permessage-deflate). `at` is the frame's stream and
    /// position when it is a live event of a stream with history: it passes the connection's
    /// resume gate first.
    fn push_all<'a>(
        &self,
        filter: Option<&Filter>,
        at: Option<(Target<'_>, &Position)>,
        conns: impl Iterator<Item = &'a Arc<Conn>>,
        frames: &Shared<'_>,
        direct: bool,
        total: &mut Delivery,
    ) {
        let mut verdicts = filter.map(Verdicts::new);
        for conn in conns {
            if verdicts.as_mut().is_none_or(|v| v.admits(&conn.segment))
                && let Some(frame) = frames.for_conn(conn)
            {
                self.push_gated(conn, at, frame, direct, total);
            }
        }
    }

    /// [`Hub::push_all`] for a channel with delta subscribers: those who hold the channel's
    /// last event get `full` as the difference from it (made once, if the publisher asked
    /// and it is smaller), the others whole; `full` becomes the last event.
    fn push_channel(
        &self,
        ch: &Channel,
        routing: Routing<'_>,
        at: Option<(Target<'_>, &Position)>,
        full: Shared<'_>,
        total: &mut Delivery,
    ) {
        let mut last = ch.last.lock().expect("channel lock");
        let (prev, next) = (last.take(), Base::of(&full.plain));
        let delta = OnceCell::new();
        let delta = || {
            delta.get_or_init(|| {
                let (prev, next) = (prev.as_ref()?, next.as_ref()?);
                let started = Instant::now();
                let frame = prev.delta_to(next)?;
                self.deltas.record(next.frame().len(), frame.len(), started.elapsed());
                Some(full.sibling(frame))
            })
        };
        let mut verdicts = routing.filter.map(Verdicts::new);
        for sub in ch.subs.values() {
            let conn = &sub.conn;
            if !verdicts.as_mut().is_none_or(|v| v.admits(&conn.segment)) {
                sub.holds.store(false, Relaxed);
                continue;
            }
            let wants = routing.delta && sub.holds.load(Relaxed);
            let frames = if wants { delta().as_ref().unwrap_or(&full) } else { &full };
            let queued = frames.for_conn(conn).is_some_and(|frame| self.push_gated(conn, at, frame, true, total));
            sub.holds.store(sub.delta && queued, Relaxed);
        }
        *last = next;
    }

    /// Pushes `frame` to `conn` once it passes the connection's resume gate of `at`'s
    /// stream; true if it was queued or written whole, nothing dropped.
    fn push_gated(
        &self,
        conn: &Conn,
        at: Option<(Target<'_>, &Position)>,
        frame: &Bytes,
        direct: bool,
        total: &mut Delivery,
    ) -> bool {
        if let Some((target, position)) = at
            && conn.gates.admit(target, Some(position), frame) != Admit::Pass
        {
            return false;
        }
        self.push_one(conn, frame, direct, total)
    }

    /// Queues `frame` for `conn`, or with `direct` writes it to the socket when nothing is
    /// queued before it; true if nothing was dropped.
    fn push_one(&self, conn: &Conn, frame: &Bytes, direct: bool, total: &mut Delivery) -> bool {
        match conn.outbox.push(frame.clone(), self.limits, conn.tenant.config.slow_client, direct) {
            Pushed::Queued => total.queued += 1,
            Pushed::Behind => {
                total.queued += 1;
                total.behind += 1;
            }
            Pushed::Written => {
                total.queued += 1;
                total.written += 1;
            }
            Pushed::QueuedDropping(n) => {
                total.queued += 1;
                total.dropped += n as u64;
                return false;
            }
            Pushed::Overflow => {
                total.dropped += 1;
                total.slow_disconnects += 1;
                return false;
            }
            Pushed::Closed => {
                total.dropped += 1;
                return false;
            }
        }
        true
    }
}

/// One stream's frame of an event, its compressed form and its Pusher form: each made once,
/// and only when a connection that gets it receives the frame.
struct Shared<'a> {
    plain: Bytes,
    /// The tenant's `compression.min_bytes`.
    min_bytes: usize,
    deflated: OnceCell<Option<Bytes>>,
    /// `None` when the frame is not an event (Pusher connections get events only).
    pusher: OnceCell<Option<Bytes>>,
    /// The connection that does not get it (the Pusher connection that published it).
    except: Option<SocketId>,
    metrics: &'a ShrinkMetrics,
}

impl<'a> Shared<'a> {
    fn new(plain: Bytes, tenant: &Tenant, metrics: &'a ShrinkMetrics) -> Self {
        let min_bytes = tenant.config.compression.min_bytes;
        Self { plain, min_bytes, deflated: Default::default(), pusher: Default::default(), except: None, metrics }
    }

    fn except(self, except: Option<SocketId>) -> Self {
        Self { except, ..self }
    }

    /// Another frame of the same tenant.
    fn sibling(&self, plain: Bytes) -> Self {
        let (min_bytes, except, metrics) = (self.min_bytes, self.except, self.metrics);
        Self { plain, min_bytes, deflated: Default::default(), pusher: Default::default(), except, metrics }
    }

    /// The frame `conn` gets: its Pusher form on a Pusher connection, compressed if it
    /// negotiated compression and the frame shrinks; none for the excepted connection.
    fn for_conn(&self, conn: &Conn) -> Option<&Bytes> {
        if self.except.is_some_and(|s| s.is(conn.id)) {
            return None;
        }
        if conn.dialect == Dialect::Pusher {
            return self.pusher.get_or_init(|| crate::protocol::pusher::event_from(&self.plain)).as_ref();
        }
        if !conn.deflate {
            return Some(&self.plain);
        }
        let deflated = self.deflated.get_or_init(|| {
            let started = Instant::now();
            let deflated = crate::protocol::compress::deflated(&self.plain, self.min_bytes)?;
            self.metrics.record(self.plain.len(), deflated.len(), started.elapsed());
            Some(deflated)
        });
        Some(deflated.as_ref().unwrap_or(&self.plain))
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::config::Config;
    use crate::segment::{Clause, Op};
    use crate::tenant::Tenants;

    const CONFIG: &str = "[tenants.a]\npublish_key = \"a-key-123\"\n[tenants.b]\npublish_key = \"b-key-123\"\n";

    fn setup() -> (Hub, Tenants) {
        let config = Config::from_toml(CONFIG, "test", []).unwrap();
        (Hub::new(QueueLimits { frames: 100, bytes: 1 << 20 }), Tenants::from_config(&config))
    }

    fn conn(hub: &Hub, tenants: &Tenants, tenant: &str, user: &str, attributes: &[(&str, &str)]) -> Arc<Conn> {
        let tenant = tenants.get(tenant).unwrap();
        let attributes = attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let conn = Arc::new(Conn {
            id: hub.next_conn_id(),
            segment: tenant.segments.intern(attributes),
            tenant,
            user: user.into(),
            outbox: Outbox::default(),
            gates: Gates::default(),
            subscriptions: Default::default(),
            deflate: false,
            dialect: Dialect::Native,
        });
        hub.register(&conn);
        conn
    }

    fn event(users: &[&str], channels: &[&str], broadcast: bool) -> Event {
        Event { broadcast, ..Event::sample("e1", users, channels) }
    }

    fn queued(conns: &[&Arc<Conn>]) -> Vec<usize> {
        conns.iter().map(|c| c.outbox.queued()).collect()
    }

    #[test]
    fn drain_tells_every_connection_of_every_tenant_to_reconnect_and_close() {
        let (hub, tenants) = setup();
        let (a, b) = (conn(&hub, &tenants, "a", "alice", &[]), conn(&hub, &tenants, "b", "bob", &[]));
        assert_eq!(hub.drain(Duration::from_secs(1)), 2);
        for c in [&a, &b] {
            assert_eq!(c.outbox.killed(), Some(Kill::Drain));
            assert_eq!(c.outbox.queued(), 1, "its reconnect frame, still to go out");
        }
    }

    #[test]
    fn delivers_to_every_device_of_a_user_and_no_one_else() {
        let (hub, tenants) = setup();
        let phone = conn(&hub, &tenants, "a", "alice", &[]);
        let laptop = conn(&hub, &tenants, "a", "alice", &[]);
        let bob = conn(&hub, &tenants, "a", "bob", &[]);
        let other_tenant = conn(&hub, &tenants, "b", "alice", &[]);
        let d = hub.deliver(&tenants.get("a").unwrap(), &event(&["alice"], &[], false));
        assert_eq!(d, Delivery { queued: 2, ..Delivery::default() });
        assert_eq!(queued(&[&phone, &laptop, &bob, &other_tenant]), [1, 1, 0, 0]);
        assert_eq!(hub.user_connections(&tenants.get("a").unwrap(), "alice"), 2);
        assert_eq!(hub.user_connections(&tenants.get("b").unwrap(), "alice"), 1);
    }

    #[test]
    fn a_stream_resync_tells_only_that_streams_connections() {
        let (hub, tenants) = setup();
        let (alice, bob, other) = (
            conn(&hub, &tenants, "a", "alice", &[]),
            conn(&hub, &tenants, "a", "bob", &[]),
            conn(&hub, &tenants, "b", "carol", &[]),
        );
        hub.subscribe(&bob, "news", false);
        let (a, spread) = (tenants.get("a").unwrap(), Duration::from_secs(1));
        let resynced = |c: &Conn| c.outbox.killed() == Some(Kill::Resync);
        assert_eq!(hub.resync_stream(&a, Target::User("alice"), spread), 1);
        assert!(resynced(&alice) && !resynced(&bob));
        assert_eq!(hub.resync_stream(&a, Target::Channel("news"), spread), 1);
        assert!(resynced(&bob) && !resynced(&other));
        assert_eq!(hub.resync_stream(&a, Target::Broadcast, spread), 2, "every connection of the tenant, no other");
        assert!(!resynced(&other));
    }

    #[test]
    fn channels_reach_their_subscribers_until_they_leave() {
        let (hub, tenants) = setup();
        let a1 = conn(&hub, &tenants, "a", "u1", &[]);
        let a2 = conn(&hub, &tenants, "a", "u2", &[]);
        assert!(hub.subscribe(&a1, "news", false));
        assert!(!hub.subscribe(&a1, "news", false), "a second subscribe is a no-op");
        let tenant = &tenants.get("a").unwrap();
        assert_eq!(hub.deliver(tenant, &event(&[], &["news"], false)).queued, 1);
        assert!(hub.unsubscribe(&a1, "news"));
        assert!(!hub.unsubscribe(&a1, "news"));
        assert_eq!(hub.deliver(tenant, &event(&[], &["news"], false)).queued, 0);
        assert_eq!(queued(&[&a1, &a2]), [1, 0]);
    }

    #[test]
    fn broadcast_reaches_the_tenant_and_unregistered_connections_get_nothing() {
        let (hub, tenants) = setup();
        let conns: Vec<_> = (0..100).map(|i| conn(&hub, &tenants, "a", &format!("u{i}"), &[])).collect();
        let other = conn(&hub, &tenants, "b", "u0", &[]);
        let tenant = &tenants.get("a").unwrap();
        assert_eq!(hub.deliver(tenant, &event(&[], &[], true)).queued, 100);
        hub.subscribe(&conns[0], "news", false);
        hub.unregister(&conns[0], ["news"]);
        hub.unregister(&conns[1], []);
        let d = hub.deliver(tenant, &event(&["u0", "u1"], &["news"], true));
        assert_eq!(d.queued, 98, "the broadcast reaches the 98 left; user and channel frames reach no one");
        assert_eq!(queued(&[&conns[0], &conns[1], &conns[2], &other]), [1, 1, 2, 0]);
        assert_eq!(hub.user_connections(tenant, "u0"), 0);
    }

    #[test]
    fn route_filters_pick_subscribers_by_segment() {
        let (hub, tenants) = setup();
        let pro = conn(&hub, &tenants, "a", "u1", &[("plan", "pro")]);
        let pro_too = conn(&hub, &tenants, "a", "u2", &[("plan", "pro")]);
        let free = conn(&hub, &tenants, "a", "u3", &[("plan", "free")]);
        let none = conn(&hub, &tenants, "a", "u4", &[]);
        assert!(Arc::ptr_eq(&pro.segment, &pro_too.segment), "equal attributes share a segment");
        let clause = Clause { key: "plan".into(), op: Op::Eq, values: Box::new(["pro".into()]) };
        let mut ev = event(&[], &[], true);
        ev.filter = Some(Arc::new(Filter { clauses: Box::new([clause]) }));
        assert_eq!(hub.deliver(&tenants.get("a").unwrap(), &ev).queued, 2);
        assert_eq!(queued(&[&pro, &pro_too, &free, &none]), [1, 1, 0, 0]);
    }

    /// The `data` of each frame `conn` was sent, or `delta <base>` for a delta frame.
    fn received(conn: &Conn) -> Vec<String> {
        let mut frames = Vec::new();
        conn.outbox.take_all(&mut frames);
        let parse =
            |f: &Bytes| serde_json::from_slice::<serde_json::Value>(crate::protocol::frame::payload(f)).unwrap();
        let describe = |v: serde_json::Value| match v.get("base") {
            Some(base) => format!("delta {}", base.as_str().unwrap()),
            None => v["data"]["score"].to_string(),
        };
        frames.iter().map(|f| describe(parse(f))).collect()
    }

    fn version(id: &str, score: u32, delta: bool) -> Event {
        let rows = (0..30).map(|i| format!(r#"{{"row":{i},"text":"unchanged"}}"#)).collect::<Vec<_>>().join(",");
        let data = format!(r#"{{"score":{score},"rows":[{rows}]}}"#);
        let data = serde_json::value::RawValue::from_string(data).unwrap();
        Event { data, delta, ..Event::sample(id, &[], &["game"]) }
    }

    #[test]
    fn delta_subscribers_holding_the_last_event_get_the_difference() {
        let (hub, tenants) = setup();
        let tenant = &tenants.get("a").unwrap();
        let (fan, plain) = (conn(&hub, &tenants, "a", "u1", &[]), conn(&hub, &tenants, "a", "u2", &[]));
        hub.subscribe(&fan, "game", true);
        hub.subscribe(&plain, "game", false);
        hub.deliver(tenant, &version("e1", 1, true));
        hub.deliver(tenant, &version("e2", 2, true));
        hub.deliver(tenant, &version("e3", 3, false));
        hub.deliver(tenant, &version("e4", 4, true));
        assert_eq!(received(&fan), ["1", "delta e1", "3", "delta e3"], "the first whole, then deltas where asked");
        assert_eq!(received(&plain), ["1", "2", "3", "4"]);
        let late = conn(&hub, &tenants, "a", "u3", &[]);
        hub.subscribe(&late, "game", true);
        hub.deliver(tenant, &version("e5", 5, true));
        assert_eq!(received(&late), ["5"], "a new subscriber holds nothing yet");
        assert_eq!(received(&fan), ["delta e4"]);
        hub.subscribe(&fan, "game", true);
        hub.deliver(tenant, &version("e6", 6, true));
        assert_eq!(received(&fan), ["6"], "subscribing again starts over");
        assert_eq!(received(&late), ["delta e5"]);
        assert_eq!(hub.deltas().frames.load(Relaxed), 4, "made once per event (e2, e4, e5, e6), not per subscriber");
    }

    #[test]
    fn a_subscriber_a_filter_passed_over_gets_the_next_event_whole() {
        let (hub, tenants) = setup();
        let tenant = &tenants.get("a").unwrap();
        let (pro, free) = (conn(&hub, &tenants, "a", "u1", &[("plan", "pro")]), conn(&hub, &tenants, "a", "u2", &[]));
        hub.subscribe(&pro, "game", true);
        hub.subscribe(&free, "game", true);
        hub.deliver(tenant, &version("e1", 1, true));
        let clause = Clause { key: "plan".into(), op: Op::Eq, values: Box::new(["pro".into()]) };
        let filter = Some(Arc::new(Filter { clauses: Box::new([clause]) }));
        hub.deliver(tenant, &Event { filter, ..version("e2", 2, true) });
        hub.deliver(tenant, &version("e3", 3, true));
        assert_eq!(received(&pro), ["1", "delta e1", "delta e2"]);
        assert_eq!(received(&free), ["1", "3"], "it never got e2, the base of e3's delta");
        hub.unsubscribe(&pro, "game");
        hub.unsubscribe(&free, "game");
        let shard = hub.shard_of((tenant.index, 1u8, "game")).read().unwrap();
        assert!(!shard.get(&tenant.index).unwrap().channels.contains_key("game"), "nothing kept once all left");
    }

    #[test]
    fn broadcasts_write_directly_only_while_the_node_keeps_up() {
        let pace = Pace::new();
        assert!(pace.direct(), "an idle node writes directly");
        // A fan-out that just took a while: the next one right after it queues.
        pace.done(0, Delivery { queued: 10, ..Delivery::default() });
        pace.took.store(10_000_000, Relaxed);
        assert!(!pace.direct());
        // Once as long has passed, directly again; unless connections were found behind.
        pace.took.store(0, Relaxed);
        assert!(pace.direct());
        pace.done(pace.now(), Delivery { queued: 10, behind: 2, ..Delivery::default() });
        pace.took.store(0, Relaxed);
        assert!(!pace.direct(), "a fifth of the connections were behind");
    }

    #[test]
    fn counts_stop_taking_new_keys_at_the_cap() {
        let mut counts = BTreeMap::new();
        assert!(count_capped(&mut counts, "a", 1, 2));
        assert!(count_capped(&mut counts, "b", 2, 2));
        assert!(!count_capped(&mut counts, "c", 1, 2), "a third key is over the cap");
        assert!(count_capped(&mut counts, "a", 3, 2), "a known key still counts");
        assert_eq!(counts, BTreeMap::from([("a", 4), ("b", 2)]));
    }
}
