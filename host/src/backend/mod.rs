//! Backends: the broker that carries events between nodes, stream history, presence,
//! idempotency keys, and the control-plane store. Each is a trait whose contract is written
//! on it (`broker`, `history`, `presence`, `idempotency`, `control`), with a memory (or file) implementation for one node
//! (`memory/`, the default) and a Redis implementation for many nodes (`redis/`) beside it.
//! [`Backends::start`] picks one set from the config. `coalesce` lets concurrent reads of a
//! shared stream's Redis history share one read.

pub(crate) mod broker;
mod coalesce;
pub(crate) mod control;
pub(crate) mod history;
pub(crate) mod idempotency;
pub(crate) mod interest;
pub(crate) mod memory;
pub(crate) mod presence;
pub(crate) mod redis;

use std::sync::Arc;

pub(crate) use broker::Broker;
pub use broker::BrokerError;
pub(crate) use futures_util::future::BoxFuture;
pub(crate) use history::{History, HistoryError};
pub(crate) use idempotency::Idempotency;
pub(crate) use presence::{Presence, PresenceError};

use crate::config::{BrokerConfig, Config};
use crate::hub::Hub;
use crate::metrics::BrokerMetrics;
use crate::tenant::Tenants;

/// The backends of one node, all of one kind.
pub(crate) struct Backends {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) history: Arc<dyn History>,
    pub(crate) presence: Arc<dyn Presence>,
    pub(crate) idempotency: Arc<dyn Idempotency>,
}

impl Backends {
    /// The memory backends, or the Redis ones (connected, their tasks started) in cluster mode.
    pub(crate) async fn start(
        config: &Config,
        hub: &Arc<Hub>,
        tenants: &Arc<Tenants>,
        node_id: &Arc<str>,
        metrics: &Arc<BrokerMetrics>,
    ) -> Result<Self, BrokerError> {
        match &config.broker {
            BrokerConfig::Memory => Ok(memory::backends(hub)),
            BrokerConfig::Redis(redis) => {
                let spread = config.connections.reconnect_spread;
                redis::backends(redis, hub, tenants, node_id, metrics, spread).await
            }
        }
    }
}
