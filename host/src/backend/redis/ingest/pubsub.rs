//! Fire-and-forget ingestion: the node holding a lease in Redis subscribes to every tenant's
//! `notify:{tenant}:publish` channel and processes what arrives, in batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use super::{IngestError, Item, Node, Source, ingest};
use crate::backend::BrokerError;
use crate::backend::redis::pubsub::{Incoming, Transport};
use crate::backend::redis::{DELETE_IF_EQUAL, LEASE_RENEW, Link, keys};
use crate::config::RedisConfig;

/// Pub/sub messages handled in one broker publish.
const PUBSUB_BATCH: usize = 256;
/// Lifetime of the pub/sub ingestion lease; the holder renews it every `LEASE / 4`.
const LEASE: Duration = Duration::from_secs(4);

/// Every tenant's fire-and-forget channel, sorted.
fn publish_channels(node: &Node) -> Vec<String> {
    let mut channels: Vec<String> = node.tenants().all().into_iter().map(|t| keys::publish_channel(&t.id)).collect();
    channels.sort();
    channels
}

/// Holds the pub/sub ingestion lease and, while it does, processes `notify:*:publish`.
pub(super) struct Leader {
    node: Arc<Node>,
    conn: Link,
    config: RedisConfig,
}

impl Leader {
    pub(super) async fn connect(node: &Arc<Node>, config: &RedisConfig) -> Result<Self, BrokerError> {
        Ok(Self { node: node.clone(), conn: Link::connect(config, config.timeout).await?, config: config.clone() })
    }

    pub(super) async fn run(mut self) {
        let node = self.node.node_id.to_string();
        let lease_ms = LEASE.as_millis() as u64;
        while !self.node.drain().is_draining() {
            let channels = publish_channels(&self.node);
            // With no tenant yet there is nothing to subscribe to: SUBSCRIBE needs a channel.
            if !channels.is_empty() && self.hold_lease(&node, lease_ms).await {
                match self.lead(&node, lease_ms, &channels).await {
                    Ok(()) => {}
                    Err(e) => tracing::warn!(error = %e, "pub/sub ingestion interrupted"),
                }
            }
            tokio::select! {
                () = tokio::time::sleep(LEASE / 4) => {}
                () = self.node.drain().started() => {}
            }
        }
        let _: Result<i64, _> = ::redis::Script::new(DELETE_IF_EQUAL)
            .key(keys::PUBLISH_LEASE)
            .arg(&node)
            .invoke_async(&mut self.conn)
            .await;
    }

    /// Renews the lease if this node holds it, or takes it if nobody does.
    async fn hold_lease(&mut self, node: &str, lease_ms: u64) -> bool {
        let renewed: Result<i64, _> = ::redis::Script::new(LEASE_RENEW)
            .key(keys::PUBLISH_LEASE)
            .arg(node)
            .arg(lease_ms)
            .invoke_async(&mut self.conn)
            .await;
        if matches!(renewed, Ok(1)) {
            return true;
        }
        let taken: Result<Option<String>, _> = ::redis::cmd("SET")
            .arg(keys::PUBLISH_LEASE)
            .arg(node)
            .arg("NX")
            .arg("PX")
            .arg(lease_ms)
            .query_async(&mut self.conn)
            .await;
        matches!(taken, Ok(Some(_)))
    }

    async fn lead(&mut self, node: &str, lease_ms: u64, channels: &[String]) -> Result<(), IngestError> {
        let timeout = self.config.timeout;
        let mut transport = tokio::time::timeout(timeout * 3, Transport::connect(&self.config))
            .await
            .map_err(|_| IngestError::PubSub("connect timed out"))??;
        tokio::time::timeout(timeout, transport.subscribe(channels, true, false))
            .await
            .map_err(|_| IngestError::PubSub("SUBSCRIBE timed out"))??;
        tracing::info!(node, "holding the pub/sub ingestion lease");
        let mut renew = tokio::time::interval(LEASE / 4);
        renew.tick().await;
        loop {
            tokio::select! {
                () = self.node.drain().started() => return Ok(()),
                _ = renew.tick() => {
                    if !self.hold_lease(node, lease_ms).await {
                        return Err(IngestError::PubSub("lost the lease"));
                    }
                    if publish_channels(&self.node) != channels {
                        // Tenants came or went: subscribe again to the current set.
                        return Ok(());
                    }
                }
                msg = transport.next() => {
                    let mut batch = Vec::new();
                    match msg {
                        Some(Incoming::Message(channel, payload)) => batch.push((channel, payload)),
                        Some(Incoming::Other | Incoming::Unsubscribed(_)) => continue,
                        Some(Incoming::NodeLost) => return Err(IngestError::PubSub("a cluster node's connection dropped")),
                        None => return Err(IngestError::PubSub("pub/sub connection closed")),
                    }
                    while batch.len() < PUBSUB_BATCH {
                        match transport.next().now_or_never() {
                            Some(Some(Incoming::Message(channel, payload))) => batch.push((channel, payload)),
                            Some(Some(Incoming::Other | Incoming::Unsubscribed(_))) => {}
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
            let tenant = keys::parse_publish_channel(&channel);
            if let Some(tenant) = tenant {
                by_tenant.entry(tenant.to_owned()).or_default().push(Item { entry: None, body: Ok(payload) });
            }
        }
        for (id, items) in by_tenant {
            let Some(tenant) = self.node.tenants().get(&id) else { continue };
            if let Err(e) = ingest(&self.node, &mut self.conn, &tenant, &items, Source::PubSub).await {
                tracing::warn!(tenant = id, messages = items.len(), error = %e, "fire-and-forget events lost: the broker could not take them");
            }
        }
    }
}
