//! Durable ingestion: every node reads every tenant's `notify:{tenant}:ingest` stream through
//! the shared consumer group, acknowledges entries once the broker took them, and claims
//! entries that a dead node left pending.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ::redis::Value;
use ::redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use super::{IngestError, Item, Node, Source, ingest};
use crate::backend::BrokerError;
use crate::backend::redis::{Link, keys};
use crate::config::RedisConfig;
use crate::tenant::Tenant;

/// Entries read per XREADGROUP.
const READ_COUNT: usize = 256;
/// How long one XREADGROUP blocks; also how long shutdown waits for the reader.
const BLOCK: Duration = Duration::from_millis(500);
/// On a cluster, the pause after a round of non-blocking reads that found nothing.
const CLUSTER_POLL: Duration = Duration::from_millis(50);
/// The first retry delay after a failed round; it doubles up to `max_backoff`.
const MIN_BACKOFF: Duration = Duration::from_millis(50);

/// Reads every tenant's ingest stream through the shared consumer group.
pub(super) struct Reader {
    node: Arc<Node>,
    /// Its response timeout covers the blocking read.
    conn: Link,
    claim_idle: Duration,
    max_backoff: Duration,
    consumer: String,
    /// Every tenant's ingest stream key, and the tenant by key, refreshed from the registry
    /// every round (tenants come and go at runtime).
    streams: Vec<String>,
    tenants: HashMap<String, Arc<Tenant>>,
    /// Streams whose consumer group exists.
    grouped: HashSet<String>,
}

/// Where the reader is between rounds.
struct Progress {
    /// First this consumer's own pending entries (left by a failed publish or a restart
    /// under the same node id), then new ones.
    backlog: bool,
    next_claim: Instant,
    backoff: Duration,
}

impl Reader {
    pub(super) async fn connect(node: &Arc<Node>, config: &RedisConfig) -> Result<Self, BrokerError> {
        Ok(Self {
            node: node.clone(),
            conn: Link::connect(config, config.timeout + BLOCK).await?,
            claim_idle: config.claim_idle,
            max_backoff: config.max_backoff,
            consumer: node.node_id.to_string(),
            streams: Vec::new(),
            tenants: HashMap::new(),
            grouped: HashSet::new(),
        })
    }

    pub(super) async fn run(mut self) {
        let mut progress = Progress { backlog: true, next_claim: Instant::now(), backoff: MIN_BACKOFF };
        while !self.node.drain().is_draining() {
            if !self.broker_was_healthy().await {
                continue;
            }
            match self.round(&mut progress).await {
                Ok(()) => progress.backoff = MIN_BACKOFF,
                Err(e) => self.back_off(&mut progress, &e).await,
            }
        }
    }

    /// Waits while the broker is down: nothing read could be handed on. After an outage,
    /// gives the other nodes time to resubscribe, so the entries read next find their
    /// subscribers live (clients of tenants with history would get them anyway: their nodes
    /// tell them to resume). Returns false when the caller should check again.
    async fn broker_was_healthy(&self) -> bool {
        if self.node.broker.healthy() {
            return true;
        }
        while !self.node.broker.healthy() {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = self.node.drain().started() => return false,
            }
        }
        tokio::time::sleep(self.max_backoff * 2 + Duration::from_secs(1)).await;
        false
    }

    /// One read over every stream, then the periodic claim of abandoned entries.
    async fn round(&mut self, progress: &mut Progress) -> Result<(), IngestError> {
        self.refresh();
        if self.streams.is_empty() {
            // No tenant yet, and XREADGROUP needs a stream: wait as a blocking read would.
            tokio::select! {
                () = tokio::time::sleep(BLOCK) => {}
                () = self.node.drain().started() => {}
            }
            return Ok(());
        }
        if self.streams.iter().any(|s| !self.grouped.contains(s)) {
            // Groups start at 0: entries added before a new tenant's group existed are read.
            self.create_groups().await?;
        }
        let read_any = self.read(progress.backlog).await?;
        if progress.backlog && !read_any {
            progress.backlog = false;
        }
        if self.conn.is_cluster() && !read_any {
            tokio::time::sleep(CLUSTER_POLL).await;
        }
        if Instant::now() >= progress.next_claim {
            for (key, tenant) in self.tenants.clone() {
                self.claim(&tenant, &key).await?;
            }
            progress.next_claim = Instant::now() + self.claim_idle / 2;
        }
        Ok(())
    }

    async fn back_off(&mut self, progress: &mut Progress, e: &IngestError) {
        if e.missing_group() {
            self.grouped.clear();
        }
        progress.backlog = true;
        tracing::warn!(error = %e, retry_in = ?progress.backoff, "Redis ingest stream reader failed; retrying");
        tokio::select! {
            () = tokio::time::sleep(progress.backoff) => {}
            () = self.node.drain().started() => {}
        }
        progress.backoff = (progress.backoff * 2).min(self.max_backoff);
    }

    /// Reads and processes entries: this consumer's pending ones (`backlog`) or new ones.
    /// One Redis: one blocking read over every tenant's stream. A cluster cannot read streams
    /// of different slots in one command: each is read without blocking. Returns whether
    /// anything was read.
    async fn read(&mut self, backlog: bool) -> Result<bool, IngestError> {
        let start = if backlog { "0" } else { ">" };
        let streams = self.streams.clone();
        let groups: Vec<&[String]> =
            if self.conn.is_cluster() { streams.chunks(1).collect() } else { vec![&streams[..]] };
        let mut read_any = false;
        for group in groups {
            let mut read = ::redis::cmd("XREADGROUP");
            read.arg("GROUP").arg(keys::INGEST_GROUP).arg(&self.consumer).arg("COUNT").arg(READ_COUNT);
            if !self.conn.is_cluster() {
                read.arg("BLOCK").arg(BLOCK.as_millis() as u64);
            }
            read.arg("STREAMS").arg(group).arg(vec![start; group.len()]);
            let reply: Option<StreamReadReply> = read.query_async(&mut self.conn).await?;
            for stream in reply.map(|r| r.keys).unwrap_or_default() {
                let Some(tenant) = self.tenants.get(&stream.key).cloned() else { continue };
                read_any |= !stream.ids.is_empty();
                self.process(&tenant, &stream.key, stream.ids).await?;
            }
        }
        Ok(read_any)
    }

    /// The tenants of the registry now, by ingest stream.
    fn refresh(&mut self) {
        self.tenants = self.node.tenants().all().into_iter().map(|t| (keys::ingest_stream(&t.id), t)).collect();
        self.streams = self.tenants.keys().cloned().collect();
        self.grouped.retain(|s| self.tenants.contains_key(s));
    }

    async fn create_groups(&mut self) -> Result<(), IngestError> {
        for key in self.streams.iter().filter(|s| !self.grouped.contains(*s)) {
            self.conn.create_group(key, keys::INGEST_GROUP, "0").await?;
        }
        self.grouped.extend(self.streams.iter().cloned());
        Ok(())
    }

    /// Takes over entries another consumer left pending for longer than `claim_idle`.
    async fn claim(&mut self, tenant: &Arc<Tenant>, key: &str) -> Result<(), IngestError> {
        let mut cursor = "0-0".to_string();
        loop {
            let reply: StreamAutoClaimReply = ::redis::cmd("XAUTOCLAIM")
                .arg(key)
                .arg(keys::INGEST_GROUP)
                .arg(&self.consumer)
                .arg(self.claim_idle.as_millis() as u64)
                .arg(&cursor)
                .arg("COUNT")
                .arg(READ_COUNT)
                .query_async(&mut self.conn)
                .await?;
            if !reply.claimed.is_empty() {
                self.node.metrics.ingest_claimed.fetch_add(reply.claimed.len() as u64, Relaxed);
                tracing::info!(
                    stream = key,
                    entries = reply.claimed.len(),
                    "claimed entries another node left pending"
                );
                self.process(tenant, key, reply.claimed).await?;
            }
            if reply.next_stream_id == "0-0" {
                return Ok(());
            }
            cursor = reply.next_stream_id;
        }
    }

    /// Ingests entries and acknowledges them once handed on.
    async fn process(&mut self, tenant: &Arc<Tenant>, key: &str, entries: Vec<StreamId>) -> Result<(), IngestError> {
        if entries.is_empty() {
            return Ok(());
        }
        let items: Vec<Item> = entries.into_iter().map(item).collect();
        ingest(&self.node, &mut self.conn, tenant, &items, Source::Stream).await?;
        let ids: Vec<&str> = items.iter().filter_map(|i| i.entry.as_deref()).collect();
        ::redis::cmd("XACK")
            .arg(key)
            .arg(keys::INGEST_GROUP)
            .arg(&ids)
            .exec_async(&mut self.conn)
            .await
            .map_err(IngestError::Ack)
    }
}

/// A stream entry as an item: its `event` field.
fn item(mut e: StreamId) -> Item {
    let body = match e.map.remove("event") {
        Some(Value::BulkString(b)) => Ok(b),
        Some(Value::SimpleString(s)) => Ok(s.into_bytes()),
        Some(_) => Err("the `event` field is not a string"),
        None => Err("entry has no `event` field (XADD notify:{tenant}:ingest * event <json>)"),
    };
    Item { body, entry: Some(e.id) }
}
