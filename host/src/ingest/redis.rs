//! Publishing through Redis, with the same body and validation as `POST /v1/publish`:
//!
//! - durable: `XADD notify:{tenant}:ingest * event <json>`. All nodes share the consumer group
//!   `notify`; an entry is XACKed only after its event was handed to the broker, so a node
//!   that dies leaves it pending and another node claims it (XAUTOCLAIM) after `claim_idle`.
//!   Delivery is at least once: an entry whose ack was lost is processed again, under the
//!   same event id (`s-<entry id>`), so receivers can tell.
//! - fire-and-forget: `PUBLISH notify:{tenant}:publish <json>`. One node at a time (the
//!   holder of a lease in Redis) subscribes to these channels, so each message is processed
//!   once; messages sent while no node holds the lease are lost, as with any pub/sub.
//!
//! An invalid entry or message is written to `notify:{tenant}:dead` with the error and then
//! acknowledged; nothing is dropped silently.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ::redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use ::redis::{RedisError, Value};
use futures_util::FutureExt;

use crate::app::App;
use crate::broker::pubsub::{Incoming, Transport};
use crate::broker::{BrokerError, Link};
use crate::config::RedisConfig;
use crate::event::Event;
use crate::tenant::Tenant;

/// The consumer group every node joins.
pub(crate) const GROUP: &str = "notify";
/// Entries read per XREADGROUP.
const READ_COUNT: usize = 256;
/// How long one XREADGROUP blocks; also how long shutdown waits for the reader.
const BLOCK: Duration = Duration::from_millis(500);
/// On a cluster, the pause after a round of non-blocking reads that found nothing.
const CLUSTER_POLL: Duration = Duration::from_millis(50);
/// Dead-letter streams keep about this many entries.
const DEAD_LETTER_MAXLEN: usize = 10_000;
/// Pub/sub messages handled in one broker publish.
const PUBSUB_BATCH: usize = 256;
/// Lifetime of the pub/sub ingestion lease; the holder renews it every `LEASE / 4`.
const LEASE: Duration = Duration::from_secs(4);
const LEASE_KEY: &str = "notify:ingest:publish-lease";
/// Renews the lease only for its holder.
const RENEW: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Releases the lease only for its holder.
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

pub(crate) fn ingest_stream(tenant: &str) -> String {
    format!("notify:{tenant}:ingest")
}

pub(crate) fn publish_channel(tenant: &str) -> String {
    format!("notify:{tenant}:publish")
}

pub(crate) fn dead_letter_stream(tenant: &str) -> String {
    format!("notify:{tenant}:dead")
}

/// Starts both consumers on `app.workers`; they stop when the host drains.
pub(crate) async fn start(app: &Arc<App>, config: &RedisConfig) -> Result<(), BrokerError> {
    let reader = Reader {
        app: app.clone(),
        conn: Link::connect(config, config.timeout + BLOCK).await?,
        claim_idle: config.claim_idle,
        max_backoff: config.max_backoff,
    };
    app.workers.spawn(reader.run());
    let leader =
        Leader { app: app.clone(), conn: Link::connect(config, config.timeout).await?, config: config.clone() };
    app.workers.spawn(leader.run());
    Ok(())
}

/// Where an entry came from, for dead letters and metrics.
#[derive(Clone, Copy)]
enum Source {
    Stream,
    PubSub,
}

/// One entry or message to ingest: its id (stream entries only) and body.
struct Item {
    entry: Option<String>,
    body: Result<Vec<u8>, &'static str>,
}

/// Validates, runs the tenant's plugins and hands the events to the broker; invalid items
/// go to the dead-letter stream first. `Err` means nothing may be acknowledged.
async fn ingest(
    app: &App,
    conn: &mut Link,
    tenant: &Arc<Tenant>,
    items: &[Item],
    source: Source,
) -> Result<(), String> {
    let mut events: Vec<Event> = Vec::with_capacity(items.len());
    let mut dead = Vec::new();
    for item in items {
        let parsed = match &item.body {
            Ok(body) => crate::ingest::parse_one(&app.ids, body).map_err(|e| e.to_string()),
            Err(why) => Err((*why).to_string()),
        };
        match parsed {
            Ok(mut event) => {
                if let Some(entry) = &item.entry {
                    event.id = format!("s-{entry}");
                }
                events.push(event);
            }
            Err(error) => {
                let raw = item.body.as_deref().unwrap_or_default();
                let source_name = match source {
                    Source::Stream => "ingest",
                    Source::PubSub => "publish",
                };
                let mut cmd = ::redis::cmd("XADD");
                cmd.arg(dead_letter_stream(&tenant.id))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(DEAD_LETTER_MAXLEN)
                    .arg("*")
                    .arg("source")
                    .arg(source_name)
                    .arg("entry")
                    .arg(item.entry.as_deref().unwrap_or(""))
                    .arg("error")
                    .arg(&error)
                    .arg("event")
                    .arg(raw);
                dead.push(cmd);
                tracing::warn!(tenant = &*tenant.id, entry = item.entry.as_deref(), %error, "invalid event sent to the dead-letter stream");
            }
        }
    }
    let dead_count = dead.len() as u64;
    if dead_count > 0 {
        conn.run_all(dead).await.map_err(|e| format!("writing dead letters: {e}"))?;
        app.broker_metrics.dead_letters.fetch_add(dead_count, Relaxed);
    }
    let accepted = events.len() as u64;
    super::pipeline::publish(app, tenant, events).await.map_err(|e| e.to_string())?;
    let counter = match source {
        Source::Stream => &app.broker_metrics.ingest_stream_entries,
        Source::PubSub => &app.broker_metrics.ingest_pubsub_messages,
    };
    counter.fetch_add(accepted + dead_count, Relaxed);
    Ok(())
}

/// Reads every tenant's ingest stream through the shared consumer group.
struct Reader {
    app: Arc<App>,
    /// Its response timeout covers the blocking read.
    conn: Link,
    claim_idle: Duration,
    max_backoff: Duration,
}

impl Reader {
    async fn run(mut self) {
        let tenants: Vec<Arc<Tenant>> = self.app.tenants.iter().cloned().collect();
        let keys: Vec<String> = tenants.iter().map(|t| ingest_stream(&t.id)).collect();
        let by_key: HashMap<&str, &Arc<Tenant>> = keys.iter().map(String::as_str).zip(&tenants).collect();
        let consumer = self.app.node_id.to_string();
        let mut backoff = Duration::from_millis(50);
        let mut groups_ready = false;
        // First this consumer's own pending entries (left by a failed publish or a restart
        // under the same node id), then new ones.
        let mut backlog = true;
        let mut next_claim = Instant::now();
        let mut was_healthy = true;
        while !self.app.drain.is_draining() {
            if !self.app.broker.healthy() {
                was_healthy = false;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    () = self.app.drain.started() => {}
                }
                continue;
            }
            if !was_healthy {
                // Give the other nodes time to resubscribe after the same outage, so the
                // entries read next find their subscribers live (clients of tenants with
                // history would get them anyway: their nodes tell them to resume).
                was_healthy = true;
                tokio::time::sleep(self.max_backoff * 2 + Duration::from_secs(1)).await;
            }
            let round = async {
                if !groups_ready {
                    self.create_groups(&keys).await?;
                    groups_ready = true;
                }
                let start = if backlog { "0" } else { ">" };
                // One Redis: one blocking read over every tenant's stream. A cluster cannot
                // read streams of different slots in one command: each is read without
                // blocking, with a short pause after a round that found nothing.
                let groups: Vec<&[String]> =
                    if self.conn.is_cluster() { keys.chunks(1).collect() } else { vec![&keys[..]] };
                let block = if self.conn.is_cluster() { None } else { Some(BLOCK) };
                let mut read_any = false;
                for group in groups {
                    let mut read = ::redis::cmd("XREADGROUP");
                    read.arg("GROUP").arg(GROUP).arg(&consumer).arg("COUNT").arg(READ_COUNT);
                    if let Some(block) = block {
                        read.arg("BLOCK").arg(block.as_millis() as u64);
                    }
                    read.arg("STREAMS").arg(group).arg(vec![start; group.len()]);
                    let reply: Option<StreamReadReply> =
                        read.query_async(&mut self.conn).await.map_err(|e| e.to_string())?;
                    for stream in reply.map(|r| r.keys).unwrap_or_default() {
                        let Some(tenant) = by_key.get(stream.key.as_str()) else { continue };
                        read_any |= !stream.ids.is_empty();
                        self.process(tenant, &stream.key, stream.ids).await?;
                    }
                }
                if backlog && !read_any {
                    backlog = false;
                }
                if block.is_none() && !read_any {
                    tokio::time::sleep(CLUSTER_POLL).await;
                }
                if Instant::now() >= next_claim {
                    for (key, tenant) in &by_key {
                        self.claim(tenant, key, &consumer).await?;
                    }
                    next_claim = Instant::now() + self.claim_idle / 2;
                }
                Ok::<(), String>(())
            };
            match round.await {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(e) => {
                    if e.contains("NOGROUP") {
                        groups_ready = false;
                    }
                    backlog = true;
                    tracing::warn!(error = %e, retry_in = ?backoff, "Redis ingest stream reader failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.app.drain.started() => {}
                    }
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }

    async fn create_groups(&mut self, keys: &[String]) -> Result<(), String> {
        for key in keys {
            let created: Result<(), RedisError> = ::redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(key)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut self.conn)
                .await;
            match created {
                Err(e) if e.code() != Some("BUSYGROUP") => return Err(e.to_string()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Takes over entries another consumer left pending for longer than `claim_idle`.
    async fn claim(&mut self, tenant: &Arc<Tenant>, key: &str, consumer: &str) -> Result<(), String> {
        let mut cursor = "0-0".to_string();
        loop {
            let reply: StreamAutoClaimReply = ::redis::cmd("XAUTOCLAIM")
                .arg(key)
                .arg(GROUP)
                .arg(consumer)
                .arg(self.claim_idle.as_millis() as u64)
                .arg(&cursor)
                .arg("COUNT")
                .arg(READ_COUNT)
                .query_async(&mut self.conn)
                .await
                .map_err(|e| e.to_string())?;
            if !reply.claimed.is_empty() {
                self.app.broker_metrics.ingest_claimed.fetch_add(reply.claimed.len() as u64, Relaxed);
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
    async fn process(&mut self, tenant: &Arc<Tenant>, key: &str, entries: Vec<StreamId>) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let items: Vec<Item> = entries
            .into_iter()
            .map(|mut e| Item {
                body: match e.map.remove("event") {
                    Some(Value::BulkString(b)) => Ok(b),
                    Some(Value::SimpleString(s)) => Ok(s.into_bytes()),
                    Some(_) => Err("the `event` field is not a string"),
                    None => Err("entry has no `event` field (XADD notify:{tenant}:ingest * event <json>)"),
                },
                entry: Some(e.id),
            })
            .collect();
        ingest(&self.app, &mut self.conn, tenant, &items, Source::Stream).await?;
        let ids: Vec<&str> = items.iter().filter_map(|i| i.entry.as_deref()).collect();
        ::redis::cmd("XACK")
            .arg(key)
            .arg(GROUP)
            .arg(&ids)
            .exec_async(&mut self.conn)
            .await
            .map_err(|e| format!("XACK failed (entries will be processed again): {e}"))
    }
}

/// Holds the pub/sub ingestion lease and, while it does, processes `notify:*:publish`.
struct Leader {
    app: Arc<App>,
    conn: Link,
    config: RedisConfig,
}

impl Leader {
    async fn run(mut self) {
        let node = self.app.node_id.to_string();
        let lease_ms = LEASE.as_millis() as u64;
        let channels: Vec<String> = self.app.tenants.iter().map(|t| publish_channel(&t.id)).collect();
        while !self.app.drain.is_draining() {
            if self.hold_lease(&node, lease_ms).await {
                match self.lead(&node, lease_ms, &channels).await {
                    Ok(()) => {}
                    Err(e) => tracing::warn!(error = %e, "pub/sub ingestion interrupted"),
                }
            }
            tokio::select! {
                () = tokio::time::sleep(LEASE / 4) => {}
                () = self.app.drain.started() => {}
            }
        }
        let _: Result<i64, _> =
            ::redis::Script::new(RELEASE).key(LEASE_KEY).arg(&node).invoke_async(&mut self.conn).await;
    }

    /// Renews the lease if this node holds it, or takes it if nobody does.
    async fn hold_lease(&mut self, node: &str, lease_ms: u64) -> bool {
        let renewed: Result<i64, _> =
            ::redis::Script::new(RENEW).key(LEASE_KEY).arg(node).arg(lease_ms).invoke_async(&mut self.conn).await;
        if matches!(renewed, Ok(1)) {
            return true;
        }
        let taken: Result<Option<String>, _> = ::redis::cmd("SET")
            .arg(LEASE_KEY)
            .arg(node)
            .arg("NX")
            .arg("PX")
            .arg(lease_ms)
            .query_async(&mut self.conn)
            .await;
        matches!(taken, Ok(Some(_)))
    }

    async fn lead(&mut self, node: &str, lease_ms: u64, channels: &[String]) -> Result<(), String> {
        let timeout = self.config.timeout;
        let mut transport = tokio::time::timeout(timeout * 3, Transport::connect(&self.config))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(timeout, transport.subscribe(channels, true, false))
            .await
            .map_err(|_| "SUBSCRIBE timed out".to_string())?
            .map_err(|e| e.to_string())?;
        tracing::info!(node, "holding the pub/sub ingestion lease");
        let mut renew = tokio::time::interval(LEASE / 4);
        renew.tick().await;
        loop {
            tokio::select! {
                () = self.app.drain.started() => return Ok(()),
                _ = renew.tick() => {
                    if !self.hold_lease(node, lease_ms).await {
                        return Err("lost the lease".into());
                    }
                }
                msg = transport.next() => {
                    let mut batch = Vec::new();
                    match msg {
                        Some(Incoming::Message(channel, payload)) => batch.push((channel, payload)),
                        Some(Incoming::Other) => continue,
                        None => return Err("pub/sub connection closed".into()),
                    }
                    while batch.len() < PUBSUB_BATCH {
                        match transport.next().now_or_never() {
                            Some(Some(Incoming::Message(channel, payload))) => batch.push((channel, payload)),
                            Some(Some(Incoming::Other)) => {}
                            _ => break,
                        }
                    }
                    self.handle(batch).await;
                }
            }
        }
    }

    /// Fire-and-forget: a batch the broker cannot take is counted and logged, not retried.
    async fn handle(&mut self, batch: Vec<(String, Vec<u8>)>) {
        let mut by_tenant: HashMap<String, Vec<Item>> = HashMap::new();
        for (channel, payload) in batch {
            let tenant = channel.strip_prefix("notify:").and_then(|r| r.strip_suffix(":publish"));
            if let Some(tenant) = tenant {
                by_tenant.entry(tenant.to_owned()).or_default().push(Item { entry: None, body: Ok(payload) });
            }
        }
        for (id, items) in by_tenant {
            let Some(tenant) = self.app.tenants.get(&id).cloned() else { continue };
            if let Err(e) = ingest(&self.app, &mut self.conn, &tenant, &items, Source::PubSub).await {
                tracing::warn!(tenant = id, messages = items.len(), error = %e, "fire-and-forget events lost: the broker could not take them");
            }
        }
    }
}
