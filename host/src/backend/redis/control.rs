//! The control-plane store of nodes sharing a Redis: the state as JSON, its version and the
//! plugin bytes in three keys of one hash slot, replaced by one script that checks the
//! version, stores and drops plugin bytes, and announces the new version on a pub/sub
//! channel. Node reports are a hash per node that expires unless renewed, and a sorted set
//! of nodes by report time. A listener task turns announcements into `watch`
//! notifications, and notifies once more after every (re)connection, so a node that missed
//! announcements while Redis was away reloads the whole state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::pubsub::{Incoming, Transport};
use super::scripts::{self, eval};
use super::{Link, keys};
use crate::backend::control::{
    Blob, COMMAND_BACKLOG, ControlState, ControlStore, NodeReport, REPLY_TTL, REPORT_TTL, StoreError,
};
use crate::backend::{BoxFuture, BrokerError};
use crate::config::RedisConfig;
use crate::revocation::{MAX_REVOKED_IDS, Revocation, Revoked};

/// Longest wait between reconnection attempts of the listener.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(crate) struct RedisStore {
    link: Link,
    timeout: Duration,
    /// Shared with the listener task, which stops once the store is gone.
    version: Arc<watch::Sender<u64>>,
    /// Set by the listener while it is subscribed to the change channel.
    listening: Arc<AtomicBool>,
    /// Commands the listener heard, for this node.
    commands: broadcast::Sender<String>,
}

impl RedisStore {
    /// Connects; returns the store and its change listener (for the caller to run).
    pub(crate) async fn start(config: &RedisConfig) -> Result<(Self, BoxFuture<'static, ()>), BrokerError> {
        let link = Link::connect(config, config.timeout).await?;
        let version = Arc::new(watch::channel(0).0);
        let listening = Arc::new(AtomicBool::new(false));
        let commands = broadcast::channel(COMMAND_BACKLOG).0;
        let heard =
            Heard { version: Arc::downgrade(&version), commands: commands.clone(), listening: listening.clone() };
        let listener = Box::pin(listen(config.clone(), link.clone(), heard));
        Ok((Self { link, timeout: config.timeout, version, listening, commands }, listener))
    }

    async fn query<T: ::redis::FromRedisValue>(&self, cmd: ::redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.link.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(reply) => Ok(reply?),
            Err(_) => Err(StoreError::from(super::timeout(self.timeout))),
        }
    }

    async fn read(&self) -> Result<ControlState, StoreError> {
        let mut get = ::redis::cmd("MGET");
        get.arg(keys::control_version()).arg(keys::control_state());
        let (version, state): (Option<u64>, Option<String>) = self.query(get).await?;
        let mut state: ControlState = match state {
            Some(json) => serde_json::from_str(&json)?,
            None => ControlState::default(),
        };
        state.version = version.unwrap_or(0);
        Ok(state)
    }

    async fn write(&self, expected: u64, state: ControlState, blobs: Vec<Blob>) -> Result<u64, StoreError> {
        let keys = [keys::control_version(), keys::control_state(), keys::control_plugins()];
        let mut cmd = eval(scripts::CONTROL_REPLACE, &keys);
        cmd.arg(expected).arg(serde_json::to_string(&state)?).arg(keys::CONTROL_CHANNEL).arg(blobs.len());
        for blob in &blobs {
            cmd.arg(&blob.hash).arg(&*blob.bytes);
        }
        cmd.arg(state.plugin_hashes().into_iter().collect::<Vec<_>>());
        let (done, version): (i64, u64) = self.query(cmd).await?;
        if done == 1 { Ok(version) } else { Err(StoreError::Conflict { current: version }) }
    }

    async fn put_back(&self, state: ControlState, blobs: Vec<Blob>) -> Result<bool, StoreError> {
        let keys = [keys::control_version(), keys::control_state(), keys::control_plugins()];
        let mut cmd = eval(scripts::CONTROL_RESTORE, &keys);
        cmd.arg(state.version).arg(serde_json::to_string(&state)?).arg(keys::CONTROL_CHANNEL);
        for blob in &blobs {
            cmd.arg(&blob.hash).arg(&*blob.bytes);
        }
        Ok(self.query::<i64>(cmd).await? == 1)
    }

    async fn read_blob(&self, hash: String) -> Result<Option<Vec<u8>>, StoreError> {
        let mut get = ::redis::cmd("HGET");
        get.arg(keys::control_plugins()).arg(hash);
        self.query(get).await
    }

    async fn write_report(&self, node: String, report: Option<BTreeMap<String, String>>) -> Result<(), StoreError> {
        let key = keys::node_report(&node);
        let now = crate::clock::now_millis();
        let ttl = REPORT_TTL.as_millis() as u64;
        // The node's hash changes in one transaction; the set of nodes is another slot.
        let mut report_pipe = ::redis::pipe();
        report_pipe.atomic().del(&key).ignore();
        let mut nodes = ::redis::pipe();
        match report {
            None => nodes.zrem(keys::NODES, &node).ignore(),
            Some(report) => {
                if !report.is_empty() {
                    report_pipe.hset_multiple(&key, &report.into_iter().collect::<Vec<_>>()).ignore();
                    report_pipe.pexpire(&key, ttl as i64).ignore();
                }
                nodes.zadd(keys::NODES, &node, now).ignore()
            }
        };
        nodes.zrembyscore(keys::NODES, "-inf", now.saturating_sub(ttl)).ignore();
        for pipe in [report_pipe, nodes] {
            let mut conn = self.link.clone();
            match tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn)).await {
                Ok(reply) => reply?,
                Err(_) => return Err(StoreError::from(super::timeout(self.timeout))),
            }
        }
        Ok(())
    }

    /// The revocations that have not lapsed; lapsed ones are deleted.
    async fn read_revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let mut all = ::redis::cmd("HGETALL");
        all.arg(keys::REVOCATIONS);
        let fields: Vec<(String, String)> = self.query(all).await?;
        let now = crate::clock::now_millis() / 1000;
        let mut live = Vec::new();
        for (field, value) in fields {
            let parsed = field.split_once(':').zip(serde_json::from_str::<Revoked>(&value).ok());
            match parsed {
                Some(((tenant, user), revoked)) if now < revoked.until => {
                    live.push(Revocation { tenant: tenant.to_owned(), user: user.to_owned(), revoked });
                }
                _ => {
                    let mut del = ::redis::cmd("HDEL");
                    del.arg(keys::REVOCATIONS).arg(&field);
                    self.query::<()>(del).await?;
                }
            }
        }
        Ok(live)
    }

    async fn read_reports(&self, tenants: Vec<String>) -> Result<Vec<NodeReport>, StoreError> {
        let since = crate::clock::now_millis().saturating_sub(REPORT_TTL.as_millis() as u64);
        let mut live = ::redis::cmd("ZRANGEBYSCORE");
        live.arg(keys::NODES).arg(since).arg("+inf");
        let mut nodes: Vec<String> = self.query(live).await?;
        nodes.sort();
        let mut reports = Vec::with_capacity(nodes.len());
        for node in nodes {
            let reported = if tenants.is_empty() {
                Vec::new()
            } else {
                let mut get = ::redis::cmd("HMGET");
                get.arg(keys::node_report(&node)).arg(&tenants);
                self.query(get).await?
            };
            reports.push(NodeReport { reports: reported, node });
        }
        Ok(reports)
    }
}

impl ControlStore for RedisStore {
    fn load(&self) -> BoxFuture<'_, Result<ControlState, StoreError>> {
        Box::pin(self.read())
    }

    fn replace(&self, expected: u64, state: ControlState, blobs: Vec<Blob>) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write(expected, state, blobs))
    }

    fn blob(&self, hash: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(self.read_blob(hash.to_owned()))
    }

    fn version(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        let mut get = ::redis::cmd("GET");
        get.arg(keys::control_version());
        Box::pin(async move { Ok(self.query::<Option<u64>>(get).await?.unwrap_or(0)) })
    }

    fn restore(&self, state: ControlState, blobs: Vec<Blob>) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.put_back(state, blobs))
    }

    fn report(&self, node: &str, report: Option<BTreeMap<String, String>>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write_report(node.to_owned(), report))
    }

    fn reports(&self, tenants: Vec<String>) -> BoxFuture<'_, Result<Vec<NodeReport>, StoreError>> {
        Box::pin(self.read_reports(tenants))
    }

    fn command(&self, command: String) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut publish = ::redis::cmd("PUBLISH");
        publish.arg(keys::COMMANDS_CHANNEL).arg(command);
        Box::pin(async move { self.query::<()>(publish).await })
    }

    fn commands(&self) -> broadcast::Receiver<String> {
        self.commands.subscribe()
    }

    fn reply(&self, to: &str, answer: String) -> BoxFuture<'_, Result<(), StoreError>> {
        let key = keys::replies(to);
        let mut pipe = ::redis::pipe();
        pipe.atomic().rpush(&key, answer).ignore().pexpire(&key, REPLY_TTL.as_millis() as i64).ignore();
        Box::pin(async move {
            let mut conn = self.link.clone();
            match tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn)).await {
                Ok(reply) => Ok(reply?),
                Err(_) => Err(StoreError::from(super::timeout(self.timeout))),
            }
        })
    }

    fn replies(&self, to: &str) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let mut range = ::redis::cmd("LRANGE");
        range.arg(keys::replies(to)).arg(0).arg(-1);
        Box::pin(async move { self.query(range).await })
    }

    fn revoke(&self, tenant: &str, user: &str, revoked: Revoked) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut merge = eval(scripts::REVOKE_MERGE, &[keys::REVOCATIONS.to_owned()]);
        let value = serde_json::to_string(&revoked);
        merge.arg(format!("{tenant}:{user}"));
        Box::pin(async move {
            merge.arg(value?).arg(MAX_REVOKED_IDS);
            self.query::<()>(merge).await
        })
    }

    fn revocations(&self) -> BoxFuture<'_, Result<Vec<Revocation>, StoreError>> {
        Box::pin(self.read_revocations())
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn listening(&self) -> bool {
        self.listening.load(Relaxed)
    }
}

/// Where the listener reports what it hears. The version sender is weak: the listener stops
/// once the store is gone.
struct Heard {
    version: Weak<watch::Sender<u64>>,
    commands: broadcast::Sender<String>,
    /// Set while subscribed.
    listening: Arc<AtomicBool>,
}

/// Subscribes to the change and command channels and reports every announced version and
/// command; after each (re)connection it reports the current version, so watchers reload
/// what they missed.
async fn listen(config: RedisConfig, link: Link, heard: Heard) {
    let mut backoff = Duration::from_millis(50);
    while heard.version.strong_count() > 0 {
        let ended = session(&config, &link, &heard).await;
        heard.listening.store(false, Relaxed);
        if let Err(e) = ended {
            tracing::warn!(error = %e, retry_in = ?backoff, "control-plane change listener disconnected");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection of the listener; returns when it breaks or the store is gone.
async fn session(config: &RedisConfig, link: &Link, heard: &Heard) -> Result<(), StoreError> {
    let timeout = config.timeout;
    let mut transport = tokio::time::timeout(timeout * 3, Transport::connect(config))
        .await
        .map_err(|_| StoreError::from(super::timeout(timeout * 3)))??;
    let channels = [keys::CONTROL_CHANNEL.to_owned(), keys::COMMANDS_CHANNEL.to_owned()];
    tokio::time::timeout(timeout, transport.subscribe(&channels, true, false))
        .await
        .map_err(|_| StoreError::from(super::timeout(timeout)))??;
    let current: Option<u64> = ::redis::cmd("GET").arg(keys::control_version()).query_async(&mut link.clone()).await?;
    let Some(sender) = heard.version.upgrade() else { return Ok(()) };
    heard.listening.store(true, Relaxed);
    sender.send_replace(current.unwrap_or(0));
    drop(sender);
    let mut alive = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            msg = transport.next() => match msg {
                Some(Incoming::Message(channel, payload)) if channel == keys::COMMANDS_CHANNEL => {
                    if let Ok(command) = String::from_utf8(payload) {
                        let _ = heard.commands.send(command);
                    }
                }
                Some(Incoming::Message(_, payload)) => {
                    let Some(sender) = heard.version.upgrade() else { return Ok(()) };
                    if let Some(v) = std::str::from_utf8(&payload).ok().and_then(|s| s.parse().ok()) {
                        sender.send_replace(v);
                    }
                }
                Some(Incoming::Other | Incoming::Unsubscribed(_)) => {}
                // Listening again reads the version, so nothing announced meanwhile is missed.
                Some(Incoming::NodeLost) | None => return Ok(()),
            },
            _ = alive.tick() => if heard.version.strong_count() == 0 { return Ok(()) },
        }
    }
}
