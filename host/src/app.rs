//! The state every request and connection shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use tokio_util::task::TaskTracker;

use crate::addresses::Addresses;
use crate::admission::Admission;

use crate::backend::control::{ControlState, ControlStore};
use crate::backend::ingest::Ingestion;
use crate::backend::{Backends, BackendsError, Broker, History, Idempotency, LocalDelivery, Presence};
use crate::clock::IdGenerator;
use crate::config::Config;
use crate::drain::Drain;
use crate::fanout::QueueLimits;
use crate::hub::Hub;
use crate::metrics::{BrokerMetrics, GlobalMetrics};
use crate::plugin::{PluginError, Plugins};
use crate::revocation::Revocations;
use crate::tenant::Tenants;
use crate::tls::Tls;

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Backends(#[from] BackendsError),
    #[error("control-plane store: {0}")]
    Control(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("taking over the listener: {0}")]
    Handoff(#[from] crate::handoff::HandoffError),
    #[error("cannot listen on server.metrics_listen {addr}: {source} (set another address, or \"off\")")]
    MetricsListen { addr: std::net::SocketAddr, source: std::io::Error },
}

/// Shared host state.
pub(crate) struct App {
    pub config: Config,
    pub tenants: Arc<Tenants>,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    /// Shared with the broker and the Redis ingest consumers.
    pub broker_metrics: Arc<BrokerMetrics>,
    pub plugins: Arc<Plugins>,
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
    /// Whether other nodes share this node's backends (cluster mode).
    pub shared: bool,
    pub presence: Arc<dyn Presence>,
    /// Stream history for positions, resume and read cursors: in memory with the memory
    /// broker, in Redis with the Redis broker (which appends to it as it publishes).
    pub history: Arc<dyn History>,
    /// Publishers' idempotency keys, where the broker keeps its state.
    pub idempotency: Arc<dyn Idempotency>,
    /// Tenants created through the admin API: in memory or a file under `server.data_dir`
    /// on one node, in Redis in cluster mode.
    pub control: Arc<dyn ControlStore>,
    /// Whether the control-plane state has been loaded once (`/readyz` waits for it).
    pub control_loaded: AtomicBool,
    /// The control-plane state applied last; held while applying one, so states are
    /// applied one at a time and never an older over a newer. Also the copy a node puts
    /// back when the store lost its state.
    pub control_applied: tokio::sync::Mutex<Arc<ControlState>>,
    /// Woken when the plugins this node runs changed, so it reports them at once.
    pub plugins_changed: tokio::sync::Notify,
    /// Slots for open (or upgrading) WebSocket connections under `server.max_connections`.
    pub admission: Admission,
    /// Revoked credentials, checked at every handshake.
    pub revocations: Revocations,
    /// Limits per client address, and the handshakes in progress.
    pub addresses: Addresses,
    /// The listener's TLS (`server.tls`), if any.
    pub tls: Option<Arc<Tls>>,
    /// When this process started, in Unix milliseconds.
    pub started_at_ms: u64,
    /// The backend's ingestion, until the server starts it once it listens.
    pub ingestion: std::sync::Mutex<Option<Ingestion>>,
}

impl App {
    pub(crate) async fn new(config: Config) -> Result<Self, StartError> {
        let limits =
            QueueLimits { frames: config.connections.send_queue_frames, bytes: config.connections.send_queue_bytes };
        let hub = Arc::new(Hub::new(limits));
        let tenants = Arc::new(Tenants::from_config(&config));
        let broker_metrics = Arc::new(BrokerMetrics::default());
        let Backends { broker, history, presence, idempotency, control, node_id, shared, ingestion } =
            Backends::start(&config, &(hub.clone() as Arc<dyn LocalDelivery>), &tenants, &broker_metrics).await?;
        let plugins = Arc::new(Plugins::from_config(&config, &tenants).await?);
        let addresses = Addresses::new(config.addresses.clone(), config.server.max_handshakes);
        let admission = Admission::new(config.server.max_connections, addresses.counts());
        let tls = config.server.tls.as_ref().map(|t| Tls::load(t, &config.base_dir).map(Arc::new)).transpose()?;
        Ok(Self {
            started_at_ms: crate::clock::now_millis(),
            ingestion: std::sync::Mutex::new(ingestion),
            tls,
            control,
            control_loaded: AtomicBool::new(false),
            control_applied: tokio::sync::Mutex::default(),
            plugins_changed: tokio::sync::Notify::new(),
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
            shared,
            presence,
            history,
            idempotency,
            admission,
            revocations: Revocations::default(),
            addresses,
        })
    }

    /// Whether the node takes connections and publishes (`ready`), or why not: `draining`,
    /// `broker_unavailable`, `control_plane_unavailable`, or `no_tenants` (none exists and
    /// this node has no admin API to create one).
    pub(crate) fn readiness(&self) -> &'static str {
        if self.drain.is_draining() {
            "draining"
        } else if !self.broker.healthy() {
            "broker_unavailable"
        } else if !self.control_loaded.load(std::sync::atomic::Ordering::Relaxed) || !self.control.listening() {
            "control_plane_unavailable"
        } else if self.config.server.admin_token.is_none() && self.tenants.is_empty() {
            "no_tenants"
        } else {
            "ready"
        }
    }

    pub(crate) fn render_metrics(&self) -> String {
        let mut tenants = self.tenants.all();
        tenants.sort_by(|a, b| a.id.cmp(&b.id));
        let mut out = crate::metrics::render(&self.metrics, tenants.iter().map(|t| (&*t.id, &*t.metrics)));
        crate::metrics::render_addresses(&mut out, self.addresses.gauges());
        crate::metrics::render_tasks(&mut out, tokio::runtime::Handle::current().metrics().num_alive_tasks());
        crate::metrics::render_plugins(&mut out, &self.plugins.all_metrics());
        if let Some(streams) = self.history.streams_kept() {
            crate::metrics::render_history(&mut out, streams);
        }
        if self.shared {
            crate::metrics::render_broker(&mut out, &self.broker_metrics);
        }
        if let Some(tls) = &self.tls {
            crate::metrics::render_tls(&mut out, tls.reloads.load(Relaxed), tls.reload_failures.load(Relaxed));
        }
        crate::metrics::render_process(&mut out, &self.node_id, self.started_at_ms);
        out
    }
}
