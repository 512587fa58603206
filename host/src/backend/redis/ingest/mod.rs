//! Publishing through Redis, with the same body, validation and pipeline as
//! `POST /v1/publish`:
//!
//! - durable (`stream`): `XADD notify:{tenant}:ingest * event <json>`. All nodes share the
//!   consumer group `notify`; an entry is XACKed only after its event was handed to the
//!   broker, so a node that dies leaves it pending and another node claims it (XAUTOCLAIM)
//!   after `claim_idle`. Delivery is at least once: an entry whose ack was lost is processed
//!   again, under the same event id (`s-<entry id>`), so receivers can tell.
//! - fire-and-forget (`pubsub`): `PUBLISH notify:{tenant}:publish <json>`. One node at a time
//!   (the holder of a lease in Redis) subscribes to these channels, so each message is
//!   processed once; messages sent while no node holds the lease are lost, as with any
//!   pub/sub.
//!
//! An invalid entry or message is written to `notify:{tenant}:dead` with the error and then
//! acknowledged, and the tenant's webhooks are told (`event.dead_lettered`); nothing is
//! dropped silently.

mod pubsub;
mod stream;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use ::redis::{Cmd, RedisError};
use tokio_util::task::TaskTracker;

use super::{Link, keys};
use crate::backend::ingest::{Ingestion, Publisher};
use crate::backend::{Broker, BrokerError};
use crate::config::RedisConfig;
use crate::drain::Drain;
use crate::event::Event;
use crate::metrics::BrokerMetrics;
use crate::tenant::{Tenant, Tenants};
use crate::webhook::{Notice, Webhooks, dead_lettered};

/// Dead-letter streams keep about this many entries.
const DEAD_LETTER_MAXLEN: usize = 10_000;

/// Why a round of ingestion stopped; nothing of it may be acknowledged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IngestError {
    #[error("Redis: {0}")]
    Redis(#[from] RedisError),
    #[error("writing dead letters: {0}")]
    DeadLetters(#[source] RedisError),
    #[error("XACK failed (entries will be processed again): {0}")]
    Ack(#[source] RedisError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("{0}")]
    PubSub(&'static str),
}

impl IngestError {
    /// The consumer group is gone (a flushed or restarted Redis): create it again.
    fn missing_group(&self) -> bool {
        match self {
            Self::Redis(e) | Self::DeadLetters(e) | Self::Ack(e) => e.code() == Some("NOGROUP"),
            Self::Broker(_) | Self::PubSub(_) => false,
        }
    }
}

/// What the consumers use of the node and of the Redis backends.
struct Node {
    publisher: Arc<dyn Publisher>,
    /// Nothing is read while the broker is down: it could not be handed on.
    broker: Arc<dyn Broker>,
    metrics: Arc<BrokerMetrics>,
    node_id: Arc<str>,
    webhooks: Arc<Webhooks>,
}

/// The parts of the Redis backends the consumers use.
pub(in crate::backend::redis) struct NodeParts {
    pub broker: Arc<dyn Broker>,
    pub metrics: Arc<BrokerMetrics>,
    pub node_id: Arc<str>,
}

impl Node {
    fn drain(&self) -> &Drain {
        self.publisher.drain()
    }

    fn tenants(&self) -> &Tenants {
        self.publisher.tenants()
    }
}

/// The starter of both consumers (`broker.ingest`); they stop when the host drains.
pub(super) fn ingestion(config: &RedisConfig, parts: NodeParts, webhooks: Arc<Webhooks>) -> Ingestion {
    let config = config.clone();
    Box::new(move |publisher, workers: TaskTracker| {
        Box::pin(async move {
            let NodeParts { broker, metrics, node_id } = parts;
            let node = Arc::new(Node { publisher, broker, metrics, node_id, webhooks });
            workers.spawn(stream::Reader::connect(&node, &config).await?.run());
            workers.spawn(pubsub::Leader::connect(&node, &config).await?.run());
            Ok(())
        })
    })
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

/// Validates, runs the publish pipeline and hands the events to the broker; invalid items
/// go to the dead-letter stream first. `Err` means nothing may be acknowledged.
async fn ingest(
    node: &Node,
    conn: &mut Link,
    tenant: &Arc<Tenant>,
    items: &[Item],
    source: Source,
) -> Result<(), IngestError> {
    let mut valid: Vec<(Event, &Item)> = Vec::with_capacity(items.len());
    let mut dead = Vec::new();
    for item in items {
        let parsed = match &item.body {
            Ok(body) => node.publisher.parse(body),
            Err(why) => Err((*why).to_string()),
        };
        match parsed {
            Ok(mut event) => {
                if let Some(entry) = &item.entry {
                    event.id = format!("s-{entry}");
                }
                valid.push((event, item));
            }
            Err(error) => {
                tracing::warn!(tenant = &*tenant.id, entry = item.entry.as_deref(), %error, "invalid event sent to the dead-letter stream");
                dead.push(dead_letter(tenant, item, source, &error));
            }
        }
    }
    let valid = within_quotas(tenant, valid, source, &mut dead);
    let items: HashMap<String, &Item> = valid.iter().map(|(event, item)| (event.id.clone(), *item)).collect();
    let events: Vec<Event> = valid.into_iter().map(|(event, _)| event).collect();
    let mut dead_count = write_dead_letters(node, conn, tenant, dead).await?;
    let accepted = events.len() as u64;
    let refused = node.publisher.publish(tenant, events).await?;
    // Dropped by a plugin after the broker took the rest: dead-lettered like the others.
    let dropped = refused.iter().filter_map(|r| Some(dead_letter(tenant, items.get(&r.id)?, source, &r.reason)));
    dead_count += write_dead_letters(node, conn, tenant, dropped.collect()).await?;
    let counter = match source {
        Source::Stream => &node.metrics.ingest_stream_entries,
        Source::PubSub => &node.metrics.ingest_pubsub_messages,
    };
    counter.fetch_add(accepted + dead_count - refused.len() as u64, Relaxed);
    Ok(())
}

/// Writes dead letters to the tenant's stream, then tells its webhooks; how many.
async fn write_dead_letters(
    node: &Node,
    conn: &mut Link,
    tenant: &Tenant,
    dead: Vec<(Cmd, Notice)>,
) -> Result<u64, IngestError> {
    let count = dead.len() as u64;
    if count == 0 {
        return Ok(0);
    }
    let (cmds, notices): (Vec<Cmd>, Vec<Notice>) = dead.into_iter().unzip();
    conn.run_all(cmds).await.map_err(IngestError::DeadLetters)?;
    node.metrics.dead_letters.fetch_add(count, Relaxed);
    for notice in notices {
        node.webhooks.emit(&tenant.id, notice);
    }
    Ok(count)
}

/// Sends the events over the tenant's quotas (event size, publish rate) to the dead-letter
/// stream, with the reason, like the 413 and 429 of HTTP publishing; returns the rest.
fn within_quotas<'a>(
    tenant: &Tenant,
    mut valid: Vec<(Event, &'a Item)>,
    source: Source,
    dead: &mut Vec<(Cmd, Notice)>,
) -> Vec<(Event, &'a Item)> {
    let max = tenant.quota.limits().max_event_bytes;
    if max > 0 {
        let error = format!("event_too_large: data over the tenant's max_event_bytes ({max})");
        let (fit, over): (Vec<_>, Vec<_>) = valid.into_iter().partition(|(e, _)| e.data.get().len() <= max);
        tenant.metrics.too_large.fetch_add(over.len() as u64, Relaxed);
        dead.extend(over.into_iter().map(|(_, item)| dead_letter(tenant, item, source, &error)));
        valid = fit;
    }
    let allowed = tenant.quota.publish_up_to(valid.len());
    if allowed < valid.len() {
        // Over the tenant's publish rate: refused like an HTTP 429, never silently dropped.
        let over = valid.split_off(allowed);
        tenant.metrics.rate_limited.fetch_add(over.len() as u64, Relaxed);
        let error = format!(
            "rate_limited: the tenant is over its publish_rate ({} events/s)",
            tenant.quota.limits().publish_rate
        );
        tracing::warn!(
            tenant = &*tenant.id,
            events = over.len(),
            "events over the publish rate sent to the dead-letter stream"
        );
        dead.extend(over.into_iter().map(|(_, item)| dead_letter(tenant, item, source, &error)));
    }
    valid
}

/// The XADD of an invalid item to the tenant's dead-letter stream, with the error, and the
/// `event.dead_lettered` notice for the tenant's webhooks.
fn dead_letter(tenant: &Tenant, item: &Item, source: Source, error: &str) -> (Cmd, Notice) {
    let source_name = match source {
        Source::Stream => "ingest",
        Source::PubSub => "publish",
    };
    let body = item.body.as_deref().unwrap_or_default();
    let mut cmd = ::redis::cmd("XADD");
    cmd.arg(keys::dead_letter_stream(&tenant.id)).arg("MAXLEN").arg("~").arg(DEAD_LETTER_MAXLEN).arg("*");
    cmd.arg("source").arg(source_name).arg("entry").arg(item.entry.as_deref().unwrap_or(""));
    cmd.arg("error").arg(error).arg("event").arg(body);
    (cmd, dead_lettered(source_name, item.entry.as_deref(), None, error, Some(body)))
}
