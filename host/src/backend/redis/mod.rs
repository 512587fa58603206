//! The backends of nodes sharing a Redis or a Redis Cluster: pub/sub fan-out, history and
//! presence in Redis, and the connections, key names and scripts they share.

mod broker;
mod control;
mod dead_letters;
mod devices;
pub(crate) mod envelope;
mod escalations;
mod history;
mod idempotency;
mod ingest;
pub(crate) mod keys;
mod link;
mod members;
mod presence;
pub(crate) mod pubsub;
mod scripts;
mod transitions;

use std::sync::Arc;
use std::time::Duration;

use control::RedisStore;
pub(crate) use link::Link;
pub(crate) use scripts::{DELETE_IF_EQUAL, LEASE_RENEW};

use super::coalesce::Coalesced;
use super::control::StoreError;
use super::presence::{PresenceError, Timing};
use super::{BackendError, Backends, BackendsError, Broker, BrokerError, HistoryError, LocalDelivery};
use crate::config::RedisConfig;
use crate::metrics::BrokerMetrics;
use crate::tenant::Tenants;
use crate::webhook::Webhooks;

/// How the backend errors name Redis.
const REDIS: &str = "Redis";

impl From<redis::RedisError> for BackendError {
    fn from(e: redis::RedisError) -> Self {
        Self::Unavailable { backend: REDIS, source: Box::new(e) }
    }
}

/// Redis gave no answer within `after`.
pub(crate) fn timeout(after: Duration) -> BackendError {
    BackendError::Timeout { backend: REDIS, after }
}

/// Redis answered something this version does not understand.
pub(crate) fn malformed(detail: impl Into<String>) -> BackendError {
    BackendError::Malformed { backend: REDIS, detail: detail.into() }
}

/// `?` on a Redis error in code that returns a trait's error.
macro_rules! from_redis {
    ($($error:ty),*) => {$(
        impl From<redis::RedisError> for $error {
            fn from(e: redis::RedisError) -> Self {
                BackendError::from(e).into()
            }
        }
    )*};
}
from_redis!(BrokerError, HistoryError, PresenceError, StoreError);

pub(super) async fn backends(
    config: &RedisConfig,
    local: &Arc<dyn LocalDelivery>,
    tenants: &Arc<Tenants>,
    metrics: &Arc<BrokerMetrics>,
    reconnect_spread: Duration,
    webhooks: &Arc<Webhooks>,
) -> Result<Backends, BackendsError> {
    let node_id = config.node_id.as_deref().map_or_else(super::random_node_id, Arc::from);
    let link = Link::connect(config, config.timeout).await?;
    let timing = Timing { debounce: config.presence_debounce, node_timeout: config.node_timeout };
    let (broker, subscriber) =
        broker::RedisBroker::start(config, local.clone(), tenants.clone(), metrics.clone(), reconnect_spread).await?;
    let broker: Arc<dyn Broker> = Arc::new(broker);
    let (presence, mirror) =
        presence::RedisPresence::start(link.clone(), node_id.clone(), tenants.clone(), timing, webhooks.clone());
    let (dead_letters, dead_letter_writer) =
        dead_letters::RedisDeadLetters::start(link.clone(), webhooks.dead_letter_capacity());
    webhooks.keep_dead_letters_in(Arc::new(dead_letters));
    let transitions = transitions::task(link.clone(), node_id.clone(), config.node_timeout, webhooks.clone());
    let (control, listener) = RedisStore::start(config).await?;
    let ingestion = config.ingest.then(|| {
        let node = ingest::NodeParts { broker: broker.clone(), metrics: metrics.clone(), node_id: node_id.clone() };
        ingest::ingestion(config, node, webhooks.clone())
    });
    let tasks = vec![
        ("redis broker subscriber", subscriber),
        ("redis presence mirror", mirror),
        ("redis control listener", listener),
        ("redis presence webhooks", transitions),
        ("redis webhook dead letters", dead_letter_writer),
    ];
    Ok(Backends {
        broker,
        idempotency: Arc::new(idempotency::RedisIdempotency::new(link.clone())),
        history: Arc::new(Coalesced::new(history::RedisHistory::new(link.clone(), config.timeout))),
        presence: Arc::new(presence),
        members: Arc::new(members::RedisMembers::new(link.clone(), &node_id, config.node_timeout)),
        devices: Arc::new(devices::RedisDevices::new(link.clone(), config.timeout)),
        escalations: Arc::new(escalations::RedisEscalations::new(link.clone(), config.timeout)),
        control: Arc::new(control),
        node_id,
        shared: true,
        ingestion,
        tasks,
    })
}
