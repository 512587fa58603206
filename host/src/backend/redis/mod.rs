//! The backends of nodes sharing a Redis or a Redis Cluster: pub/sub fan-out, history and
//! presence in Redis, and the connections, key names and scripts they share.

mod broker;
mod control;
pub(crate) mod envelope;
mod history;
mod idempotency;
pub(crate) mod keys;
mod link;
mod presence;
pub(crate) mod pubsub;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

pub(crate) use control::RedisStore;
pub(crate) use link::Link;
pub(crate) use scripts::{DELETE_IF_EQUAL, LEASE_RENEW};

use super::coalesce::Coalesced;
use super::presence::Timing;
use super::{Backends, BrokerError};
use crate::config::RedisConfig;
use crate::hub::Hub;
use crate::metrics::BrokerMetrics;
use crate::tenant::Tenants;

pub(super) async fn backends(
    config: &RedisConfig,
    hub: &Arc<Hub>,
    tenants: &Arc<Tenants>,
    node_id: &Arc<str>,
    metrics: &Arc<BrokerMetrics>,
    reconnect_spread: Duration,
) -> Result<Backends, BrokerError> {
    let link = Link::connect(config, config.timeout).await?;
    let broker =
        broker::RedisBroker::start(config, hub.clone(), tenants.clone(), metrics.clone(), reconnect_spread).await?;
    let timing = Timing { debounce: config.presence_debounce, node_timeout: config.node_timeout };
    Ok(Backends {
        broker: Arc::new(broker),
        idempotency: Arc::new(idempotency::RedisIdempotency::new(link.clone())),
        history: Arc::new(Coalesced::new(history::RedisHistory::new(link.clone(), config.timeout))),
        presence: Arc::new(presence::RedisPresence::start(link, node_id.clone(), tenants.clone(), timing)),
    })
}
