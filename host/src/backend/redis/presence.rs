//! Presence across nodes sharing a Redis: each node keeps its
//! per-user connection counts in `notify:presence:{tenant}:node:{node}` and heartbeats in
//! `notify:presence:{tenant}:nodes` (`{tenant}` in braces: every presence key of a tenant
//! shares one Redis Cluster slot, so the presence scripts can touch them together); a user's
//! count is the sum over live nodes. Transitions are written to the stream
//! `notify:{tenant}:presence` (`type online|offline`, `user`, `node`): `online` when a user
//! connects while not online, `offline` once no live node has a connection of the user
//! `presence_debounce` after their last connection closed, so a quick reconnect is neither.
//! A node that stops heartbeating for `node_timeout` is swept by another node, which reports
//! its users offline.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::redis::{Cmd, RedisError, Value};
use tokio::sync::mpsc;

use super::Link;
use super::keys;
use super::scripts::{self, eval};
use crate::backend::BoxFuture;
use crate::backend::presence::{Presence, PresenceError, Status, Timing};
use crate::clock::now_millis;
use crate::tenant::{Tenant, Tenants};

/// Heartbeat period; a node silent for `node_timeout` is swept.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Presence streams keep about this many entries.
const STREAM_MAXLEN: usize = 100_000;
/// Most changes or users one presence script call takes (Redis runs nothing else meanwhile).
const BATCH: usize = 512;

fn transition(tenant: &str, kind: &str, user: &str, node: &str) -> Cmd {
    let mut cmd = ::redis::cmd("XADD");
    cmd.arg(keys::presence_stream(tenant)).arg("MAXLEN").arg("~").arg(STREAM_MAXLEN).arg("*");
    cmd.arg("type").arg(kind).arg("user").arg(user).arg("node").arg(node);
    cmd
}

/// One connection of `user` opened (`+1`) or closed (`-1`).
struct Change {
    tenant: Arc<Tenant>,
    user: Box<str>,
    delta: i32,
}

/// This node's counts, kept here and mirrored into Redis by a task.
pub(crate) struct RedisPresence {
    local: Arc<Local>,
    conn: Link,
    node_timeout: Duration,
}

/// This node's per-user connection counts and the queue of changes to mirror. Both change
/// under one lock, so a snapshot taken while draining the queue is exact.
struct Local {
    /// Held for one map update and one unbounded send; never across an await.
    state: Mutex<LocalState>,
}

struct LocalState {
    counts: HashMap<(u32, Box<str>), u32>,
    /// Unbounded so connection tasks never wait on Redis; the mirror drains it continuously
    /// and, after an outage, replaces what it missed with a snapshot of `counts`.
    tx: mpsc::UnboundedSender<Change>,
}

impl Local {
    fn count(&self, tenant: &Tenant, user: &str) -> u32 {
        let state = self.state.lock().expect("presence lock");
        state.counts.get(&(tenant.index, Box::from(user))).copied().unwrap_or(0)
    }

    /// Counts one connection of `user` opening (`+1`) or closing (`-1`) and queues the change.
    fn change(&self, tenant: &Arc<Tenant>, user: &str, delta: i32) {
        let mut state = self.state.lock().expect("presence lock");
        let count = state.counts.entry((tenant.index, user.into())).or_insert(0);
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            state.counts.remove(&(tenant.index, Box::from(user)));
        }
        let _ = state.tx.send(Change { tenant: tenant.clone(), user: user.into(), delta });
    }
}

impl RedisPresence {
    /// The presence, and the task that mirrors it into Redis (for the caller to run).
    pub(crate) fn start(
        conn: Link,
        node: Arc<str>,
        tenants: Arc<Tenants>,
        timing: Timing,
    ) -> (Self, BoxFuture<'static, ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let local = Arc::new(Local { state: Mutex::new(LocalState { counts: HashMap::new(), tx }) });
        let task = Mirror {
            local: local.clone(),
            conn: conn.clone(),
            node: node.clone(),
            tenants,
            debounce: timing.debounce,
            node_timeout: timing.node_timeout,
            rx,
            pending_offline: BTreeMap::new(),
            synced: false,
            beaten: HashSet::new(),
        };
        (Self { local, conn, node_timeout: timing.node_timeout }, Box::pin(task.run()))
    }

    fn change(&self, tenant: &Arc<Tenant>, user: &str, delta: i32) {
        self.local.change(tenant, user, delta);
    }

    async fn count(&self, tenant: &Tenant, user: &str) -> Result<Status, PresenceError> {
        let mut conn = self.conn.clone();
        let live: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
            .arg(keys::presence_nodes(&tenant.id))
            .arg(oldest_live(self.node_timeout))
            .arg("+inf")
            .query_async(&mut conn)
            .await?;
        let gets =
            live.iter().map(|node| ::redis::cmd("HGET").arg(keys::presence_node(&tenant.id, node)).arg(user).clone());
        let counts = conn.run_all(gets.collect()).await?;
        let count = |v: &Value| ::redis::from_redis_value::<Option<i64>>(v.clone()).ok().flatten().unwrap_or(0);
        Ok(Status { connections: counts.iter().map(|v| count(v).max(0) as u64).sum() })
    }
}

impl Presence for RedisPresence {
    fn connected(&self, tenant: &Arc<Tenant>, user: &str) {
        self.change(tenant, user, 1);
    }

    fn disconnected(&self, tenant: &Arc<Tenant>, user: &str) {
        self.change(tenant, user, -1);
    }

    fn status<'a>(&'a self, tenant: &'a Tenant, user: &'a str) -> BoxFuture<'a, Result<Status, PresenceError>> {
        Box::pin(self.count(tenant, user))
    }

    fn forget<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<(), PresenceError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let nodes: Vec<String> = ::redis::cmd("ZRANGE")
                .arg(keys::presence_nodes(&tenant.id))
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await?;
            let mut doomed: Vec<String> = nodes.iter().map(|n| keys::presence_node(&tenant.id, n)).collect();
            doomed.extend([
                keys::presence_online(&tenant.id),
                keys::presence_nodes(&tenant.id),
                keys::presence_stream(&tenant.id),
            ]);
            conn.run_all(doomed.iter().map(|k| ::redis::cmd("UNLINK").arg(k).clone()).collect()).await?;
            Ok(())
        })
    }
}

/// The oldest heartbeat of a live node.
fn oldest_live(node_timeout: Duration) -> u64 {
    now_millis().saturating_sub(node_timeout.as_millis() as u64)
}

/// A user of a tenant.
type TenantUser = (Arc<Tenant>, Box<str>);

/// The task that mirrors this node's presence into Redis.
struct Mirror {
    local: Arc<Local>,
    conn: Link,
    node: Arc<str>,
    /// The live registry: heartbeats and sweeps cover tenants created at runtime.
    tenants: Arc<Tenants>,
    debounce: Duration,
    node_timeout: Duration,
    rx: mpsc::UnboundedReceiver<Change>,
    /// Users whose last local connection closed, checked for offline at the instant.
    pending_offline: BTreeMap<Instant, Vec<TenantUser>>,
    /// False until this node's counts in Redis match `local` (at start, after an outage).
    synced: bool,
    /// The tenants whose node sets this node's heartbeats have joined; a later heartbeat
    /// that finds itself missing from one means its counts there are gone.
    beaten: HashSet<u32>,
}

impl Mirror {
    async fn run(mut self) {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut buf = Vec::new();
        loop {
            let next_check = self.pending_offline.keys().next().copied();
            let check = async {
                match next_check {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                n = self.rx.recv_many(&mut buf, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    if self.synced && let Err(e) = self.apply(&mut buf).await {
                        tracing::warn!(error = %e, "presence update failed; resyncing when Redis answers");
                        self.synced = false;
                    }
                    buf.clear();
                }
                () = check => {
                    let now = Instant::now();
                    let mut due = Vec::new();
                    while let Some(entry) = self.pending_offline.first_entry()
                        && *entry.key() <= now
                    {
                        due.extend(entry.remove());
                    }
                    for (tenant, users) in by_tenant(due, |(t, _)| t) {
                        let users: Vec<Box<str>> = users.into_iter().map(|(_, u)| u).collect();
                        if let Err(e) = self.offline_checks(&tenant, &users).await {
                            tracing::warn!(error = %e, "presence offline check failed");
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if let Err(e) = self.beat().await {
                        self.synced = false;
                        tracing::warn!(error = %e, "presence heartbeat failed; resyncing when Redis answers");
                    }
                }
            }
        }
    }

    /// Marks this node live for every tenant, rewrites its counts when they may be missing
    /// from Redis, and sweeps dead nodes.
    async fn beat(&mut self) -> Result<(), RedisError> {
        let was_synced = self.synced;
        if !self.synced {
            self.resync().await?;
            self.synced = true;
        }
        let tenants = self.tenants.all();
        let beats = tenants
            .iter()
            .map(|t| ::redis::cmd("ZADD").arg(keys::presence_nodes(&t.id)).arg(now_millis()).arg(&*self.node).clone());
        let added = self.conn.clone().run_all(beats.collect()).await?;
        // A node set that lacked this node although it had joined it: Redis lost it (flushed,
        // restarted without its data), or another node swept this one as dead and deleted
        // its counts. (A tenant created since the last heartbeat is joined for the first time.)
        let mut lost = false;
        for (tenant, added) in tenants.iter().zip(&added) {
            let joined_before = !self.beaten.insert(tenant.index);
            lost |= joined_before && matches!(added, Value::Int(1));
        }
        if was_synced && lost {
            tracing::info!("this node's presence was missing from Redis; rewriting it");
            self.resync().await?;
        }
        self.sweep().await
    }

    /// One script call per tenant for a batch of changes, in order.
    async fn apply(&mut self, changes: &mut [Change]) -> Result<(), RedisError> {
        let groups = by_tenant(changes.iter(), |c| &c.tenant);
        let cmds =
            groups.iter().map(|(t, group)| self.apply_cmd(t, group.iter().map(|c| (&*c.user, i64::from(c.delta)))));
        let replies = self.conn.run_all(cmds.collect()).await?;
        let mut events = Vec::new();
        for ((tenant, group), reply) in groups.iter().zip(replies) {
            let came_online: Vec<i64> = ::redis::from_redis_value(reply)?;
            let online = group.iter().zip(came_online).filter(|(_, came)| *came == 1);
            events.extend(online.map(|(c, _)| transition(&tenant.id, "online", &c.user, &self.node)));
        }
        self.conn.run_all(events).await?;
        let at = Instant::now() + self.debounce;
        for c in changes.iter() {
            if c.delta < 0 && self.local.count(&c.tenant, &c.user) == 0 {
                self.pending_offline.entry(at).or_default().push((c.tenant.clone(), c.user.clone()));
            }
        }
        Ok(())
    }

    /// The presence script call for `changes` (user, connections opened or -1 for a close)
    /// of one tenant on this node.
    fn apply_cmd<'u>(&self, tenant: &Tenant, changes: impl Iterator<Item = (&'u str, i64)>) -> Cmd {
        let hash = keys::presence_node(&tenant.id, &self.node);
        let mut cmd = eval(scripts::PRESENCE_APPLY, &[hash, keys::presence_online(&tenant.id)]);
        for (user, change) in changes {
            cmd.arg(user).arg(change);
        }
        cmd
    }

    /// Reports offline those of a tenant's `users` whom no live node counts a connection of.
    async fn offline_checks(&self, tenant: &Tenant, users: &[Box<str>]) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let prefix = keys::presence_node(&tenant.id, "");
        let oldest = oldest_live(self.node_timeout);
        for chunk in users.chunks(BATCH) {
            let mut check = eval(
                scripts::PRESENCE_OFFLINE_CHECK,
                &[keys::presence_online(&tenant.id), keys::presence_nodes(&tenant.id)],
            );
            check.arg(&prefix).arg(oldest);
            for user in chunk {
                check.arg(&**user);
            }
            let offline: Vec<String> = check.query_async(&mut conn).await?;
            conn.run_all(offline.iter().map(|u| transition(&tenant.id, "offline", u, &self.node)).collect()).await?;
        }
        Ok(())
    }

    /// Replaces this node's counts in Redis with the local ones, reporting users who
    /// connected meanwhile online and those who left offline (after the debounce).
    async fn resync(&mut self) -> Result<(), RedisError> {
        let snapshot: Vec<((u32, Box<str>), u32)> = {
            let state = self.local.state.lock().expect("presence lock");
            // The snapshot covers every change queued so far.
            while self.rx.try_recv().is_ok() {}
            state.counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
        };
        let mut conn = self.conn.clone();
        let at = Instant::now() + self.debounce;
        for tenant in self.tenants.all() {
            let hash = keys::presence_node(&tenant.id, &self.node);
            let before: Vec<String> = ::redis::cmd("HKEYS").arg(&hash).query_async(&mut conn).await?;
            let now: HashMap<&str, u32> =
                snapshot.iter().filter(|((t, _), _)| *t == tenant.index).map(|((_, u), n)| (&**u, *n)).collect();
            ::redis::cmd("DEL").arg(&hash).exec_async(&mut conn).await?;
            let users: Vec<(&str, u32)> = now.iter().map(|(u, n)| (*u, *n)).collect();
            for chunk in users.chunks(BATCH) {
                let cmd = self.apply_cmd(&tenant, chunk.iter().map(|(u, n)| (*u, i64::from(*n))));
                let came_online: Vec<i64> = cmd.query_async(&mut conn).await?;
                let online = chunk.iter().zip(came_online).filter(|(_, came)| *came == 1);
                let events = online.map(|((u, _), _)| transition(&tenant.id, "online", u, &self.node));
                conn.run_all(events.collect()).await?;
            }
            for user in before {
                if !now.contains_key(user.as_str()) {
                    self.pending_offline.entry(at).or_default().push((tenant.clone(), user.into()));
                }
            }
        }
        Ok(())
    }

    /// Removes nodes that stopped heartbeating and reports their users offline. Only the node
    /// whose ZREM succeeds sweeps a dead node.
    async fn sweep(&mut self) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        for tenant in self.tenants.all() {
            let nodes = keys::presence_nodes(&tenant.id);
            let oldest = format!("({}", oldest_live(self.node_timeout));
            let dead: Vec<String> =
                ::redis::cmd("ZRANGEBYSCORE").arg(&nodes).arg("-inf").arg(oldest).query_async(&mut conn).await?;
            for node in dead {
                let removed: i64 = ::redis::cmd("ZREM").arg(&nodes).arg(&node).query_async(&mut conn).await?;
                if removed == 0 {
                    continue;
                }
                tracing::info!(node, tenant = &*tenant.id, "sweeping presence of a node that stopped heartbeating");
                let hash = keys::presence_node(&tenant.id, &node);
                let users: Vec<String> = ::redis::cmd("HKEYS").arg(&hash).query_async(&mut conn).await?;
                ::redis::cmd("DEL").arg(&hash).exec_async(&mut conn).await?;
                let users: Vec<Box<str>> = users.into_iter().map(String::into_boxed_str).collect();
                self.offline_checks(&tenant, &users).await?;
            }
        }
        Ok(())
    }
}

/// `items` grouped by tenant, each group in the order given; groups in order of first item.
fn by_tenant<T>(items: impl IntoIterator<Item = T>, tenant: impl Fn(&T) -> &Arc<Tenant>) -> Vec<(Arc<Tenant>, Vec<T>)> {
    let mut groups: Vec<(Arc<Tenant>, Vec<T>)> = Vec::new();
    for item in items {
        let index = tenant(&item).index;
        match groups.iter_mut().find(|(t, _)| t.index == index) {
            Some((_, group)) => group.push(item),
            None => groups.push((tenant(&item).clone(), vec![item])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::tenant::Tenants;

    #[test]
    fn local_counts_follow_connections_and_queue_every_change() {
        let config = Config::from_toml("[tenants.a]\npublish_key = \"a-key-123\"\n", "test", []).unwrap();
        let tenants = Tenants::from_config(&config);
        let tenant = &tenants.get("a").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let local = Local { state: Mutex::new(LocalState { counts: HashMap::new(), tx }) };
        local.change(tenant, "alice", 1);
        local.change(tenant, "alice", 1);
        local.change(tenant, "bob", 1);
        assert_eq!((local.count(tenant, "alice"), local.count(tenant, "bob")), (2, 1));
        local.change(tenant, "alice", -1);
        local.change(tenant, "alice", -1);
        assert_eq!(local.count(tenant, "alice"), 0);
        assert_eq!(local.state.lock().unwrap().counts.len(), 1, "users without connections are forgotten");
        let mut deltas = Vec::new();
        while let Ok(c) = rx.try_recv() {
            deltas.push((c.user.to_string(), c.delta));
        }
        let expected = [("alice", 1), ("alice", 1), ("bob", 1), ("alice", -1), ("alice", -1)];
        assert_eq!(deltas, expected.map(|(u, d)| (u.to_string(), d)));
    }
}
