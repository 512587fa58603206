//! Presence across nodes sharing a Redis: each node keeps its per-user connection counts in
//! `notify:presence:{tenant}:node:{node}` (and, for tenants whose webhooks want channel
//! transitions, its per-channel subscription counts in `notify:occupancy:{tenant}:node:{node}`)
//! and heartbeats in `notify:presence:{tenant}:nodes` (`{tenant}` in braces: every key here
//! of a tenant shares one Redis Cluster slot, so the scripts can touch them together); a
//! member's count is the sum over live nodes.
//!
//! A user comes online when they connect while not online, and goes offline once no live
//! node has a connection of theirs `presence_debounce` after their last closed, so a quick
//! reconnect is neither; channels are occupied and vacated alike. The script that decides a
//! transition also writes it to `notify:presence:{tenant}:transitions`, for webhooks
//! (`transitions`), so each is written once however many nodes see it; user transitions are
//! also written to the stream `notify:{tenant}:presence` (`type online|offline`, `user`,
//! `node`) for backends that read it. A node that stops heartbeating for `node_timeout` is
//! swept by the others, which report its users offline and its channels vacated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::redis::{Cmd, RedisError, Value};
use tokio::sync::mpsc;

use super::Link;
use super::keys;
use super::scripts::{self, eval};
use crate::backend::BoxFuture;
use crate::backend::presence::{Member, Presence, PresenceError, Status, Timing};
use crate::clock::now_millis;
use crate::tenant::{Tenant, Tenants};
use crate::webhook::Webhooks;

/// Heartbeat period; a node silent for `node_timeout` is swept.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Presence streams keep about this many entries.
const STREAM_MAXLEN: usize = 100_000;
/// Most changes or members one presence script call takes (Redis runs nothing else meanwhile).
const BATCH: usize = 512;
const MEMBERS: [Member; 2] = [Member::User, Member::Channel];

/// The key of `node`'s counts of `member`s of `tenant`.
fn node_key(member: Member, tenant: &str, node: &str) -> String {
    match member {
        Member::User => keys::presence_node(tenant, node),
        Member::Channel => keys::occupancy_node(tenant, node),
    }
}

/// The key of the `member`s of `tenant` marked present.
fn present_key(member: Member, tenant: &str) -> String {
    match member {
        Member::User => keys::presence_online(tenant),
        Member::Channel => keys::occupancy_occupied(tenant),
    }
}

/// The transition types written for `member`: coming, going.
fn types(member: Member) -> (&'static str, &'static str) {
    match member {
        Member::User => ("online", "offline"),
        Member::Channel => ("occupied", "vacated"),
    }
}

/// A user transition written to the backends' stream `notify:{tenant}:presence`.
fn transition(tenant: &str, kind: &str, user: &str, node: &str) -> Cmd {
    let mut cmd = ::redis::cmd("XADD");
    cmd.arg(keys::presence_stream(tenant)).arg("MAXLEN").arg("~").arg(STREAM_MAXLEN).arg("*");
    cmd.arg("type").arg(kind).arg("user").arg(user).arg("node").arg(node);
    cmd
}

/// One connection of a user (or subscription to a channel) opened (`+1`) or closed (`-1`);
/// or, `silent`, counts taken up or let go when webhooks start or stop following a tenant's
/// channels, which write no transition.
struct Change {
    tenant: Arc<Tenant>,
    member: Member,
    name: Box<str>,
    delta: i32,
    silent: bool,
}

/// A member counted: its kind, tenant index and name.
type Key = (Member, u32, Box<str>);

/// This node's counts, kept here and mirrored into Redis by a task.
pub(crate) struct RedisPresence {
    local: Arc<Local>,
    conn: Link,
    node_timeout: Duration,
    /// Which tenants' channels are counted: those whose webhooks want their transitions.
    webhooks: Arc<Webhooks>,
}

/// This node's counts and the queue of changes to mirror. Both change under one lock, so a
/// snapshot taken while draining the queue is exact.
struct Local {
    /// Held for one map update and one unbounded send; never across an await.
    state: Mutex<LocalState>,
}

struct LocalState {
    counts: HashMap<Key, u32>,
    /// Unbounded so connection tasks never wait on Redis; the mirror drains it continuously
    /// and, after an outage, replaces what it missed with a snapshot of `counts`.
    tx: mpsc::UnboundedSender<Change>,
}

impl Local {
    fn count(&self, member: Member, tenant: &Tenant, name: &str) -> u32 {
        let state = self.state.lock().expect("presence lock");
        state.counts.get(&(member, tenant.index, Box::from(name))).copied().unwrap_or(0)
    }

    /// Counts one connection or subscription opening (`+1`) or closing (`-1`) and queues
    /// the change.
    fn change(&self, tenant: &Arc<Tenant>, member: Member, name: &str, delta: i32) {
        let mut state = self.state.lock().expect("presence lock");
        let key = (member, tenant.index, Box::from(name));
        let count = state.counts.entry(key).or_insert(0);
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            state.counts.remove(&(member, tenant.index, Box::from(name)));
        }
        let _ = state.tx.send(Change { tenant: tenant.clone(), member, name: name.into(), delta, silent: false });
    }

    /// Sets the counts of `tenant`'s `member`s to `counts` (none: forgets them), queuing the
    /// differences as silent changes.
    fn set_counts(&self, tenant: &Arc<Tenant>, member: Member, counts: Vec<(Box<str>, u32)>) {
        let mut state = self.state.lock().expect("presence lock");
        let mut deltas: HashMap<Box<str>, i64> = HashMap::new();
        state.counts.retain(|(m, t, name), n| {
            let mine = *m == member && *t == tenant.index;
            if mine {
                deltas.insert(name.clone(), -i64::from(*n));
            }
            !mine
        });
        for (name, n) in counts {
            *deltas.entry(name.clone()).or_default() += i64::from(n);
            state.counts.insert((member, tenant.index, name), n);
        }
        for (name, delta) in deltas.into_iter().filter(|(_, d)| *d != 0) {
            let delta = delta.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
            let _ = state.tx.send(Change { tenant: tenant.clone(), member, name, delta, silent: true });
        }
    }
}

impl RedisPresence {
    /// The presence, and the task that mirrors it into Redis (for the caller to run).
    pub(crate) fn start(
        conn: Link,
        node: Arc<str>,
        tenants: Arc<Tenants>,
        timing: Timing,
        webhooks: Arc<Webhooks>,
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
            pending_gone: BTreeMap::new(),
            synced: false,
            beaten: HashSet::new(),
            webhooks: webhooks.clone(),
        };
        (Self { local, conn, node_timeout: timing.node_timeout, webhooks }, Box::pin(task.run()))
    }

    fn change(&self, tenant: &Arc<Tenant>, member: Member, name: &str, delta: i32) {
        if member == Member::Channel && !self.webhooks.wants(&tenant.id, member.bits()) {
            return;
        }
        self.local.change(tenant, member, name, delta);
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
        self.change(tenant, Member::User, user, 1);
    }

    fn disconnected(&self, tenant: &Arc<Tenant>, user: &str) {
        self.change(tenant, Member::User, user, -1);
    }

    fn subscribed(&self, tenant: &Arc<Tenant>, channel: &str) {
        self.change(tenant, Member::Channel, channel, 1);
    }

    fn unsubscribed(&self, tenant: &Arc<Tenant>, channel: &str) {
        self.change(tenant, Member::Channel, channel, -1);
    }

    fn follow(&self, tenant: &Arc<Tenant>, member: Member, counts: Vec<(Box<str>, u32)>) {
        // Users are always counted (for `GET /v1/presence`), so only channels start here.
        if member == Member::Channel {
            self.local.set_counts(tenant, member, counts);
        }
    }

    fn unfollow(&self, tenant: &Arc<Tenant>, member: Member) {
        if member == Member::Channel {
            self.local.set_counts(tenant, member, Vec::new());
        }
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
            let id = &tenant.id;
            let mut doomed: Vec<String> = nodes.iter().flat_map(|n| MEMBERS.map(|m| node_key(m, id, n))).collect();
            doomed.extend(MEMBERS.map(|m| present_key(m, id)));
            // The webhook state of the tenant goes with its presence.
            let webhooks = [keys::presence_transitions(id), keys::webhook_dead_letters(id)];
            doomed.extend([keys::presence_nodes(id), keys::presence_stream(id)].into_iter().chain(webhooks));
            conn.run_all(doomed.iter().map(|k| ::redis::cmd("UNLINK").arg(k).clone()).collect()).await?;
            Ok(())
        })
    }
}

/// The oldest heartbeat of a live node.
pub(super) fn oldest_live(node_timeout: Duration) -> u64 {
    now_millis().saturating_sub(node_timeout.as_millis() as u64)
}

/// A member of a tenant whose count here went to none, checked once the debounce is over.
type Leaving = (Arc<Tenant>, Member, Box<str>);

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
    /// Members whose last local count ended, checked for gone at the instant.
    pending_gone: BTreeMap<Instant, Vec<Leaving>>,
    /// False until this node's counts in Redis match `local` (at start, after an outage).
    synced: bool,
    /// The tenants whose node sets this node's heartbeats have joined; a later heartbeat
    /// that finds itself missing from one means its counts there are gone.
    beaten: HashSet<u32>,
    /// Which tenants' transitions are written for webhooks.
    webhooks: Arc<Webhooks>,
}

impl Mirror {
    async fn run(mut self) {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut buf = Vec::new();
        loop {
            let next_check = self.pending_gone.keys().next().copied();
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
                () = check => self.check_due().await,
                _ = heartbeat.tick() => {
                    if let Err(e) = self.beat().await {
                        self.synced = false;
                        tracing::warn!(error = %e, "presence heartbeat failed; resyncing when Redis answers");
                    }
                }
            }
        }
    }

    /// Checks the members whose debounce is over.
    async fn check_due(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(entry) = self.pending_gone.first_entry()
            && *entry.key() <= now
        {
            due.extend(entry.remove());
        }
        for ((tenant, member, _), names) in grouped(due, |(t, m, _)| (t, *m, false)) {
            let names: Vec<Box<str>> = names.into_iter().map(|(_, _, n)| n).collect();
            if let Err(e) = self.gone_checks(&tenant, member, &names).await {
                tracing::warn!(error = %e, "presence offline check failed");
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

    /// One script call per tenant and kind of member for a batch of changes, in order.
    async fn apply(&mut self, changes: &mut [Change]) -> Result<(), RedisError> {
        let groups = grouped(changes.iter(), |c| (&c.tenant, c.member, c.silent));
        let cmds = groups.iter().map(|((t, member, silent), group)| {
            let cap = if *silent { 0 } else { self.transitions_cap(t, *member) };
            self.apply_cmd(t, *member, cap, group.iter().map(|c| (&*c.name, i64::from(c.delta))))
        });
        let replies = self.conn.run_all(cmds.collect()).await?;
        let mut events = Vec::new();
        for (((tenant, member, _), group), reply) in groups.iter().zip(replies) {
            let came: Vec<i64> = ::redis::from_redis_value(reply)?;
            if *member == Member::User {
                let online = group.iter().zip(came).filter(|(_, came)| *came == 1);
                events.extend(online.map(|(c, _)| transition(&tenant.id, "online", &c.name, &self.node)));
            }
        }
        self.conn.run_all(events).await?;
        let at = Instant::now() + self.debounce;
        for c in changes.iter() {
            if c.delta < 0 && self.local.count(c.member, &c.tenant, &c.name) == 0 {
                self.pending_gone.entry(at).or_default().push((c.tenant.clone(), c.member, c.name.clone()));
            }
        }
        Ok(())
    }

    /// The script call for `changes` (member, count opened or -1 for a close) of one tenant's
    /// members of one kind on this node, keeping up to `cap` transitions (0: writing none).
    fn apply_cmd<'u>(
        &self,
        tenant: &Tenant,
        member: Member,
        cap: usize,
        changes: impl Iterator<Item = (&'u str, i64)>,
    ) -> Cmd {
        let id = &tenant.id;
        let keys = [node_key(member, id, &self.node), present_key(member, id), keys::presence_transitions(id)];
        let mut cmd = eval(scripts::PRESENCE_APPLY, &keys);
        cmd.arg(&*self.node).arg(cap).arg(member.field()).arg(types(member).0);
        for (name, change) in changes {
            cmd.arg(name).arg(change);
        }
        cmd
    }

    /// How many entries the transitions stream keeps, if `tenant`'s webhooks read `member`
    /// transitions; else 0: none is written.
    fn transitions_cap(&self, tenant: &Tenant, member: Member) -> usize {
        if self.webhooks.wants(&tenant.id, member.bits()) { STREAM_MAXLEN } else { 0 }
    }

    /// Reports gone (offline, vacated) those of a tenant's `names` that no live node counts.
    async fn gone_checks(&self, tenant: &Tenant, member: Member, names: &[Box<str>]) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let id = &tenant.id;
        let prefix = node_key(member, id, "");
        let oldest = oldest_live(self.node_timeout);
        let keys = [present_key(member, id), keys::presence_nodes(id), keys::presence_transitions(id)];
        for chunk in names.chunks(BATCH) {
            let mut check = eval(scripts::PRESENCE_OFFLINE_CHECK, &keys);
            check.arg(&prefix).arg(oldest).arg(&*self.node).arg(self.transitions_cap(tenant, member));
            check.arg(member.field()).arg(types(member).1);
            for name in chunk {
                check.arg(&**name);
            }
            let gone: Vec<String> = check.query_async(&mut conn).await?;
            if member == Member::User {
                conn.run_all(gone.iter().map(|u| transition(id, "offline", u, &self.node)).collect()).await?;
            }
        }
        Ok(())
    }

    /// Replaces this node's counts in Redis with the local ones, reporting members that came
    /// meanwhile and those that went (after the debounce).
    async fn resync(&mut self) -> Result<(), RedisError> {
        let snapshot: Vec<(Key, u32)> = {
            let state = self.local.state.lock().expect("presence lock");
            // The snapshot covers every change queued so far.
            while self.rx.try_recv().is_ok() {}
            state.counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
        };
        let at = Instant::now() + self.debounce;
        for tenant in self.tenants.all() {
            for member in MEMBERS {
                let now: HashMap<&str, u32> = snapshot
                    .iter()
                    .filter(|((m, t, _), _)| *m == member && *t == tenant.index)
                    .map(|((_, _, name), n)| (&**name, *n))
                    .collect();
                let went = self.rewrite(&tenant, member, &now).await?;
                let leaving = went.into_iter().map(|name| (tenant.clone(), member, name.into()));
                self.pending_gone.entry(at).or_default().extend(leaving);
            }
        }
        Ok(())
    }

    /// Rewrites this node's counts of `tenant`'s `member`s as `now`; the members it counted
    /// before and no longer does.
    async fn rewrite(
        &self,
        tenant: &Tenant,
        member: Member,
        now: &HashMap<&str, u32>,
    ) -> Result<Vec<String>, RedisError> {
        let mut conn = self.conn.clone();
        let hash = node_key(member, &tenant.id, &self.node);
        let before: Vec<String> = ::redis::cmd("HKEYS").arg(&hash).query_async(&mut conn).await?;
        ::redis::cmd("DEL").arg(&hash).exec_async(&mut conn).await?;
        let counts: Vec<(&str, u32)> = now.iter().map(|(u, n)| (*u, *n)).collect();
        for chunk in counts.chunks(BATCH) {
            let cap = self.transitions_cap(tenant, member);
            let cmd = self.apply_cmd(tenant, member, cap, chunk.iter().map(|(u, n)| (*u, i64::from(*n))));
            let came: Vec<i64> = cmd.query_async(&mut conn).await?;
            if member == Member::User {
                let online = chunk.iter().zip(came).filter(|(_, came)| *came == 1);
                let events = online.map(|((u, _), _)| transition(&tenant.id, "online", u, &self.node));
                conn.run_all(events.collect()).await?;
            }
        }
        Ok(before.into_iter().filter(|name| !now.contains_key(name.as_str())).collect())
    }

    /// Reports the members of nodes that stopped heartbeating gone, then removes those nodes.
    /// Every live node may sweep a dead one at once: the checks report each member once,
    /// and a sweep cut short is done again at the next heartbeat.
    async fn sweep(&mut self) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        for tenant in self.tenants.all() {
            let nodes = keys::presence_nodes(&tenant.id);
            let oldest = format!("({}", oldest_live(self.node_timeout));
            let dead: Vec<String> =
                ::redis::cmd("ZRANGEBYSCORE").arg(&nodes).arg("-inf").arg(oldest).query_async(&mut conn).await?;
            for node in dead {
                tracing::info!(node, tenant = &*tenant.id, "sweeping presence of a node that stopped heartbeating");
                for member in MEMBERS {
                    let hash = node_key(member, &tenant.id, &node);
                    let names: Vec<String> = ::redis::cmd("HKEYS").arg(&hash).query_async(&mut conn).await?;
                    let names: Vec<Box<str>> = names.into_iter().map(String::into_boxed_str).collect();
                    self.gone_checks(&tenant, member, &names).await?;
                    ::redis::cmd("DEL").arg(&hash).exec_async(&mut conn).await?;
                }
                ::redis::cmd("ZREM").arg(&nodes).arg(&node).exec_async(&mut conn).await?;
            }
        }
        Ok(())
    }
}

/// Items of one tenant, kind of member and silence.
type Group<T> = ((Arc<Tenant>, Member, bool), Vec<T>);

/// `items` grouped by tenant, kind of member and whether they are silent, each group in the
/// order given; groups in order of first item.
fn grouped<T>(items: impl IntoIterator<Item = T>, key: impl Fn(&T) -> (&Arc<Tenant>, Member, bool)) -> Vec<Group<T>> {
    let mut groups: Vec<Group<T>> = Vec::new();
    for item in items {
        let (tenant, member, silent) = key(&item);
        match groups.iter_mut().find(|((t, m, s), _)| t.index == tenant.index && *m == member && *s == silent) {
            Some((_, group)) => group.push(item),
            None => groups.push(((tenant.clone(), member, silent), vec![item])),
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
        let user = Member::User;
        local.change(tenant, user, "alice", 1);
        local.change(tenant, user, "alice", 1);
        local.change(tenant, user, "bob", 1);
        local.change(tenant, Member::Channel, "alice", 1);
        assert_eq!((local.count(user, tenant, "alice"), local.count(user, tenant, "bob")), (2, 1));
        local.change(tenant, user, "alice", -1);
        local.change(tenant, user, "alice", -1);
        assert_eq!(local.count(user, tenant, "alice"), 0);
        assert_eq!(local.count(Member::Channel, tenant, "alice"), 1, "a channel is counted apart from a user");
        local.change(tenant, Member::Channel, "alice", -1);
        assert_eq!(local.state.lock().unwrap().counts.len(), 1, "users without connections are forgotten");
        let mut deltas = Vec::new();
        while let Ok(c) = rx.try_recv() {
            deltas.push((c.name.to_string(), c.delta));
        }
        let expected =
            [("alice", 1), ("alice", 1), ("bob", 1), ("alice", 1), ("alice", -1), ("alice", -1), ("alice", -1)];
        assert_eq!(deltas, expected.map(|(u, d)| (u.to_string(), d)));
    }
}
