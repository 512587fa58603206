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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::redis::{Cmd, RedisError, Value};
use tokio::sync::mpsc;

use super::Link;
use super::keys;
use super::scripts::{self, eval_args as eval};
use crate::backend::BoxFuture;
use crate::backend::presence::{Presence, PresenceError, Status, Timing};
use crate::clock::now_millis;
use crate::tenant::{Tenant, Tenants};

/// Heartbeat period; a node silent for `node_timeout` is swept.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Presence streams keep about this many entries.
const STREAM_MAXLEN: usize = 100_000;

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
    /// Starts the task that mirrors presence into Redis.
    pub(crate) fn start(conn: Link, node: Arc<str>, tenants: Arc<Tenants>, timing: Timing) -> Self {
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
        };
        tokio::spawn(task.run());
        Self { local, conn, node_timeout: timing.node_timeout }
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
                n = self.rx.recv_many(&mut buf, 512) => {
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
                    let due = self.pending_offline.pop_first().map(|(_, users)| users).unwrap_or_default();
                    for (tenant, user) in due {
                        if let Err(e) = self.offline_check(&tenant, &user).await {
                            tracing::warn!(error = %e, "presence offline check failed");
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    let beat = async {
                        if !self.synced {
                            self.resync().await?;
                            self.synced = true;
                        }
                        let beats = self.tenants.all().into_iter().map(|t| {
                            ::redis::cmd("ZADD").arg(keys::presence_nodes(&t.id)).arg(now_millis()).arg(&*self.node).clone()
                        });
                        self.conn.clone().run_all(beats.collect()).await?;
                        self.sweep().await
                    };
                    if let Err(e) = beat.await {
                        self.synced = false;
                        tracing::warn!(error = %e, "presence heartbeat failed; resyncing when Redis answers");
                    }
                }
            }
        }
    }

    async fn apply(&mut self, changes: &mut [Change]) -> Result<(), RedisError> {
        let cmds = changes.iter().map(|c| {
            let hash = keys::presence_node(&c.tenant.id, &self.node);
            if c.delta > 0 {
                eval(scripts::PRESENCE_CONNECT, &[hash, keys::presence_online(&c.tenant.id)], &[&c.user])
            } else {
                eval(scripts::PRESENCE_DISCONNECT, &[hash], &[&c.user])
            }
        });
        let came_online = self.conn.run_all(cmds.collect()).await?;
        let online = changes.iter().zip(&came_online).filter(|(_, r)| matches!(r, Value::Int(1)));
        let events: Vec<Cmd> = online.map(|(c, _)| transition(&c.tenant.id, "online", &c.user, &self.node)).collect();
        if !events.is_empty() {
            self.conn.run_all(events).await?;
        }
        let at = Instant::now() + self.debounce;
        for c in changes.iter() {
            if c.delta < 0 && self.local.count(&c.tenant, &c.user) == 0 {
                self.pending_offline.entry(at).or_default().push((c.tenant.clone(), c.user.clone()));
            }
        }
        Ok(())
    }

    /// Reports `user` offline if no live node has a connection of theirs.
    async fn offline_check(&self, tenant: &Tenant, user: &str) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let prefix = keys::presence_node(&tenant.id, "");
        let oldest = oldest_live(self.node_timeout).to_string();
        let check = eval(
            scripts::PRESENCE_OFFLINE_CHECK,
            &[keys::presence_online(&tenant.id), keys::presence_nodes(&tenant.id)],
            &[user, &prefix, &oldest],
        );
        let offline: i64 = check.query_async(&mut conn).await?;
        if offline == 1 {
            transition(&tenant.id, "offline", user, &self.node).exec_async(&mut conn).await?;
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
            let users: Vec<&str> = now.keys().copied().collect();
            let connects = users
                .iter()
                .map(|u| eval(scripts::PRESENCE_CONNECT, &[hash.clone(), keys::presence_online(&tenant.id)], &[u]));
            let came_online = conn.run_all(connects.collect()).await?;
            let mut cmds: Vec<Cmd> = Vec::new();
            for (user, result) in users.iter().zip(&came_online) {
                if matches!(result, Value::Int(1)) {
                    cmds.push(transition(&tenant.id, "online", user, &self.node));
                }
                if now[user] > 1 {
                    cmds.push(::redis::cmd("HINCRBY").arg(&hash).arg(*user).arg(i64::from(now[user]) - 1).clone());
                }
            }
            if !cmds.is_empty() {
                conn.run_all(cmds).await?;
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
                for user in users {
                    self.offline_check(&tenant, &user).await?;
                }
            }
        }
        Ok(())
    }
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
