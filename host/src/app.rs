//! The state every request and connection shares.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, MemoryBroker};
use crate::config::{BrokerConfig, Config};
use crate::event::IdGenerator;
use crate::fanout::QueueLimits;
use crate::hub::Hub;
use crate::metrics::GlobalMetrics;
use crate::plugin::{PluginError, Plugins};
use crate::tenant::Tenants;

/// Shared host state.
pub struct App {
    pub config: Config,
    pub tenants: Tenants,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub plugins: Plugins,
    pub metrics: GlobalMetrics,
    pub ids: IdGenerator,
    /// Cancelled when the host starts draining: new WebSocket upgrades and publishes are
    /// refused, and every connection flushes its queue and closes with 1001.
    pub draining: CancellationToken,
    /// Tracks connection tasks, so shutdown can wait for their queues to flush.
    pub connections: TaskTracker,
    /// Open (or upgrading) WebSocket connections, checked against `server.max_connections`.
    pub open_connections: AtomicUsize,
}

impl App {
    pub fn new(config: Config) -> Result<Self, PluginError> {
        let limits =
            QueueLimits { frames: config.connections.send_queue_frames, bytes: config.connections.send_queue_bytes };
        let hub = Arc::new(Hub::new(limits));
        let broker: Arc<dyn Broker> = match config.broker {
            BrokerConfig::Memory => Arc::new(MemoryBroker::new(hub.clone())),
        };
        let tenants = Tenants::from_config(&config);
        let plugins = Plugins::from_config(&config, &tenants)?;
        Ok(Self {
            tenants,
            plugins,
            config,
            hub,
            broker,
            metrics: GlobalMetrics::default(),
            ids: IdGenerator::default(),
            draining: CancellationToken::new(),
            connections: TaskTracker::new(),
            open_connections: AtomicUsize::new(0),
        })
    }

    pub fn render_metrics(&self) -> String {
        let mut out = crate::metrics::render(&self.metrics, self.tenants.iter().map(|t| (&*t.id, &t.metrics)));
        crate::metrics::render_plugins(&mut out, &self.plugins.all_metrics());
        out
    }
}
