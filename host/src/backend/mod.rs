//! Backends: the broker that carries events between nodes, stream history, presence,
//! idempotency keys, push devices and pending pushes, and the control-plane store. Each is a trait whose contract is written
//! on it (`broker`, `history`, `presence`, `idempotency`, `control`), with a memory (or file) implementation for one node
//! (`memory/`, the default) and a Redis implementation for many nodes (`redis/`) beside it.
//! [`Backends::start`] picks one set from the config. `coalesce` lets concurrent reads of a
//! shared stream's Redis history share one read.

pub(crate) mod broker;
mod coalesce;
pub(crate) mod control;
mod delivery;
pub(crate) mod devices;
mod error;
pub(crate) mod escalations;
pub(crate) mod history;
pub(crate) mod idempotency;
pub(crate) mod ingest;
pub(crate) mod interest;
pub(crate) mod members;
pub(crate) mod memory;
pub(crate) mod presence;
pub(crate) mod redis;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

pub(crate) use broker::Broker;
pub use broker::BrokerError;
pub(crate) use delivery::LocalDelivery;
pub(crate) use devices::Devices;
pub(crate) use error::BackendError;
pub(crate) use escalations::Escalations;
pub(crate) use futures_util::future::BoxFuture;
pub(crate) use history::{History, HistoryError};
pub(crate) use idempotency::Idempotency;
pub(crate) use members::Members;
pub(crate) use presence::{Presence, PresenceError};

use crate::config::{BrokerConfig, Config};
use crate::metrics::BrokerMetrics;
use crate::tenant::Tenants;
use crate::webhook::Webhooks;
use control::{ControlStore, StoreError};

/// The backends of one node, all of one kind.
pub(crate) struct Backends {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) history: Arc<dyn History>,
    pub(crate) presence: Arc<dyn Presence>,
    pub(crate) members: Arc<dyn Members>,
    /// Users' push devices, kept where history is.
    pub(crate) devices: Arc<dyn Devices>,
    /// Pushes waiting for their time, kept where history is.
    pub(crate) escalations: Arc<dyn Escalations>,
    pub(crate) idempotency: Arc<dyn Idempotency>,
    pub(crate) control: Arc<dyn ControlStore>,
    /// This node's name among the nodes sharing the backends (random per process unless
    /// the backend's config names it).
    pub(crate) node_id: Arc<str>,
    /// Whether other nodes share these backends: then the broker can be out of reach while
    /// the node runs, and the node reports the broker's health and metrics.
    pub(crate) shared: bool,
    /// The backend's own way for publishers to reach the node (Redis streams and channels),
    /// started once the node listens; `None` when it has none or the config turns it off.
    pub(crate) ingestion: Option<ingest::Ingestion>,
    /// The tasks the backends need running (subscribers, mirrors, listeners), named; the
    /// server starts them with the node's other tasks and stops them last.
    pub(crate) tasks: Vec<Task>,
}

/// A long-lived task and its name.
pub(crate) type Task = (&'static str, BoxFuture<'static, ()>);

/// Why a node's backends could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackendsError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A [`StoreError`], whose message names the store.
    #[error(transparent)]
    Control(Box<dyn std::error::Error + Send + Sync>),
}

impl From<StoreError> for BackendsError {
    fn from(e: StoreError) -> Self {
        Self::Control(e.into())
    }
}

impl Backends {
    /// The backends `config.broker` names, connected and with their tasks started. This is
    /// the one place that knows which backend runs.
    pub(crate) async fn start(
        config: &Config,
        local: &Arc<dyn LocalDelivery>,
        tenants: &Arc<Tenants>,
        metrics: &Arc<BrokerMetrics>,
        webhooks: &Arc<Webhooks>,
    ) -> Result<Self, BackendsError> {
        match &config.broker {
            BrokerConfig::Memory(memory) => memory::backends(config, memory, local, webhooks),
            BrokerConfig::Redis(redis) => {
                let spread = config.connections.reconnect_spread;
                redis::backends(redis, local, tenants, metrics, spread, webhooks).await
            }
        }
    }
}

/// A node id for a node whose config names none.
fn random_node_id() -> Arc<str> {
    Arc::from(format!("node-{:016x}", RandomState::new().hash_one(std::process::id())))
}
