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

use tokio::sync::watch;

use super::pubsub::{Incoming, Transport};
use super::scripts::{self, eval};
use super::{Link, keys};
use crate::backend::control::{Blob, ControlState, ControlStore, NodeReport, REPORT_TTL, StoreError};
use crate::backend::{BoxFuture, BrokerError};
use crate::config::RedisConfig;

/// Longest wait between reconnection attempts of the listener.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(crate) struct RedisStore {
    link: Link,
    timeout: Duration,
    /// Shared with the listener task, which stops once the store is gone.
    version: Arc<watch::Sender<u64>>,
    /// Set by the listener while it is subscribed to the change channel.
    listening: Arc<AtomicBool>,
}

impl RedisStore {
    /// Connects and starts the listener.
    pub(crate) async fn start(config: &RedisConfig) -> Result<Self, BrokerError> {
        let link = Link::connect(config, config.timeout).await?;
        let version = Arc::new(watch::channel(0).0);
        let listening = Arc::new(AtomicBool::new(false));
        tokio::spawn(listen(config.clone(), link.clone(), Arc::downgrade(&version), listening.clone()));
        Ok(Self { link, timeout: config.timeout, version, listening })
    }

    async fn query<T: ::redis::FromRedisValue>(&self, cmd: ::redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.link.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(reply) => Ok(reply?),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
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
                Err(_) => return Err(StoreError::Timeout(self.timeout)),
            }
        }
        Ok(())
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

    fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn listening(&self) -> bool {
        self.listening.load(Relaxed)
    }
}

/// Subscribes to the change channel and reports every announced version; after each
/// (re)connection it reports the current version, so watchers reload what they missed.
async fn listen(config: RedisConfig, link: Link, version: Weak<watch::Sender<u64>>, listening: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(50);
    while version.strong_count() > 0 {
        let ended = session(&config, &link, &version, &listening).await;
        listening.store(false, Relaxed);
        if let Err(e) = ended {
            tracing::warn!(error = %e, retry_in = ?backoff, "control-plane change listener disconnected");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection of the listener; returns when it breaks or the store is gone.
async fn session(
    config: &RedisConfig,
    link: &Link,
    version: &Weak<watch::Sender<u64>>,
    listening: &AtomicBool,
) -> Result<(), StoreError> {
    let timeout = config.timeout;
    let mut transport = tokio::time::timeout(timeout * 3, Transport::connect(config))
        .await
        .map_err(|_| StoreError::Timeout(timeout * 3))??;
    tokio::time::timeout(timeout, transport.subscribe(&[keys::CONTROL_CHANNEL.to_owned()], true, false))
        .await
        .map_err(|_| StoreError::Timeout(timeout))??;
    let current: Option<u64> = ::redis::cmd("GET").arg(keys::control_version()).query_async(&mut link.clone()).await?;
    let Some(sender) = version.upgrade() else { return Ok(()) };
    listening.store(true, Relaxed);
    sender.send_replace(current.unwrap_or(0));
    drop(sender);
    let mut alive = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            msg = transport.next() => match msg {
                Some(Incoming::Message(_, payload)) => {
                    let Some(sender) = version.upgrade() else { return Ok(()) };
                    if let Some(v) = std::str::from_utf8(&payload).ok().and_then(|s| s.parse().ok()) {
                        sender.send_replace(v);
                    }
                }
                Some(Incoming::Other) => {}
                None => return Ok(()),
            },
            _ = alive.tick() => if version.strong_count() == 0 { return Ok(()) },
        }
    }
}
