//! The state every request and connection shares.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::admission::Admission;

use crate::broker::{Broker, Link, MemoryBroker, RedisBroker};
use crate::config::{BrokerConfig, Config, RedisConfig};
use crate::drain::Drain;
use crate::event::IdGenerator;
use crate::fanout::QueueLimits;
use crate::history::{History, MemoryHistory, RedisHistory};
use crate::hub::Hub;
use crate::metrics::{BrokerMetrics, GlobalMetrics};
use crate::plugin::Plugins;
use crate::presence::{Presence, Timing};
use crate::server::StartError;
use crate::tenant::Tenants;

/// Shared host state.
pub(crate) struct App {
    pub config: Config,
    pub tenants: Tenants,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    /// Shared with the broker and the Redis ingest consumers.
    pub broker_metrics: Arc<BrokerMetrics>,
    pub plugins: Plugins,
    pub metrics: GlobalMetrics,
    pub ids: IdGenerator,
    /// Started when the host drains: new WebSocket upgrades and publishes are refused, and
    /// every connection flushes its queue and closes with 1001.
    pub drain: Drain,
    /// Tracks connection tasks, so shutdown can wait for their queues to flush.
    pub connections: TaskTracker,
    /// Background workers (Redis ingest consumers); they stop reading when draining starts
    /// and shutdown waits for them to finish what they read.
    pub workers: TaskTracker,
    /// This node's name in the cluster (`broker.node_id`, or random per process).
    pub node_id: Arc<str>,
    pub presence: Presence,
    /// Stream history for positions, resume and read cursors: in memory with the memory
    /// broker, in Redis with the Redis broker (which appends to it as it publishes).
    pub history: Arc<dyn History>,
    /// Slots for open (or upgrading) WebSocket connections under `server.max_connections`.
    pub admission: Admission,
}

impl App {
    pub(crate) async fn new(config: Config) -> Result<Self, StartError> {
        let limits =
            QueueLimits { frames: config.connections.send_queue_frames, bytes: config.connections.send_queue_bytes };
        let hub = Arc::new(Hub::new(limits));
        let tenants = Tenants::from_config(&config);
        let broker_metrics = Arc::new(BrokerMetrics::default());
        let link = match &config.broker {
            BrokerConfig::Memory => None,
            BrokerConfig::Redis(redis) => Some(Link::connect(redis, redis.timeout).await?),
        };
        let (broker, history): (Arc<dyn Broker>, Arc<dyn History>) = match (&config.broker, &link) {
            (BrokerConfig::Redis(redis), Some(link)) => {
                let by_id = tenants.iter().map(|t| (t.id.clone(), t.clone())).collect();
                let spread = config.connections.reconnect_spread;
                let broker = RedisBroker::start(redis, hub.clone(), by_id, broker_metrics.clone(), spread).await?;
                (Arc::new(broker), Arc::new(RedisHistory::new(link.clone(), redis.timeout)))
            }
            _ => {
                let history = Arc::new(MemoryHistory::default());
                (Arc::new(MemoryBroker::new(hub.clone(), history.clone())), history)
            }
        };
        let plugins = Plugins::from_config(&config, &tenants)?;
        let node_id: Arc<str> = match &config.broker {
            BrokerConfig::Redis(RedisConfig { node_id: Some(id), .. }) => Arc::from(id.as_str()),
            _ => Arc::from(format!("node-{:016x}", RandomState::new().hash_one(std::process::id()))),
        };
        let presence = match (&config.broker, link) {
            (BrokerConfig::Redis(redis), Some(conn)) => {
                let all = tenants.iter().cloned().collect();
                let timing = Timing { debounce: redis.presence_debounce, node_timeout: redis.node_timeout };
                Presence::redis(hub.clone(), conn, node_id.clone(), all, timing)
            }
            _ => Presence::memory(hub.clone()),
        };
        let admission = Admission::new(config.server.max_connections);
        Ok(Self {
            tenants,
            plugins,
            config,
            hub,
            broker,
            broker_metrics,
            metrics: GlobalMetrics::default(),
            ids: IdGenerator::default(),
            drain: Drain::default(),
            connections: TaskTracker::new(),
            workers: TaskTracker::new(),
            node_id,
            presence,
            history,
            admission,
        })
    }

    pub(crate) fn render_metrics(&self) -> String {
        let mut out = crate::metrics::render(&self.metrics, self.tenants.iter().map(|t| (&*t.id, &t.metrics)));
        crate::metrics::render_plugins(&mut out, &self.plugins.all_metrics());
        if matches!(self.config.broker, BrokerConfig::Redis(_)) {
            crate::metrics::render_broker(&mut out, &self.broker_metrics);
        }
        out
    }
}
