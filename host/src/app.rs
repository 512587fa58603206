//! The state every request and connection shares, by part: the publish pipeline (run by
//! `ingest::pipeline`), the control plane (run by `control`), the edge (`edge`) and the
//! lifecycle (`lifecycle`), beside the registries and stores every part reads.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::addresses::Addresses;
use crate::admission::Admission;
use crate::backend::control::{ControlState, ControlStore};
use crate::backend::ingest::Ingestion;
use crate::backend::{Backends, BackendsError, Broker, History, Idempotency, LocalDelivery, Presence, Task};
use crate::clock::IdGenerator;
use crate::config::Config;
use crate::edge::Edge;
use crate::fanout::QueueLimits;
use crate::hub::Hub;
use crate::lifecycle::Lifecycle;
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

/// Shared host state, by part: what a request or connection uses is one part or another.
pub(crate) struct App {
    pub config: Config,
    pub tenants: Arc<Tenants>,
    pub hub: Arc<Hub>,
    /// The publish pipeline: plugins, broker, idempotency keys.
    pub pipeline: Pipeline,
    /// The control plane on this node: its store, what was applied, revocations.
    pub control: ControlPlane,
    /// What client connections pass first: admission, address limits, TLS.
    pub edge: Edge,
    /// The drain signal and the tasks shutdown waits for.
    pub lifecycle: Lifecycle,
    /// Shared with the broker and the ingestion consumers.
    pub broker_metrics: Arc<BrokerMetrics>,
    pub metrics: GlobalMetrics,
    pub ids: IdGenerator,
    /// This node's name in the cluster (`broker.node_id`, or random per process).
    pub node_id: Arc<str>,
    /// Whether other nodes share this node's backends (cluster mode).
    pub shared: bool,
    pub presence: Arc<dyn Presence>,
    /// Stream history for positions, resume and read cursors: in memory with the memory
    /// broker, in Redis with the Redis broker (which appends to it as it publishes).
    pub history: Arc<dyn History>,
    /// When this process started, in Unix milliseconds.
    pub started_at_ms: u64,
    /// The backend's ingestion, until the server starts it once it listens.
    pub ingestion: std::sync::Mutex<Option<Ingestion>>,
    /// The backends' long-lived tasks, until the server starts them.
    pub backend_tasks: std::sync::Mutex<Vec<Task>>,
}

/// What every publish goes through on its way to the broker.
pub(crate) struct Pipeline {
    /// Each tenant's transform and route plugins.
    pub(crate) plugins: Arc<Plugins>,
    pub(crate) broker: Arc<dyn Broker>,
    /// Publishers' idempotency keys, where the broker keeps its state.
    pub(crate) idempotency: Arc<dyn Idempotency>,
    /// How long a key is remembered (`server.idempotency_window`).
    pub(crate) idempotency_window: Duration,
}

/// The control plane's state on this node: the store and what was applied from it.
pub(crate) struct ControlPlane {
    /// Tenants created through the admin API and plugin slots: in memory or a file under
    /// `server.data_dir` on one node, shared by every node in cluster mode.
    pub(crate) store: Arc<dyn ControlStore>,
    /// Whether the state has been loaded once (`/readyz` waits for it).
    pub(crate) loaded: std::sync::atomic::AtomicBool,
    /// The state applied last; held while applying one, so states are applied one at a
    /// time and never an older over a newer. Also the copy a node puts back when the store
    /// lost its state.
    pub(crate) applied: tokio::sync::Mutex<Arc<ControlState>>,
    /// Woken when the plugins this node runs changed, so it reports them at once.
    pub(crate) plugins_changed: tokio::sync::Notify,
    /// Revoked credentials, checked at every handshake.
    pub(crate) revocations: Revocations,
}

impl ControlPlane {
    pub(crate) fn new(store: Arc<dyn ControlStore>) -> Self {
        Self {
            store,
            loaded: Default::default(),
            applied: Default::default(),
            plugins_changed: Default::default(),
            revocations: Revocations::default(),
        }
    }
}

impl App {
    pub(crate) async fn new(config: Config) -> Result<Self, StartError> {
        let limits =
            QueueLimits { frames: config.connections.send_queue_frames, bytes: config.connections.send_queue_bytes };
        let hub = Arc::new(Hub::new(limits));
        let tenants = Arc::new(Tenants::from_config(&config));
        let broker_metrics = Arc::new(BrokerMetrics::default());
        let Backends { broker, history, presence, idempotency, control, node_id, shared, ingestion, tasks } =
            Backends::start(&config, &(hub.clone() as Arc<dyn LocalDelivery>), &tenants, &broker_metrics).await?;
        let plugins = Arc::new(Plugins::from_config(&config, &tenants).await?);
        let addresses = Addresses::new(config.addresses.clone(), config.server.max_handshakes);
        let admission = Admission::new(config.server.max_connections, addresses.counts());
        let tls = config.server.tls.as_ref().map(|t| Tls::load(t, &config.base_dir).map(Arc::new)).transpose()?;
        Ok(Self {
            started_at_ms: crate::clock::now_millis(),
            ingestion: std::sync::Mutex::new(ingestion),
            backend_tasks: std::sync::Mutex::new(tasks),
            pipeline: Pipeline { plugins, broker, idempotency, idempotency_window: config.server.idempotency_window },
            control: ControlPlane::new(control),
            edge: Edge { admission, addresses, tls },
            lifecycle: Lifecycle::default(),
            tenants,
            config,
            hub,
            broker_metrics,
            metrics: GlobalMetrics::default(),
            ids: IdGenerator::default(),
            node_id,
            shared,
            presence,
            history,
        })
    }

    /// Whether the node takes connections and publishes (`ready`), or why not: `draining`,
    /// `broker_unavailable`, `control_plane_unavailable`, or `no_tenants` (none exists and
    /// this node has no admin API to create one).
    pub(crate) fn readiness(&self) -> &'static str {
        if self.lifecycle.drain.is_draining() {
            "draining"
        } else if !self.pipeline.broker.healthy() {
            "broker_unavailable"
        } else if !self.control.loaded.load(Relaxed) || !self.control.store.listening() {
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
        crate::metrics::render_addresses(&mut out, self.edge.addresses.gauges());
        crate::metrics::render_tasks(&mut out, tokio::runtime::Handle::current().metrics().num_alive_tasks());
        crate::metrics::render_plugins(&mut out, &self.pipeline.plugins.all_metrics());
        if let Some(streams) = self.history.streams_kept() {
            crate::metrics::render_history(&mut out, streams);
        }
        if self.shared {
            crate::metrics::render_broker(&mut out, &self.broker_metrics);
        }
        if let Some(tls) = &self.edge.tls {
            crate::metrics::render_tls(&mut out, tls.reloads.load(Relaxed), tls.reload_failures.load(Relaxed));
        }
        crate::metrics::render_process(&mut out, &self.node_id, self.started_at_ms);
        out
    }
}
