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
use crate::backend::{Backends, BackendsError, Broker, History, Idempotency, LocalDelivery, Members, Presence, Task};
use crate::clock::IdGenerator;
use crate::config::Config;
use crate::edge::Edge;
use crate::fanout::QueueLimits;
use crate::hub::Hub;
use crate::lifecycle::Lifecycle;
use crate::metrics::{BrokerMetrics, GlobalMetrics};
use crate::plugin::{BreakerListener, PluginError, Plugins};
use crate::push::Pusher;
use crate::revocation::Revocations;
use crate::tenant::Tenants;
use crate::tls::Tls;
use crate::webhook::{Kind, Notice, Webhooks};

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

/// The node's state, by part: what a request or connection uses is one part or another.
/// A handle: cloning it is cheap, and it is the router's state (handlers take the part they
/// use through `axum::extract::FromRef`, see `api::state`).
#[derive(Clone)]
pub(crate) struct App(Arc<Parts>);

struct Parts {
    config: Config,
    tenants: Arc<Tenants>,
    hub: Arc<Hub>,
    pipeline: Pipeline,
    control: ControlPlane,
    edge: Edge,
    lifecycle: Lifecycle,
    /// Shared with the broker and the ingestion consumers.
    broker_metrics: Arc<BrokerMetrics>,
    metrics: GlobalMetrics,
    ids: IdGenerator,
    /// This node's name in the cluster (`broker.node_id`, or random per process).
    node_id: Arc<str>,
    /// Whether other nodes share this node's backends (cluster mode).
    shared: bool,
    presence: Arc<dyn Presence>,
    /// Pusher presence channel members.
    members: Arc<dyn Members>,
    /// Stream history for positions, resume and read cursors: in memory with the memory
    /// broker, in Redis with the Redis broker (which appends to it as it publishes).
    history: Arc<dyn History>,
    /// Each tenant's webhook endpoints.
    webhooks: Arc<Webhooks>,
    /// When this process started, in Unix milliseconds.
    started_at_ms: u64,
}

/// What the backends leave to the server to start: their long-lived tasks (at once) and
/// their ingestion (once the node listens).
pub(crate) struct BackendStart {
    pub(crate) tasks: Vec<Task>,
    pub(crate) ingestion: Option<Ingestion>,
}

/// What every publish goes through on its way to the broker.
#[derive(Clone)]
pub(crate) struct Pipeline {
    /// Each tenant's transform and route plugins.
    pub(crate) plugins: Arc<Plugins>,
    pub(crate) broker: Arc<dyn Broker>,
    /// Publishers' idempotency keys, where the broker keeps its state.
    pub(crate) idempotency: Arc<dyn Idempotency>,
    /// How long a key is remembered (`server.idempotency_window`).
    pub(crate) idempotency_window: Duration,
    /// Pushes to users' devices: scheduled as events are published.
    pub(crate) push: Arc<Pusher>,
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
    /// The node's state, and what its backends leave to the server to start.
    pub(crate) async fn new(config: Config) -> Result<(Self, BackendStart), StartError> {
        let limits =
            QueueLimits { frames: config.connections.send_queue_frames, bytes: config.connections.send_queue_bytes };
        let hub = Arc::new(Hub::new(limits));
        let tenants = Arc::new(Tenants::from_config(&config));
        let broker_metrics = Arc::new(BrokerMetrics::default());
        let webhooks = Arc::new(Webhooks::new(&config, crate::outbound::crypto()));
        let local = hub.clone() as Arc<dyn LocalDelivery>;
        let Backends {
            broker,
            history,
            presence,
            members,
            devices,
            escalations,
            idempotency,
            control,
            node_id,
            shared,
            ingestion,
            tasks,
        } = Backends::start(&config, &local, &tenants, &broker_metrics, &webhooks).await?;
        let plugins = Arc::new(Plugins::from_config(&config, &tenants).await?);
        plugins.on_breaker(breaker_notices(webhooks.clone(), node_id.clone()));
        let addresses = Addresses::new(config.addresses.clone(), config.server.max_handshakes);
        let admission = Admission::new(config.server.max_connections, addresses.counts());
        let tls = config.server.tls.as_ref().map(|t| Tls::load(t, &config.base_dir).map(Arc::new)).transpose()?;
        let app = Self(Arc::new(Parts {
            started_at_ms: crate::clock::now_millis(),
            pipeline: Pipeline {
                plugins,
                broker,
                idempotency,
                idempotency_window: config.server.idempotency_window,
                push: Arc::new(Pusher::new(devices, escalations, config.push.clone(), webhooks.clone())),
            },
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
            members,
            history,
            webhooks,
        }));
        Ok((app, BackendStart { tasks, ingestion }))
    }

    pub(crate) fn config(&self) -> &Config {
        &self.0.config
    }

    pub(crate) fn tenants(&self) -> &Arc<Tenants> {
        &self.0.tenants
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.0.hub
    }

    /// The publish pipeline: plugins, broker, idempotency keys.
    pub(crate) fn pipeline(&self) -> &Pipeline {
        &self.0.pipeline
    }

    /// The control plane on this node: its store, what was applied, revocations.
    pub(crate) fn control(&self) -> &ControlPlane {
        &self.0.control
    }

    /// What client connections pass first: admission, address limits, TLS.
    pub(crate) fn edge(&self) -> &Edge {
        &self.0.edge
    }

    /// The drain signal and the tasks shutdown waits for.
    pub(crate) fn lifecycle(&self) -> &Lifecycle {
        &self.0.lifecycle
    }

    pub(crate) fn metrics(&self) -> &GlobalMetrics {
        &self.0.metrics
    }

    pub(crate) fn webhooks(&self) -> &Arc<Webhooks> {
        &self.0.webhooks
    }

    pub(crate) fn ids(&self) -> &IdGenerator {
        &self.0.ids
    }

    pub(crate) fn node_id(&self) -> &str {
        &self.0.node_id
    }

    pub(crate) fn shared(&self) -> bool {
        self.0.shared
    }

    pub(crate) fn presence(&self) -> &dyn Presence {
        &*self.0.presence
    }

    pub(crate) fn members(&self) -> &dyn Members {
        &*self.0.members
    }

    pub(crate) fn history(&self) -> &dyn History {
        &*self.0.history
    }

    pub(crate) fn history_arc(&self) -> Arc<dyn History> {
        self.0.history.clone()
    }

    pub(crate) fn started_at_ms(&self) -> u64 {
        self.0.started_at_ms
    }

    /// Whether the node takes connections and publishes (`ready`), or why not: `draining`,
    /// `broker_unavailable`, `control_plane_unavailable`, or `no_tenants` (none exists and
    /// this node has no admin API to create one).
    pub(crate) fn readiness(&self) -> &'static str {
        if self.0.lifecycle.drain.is_draining() {
            "draining"
        } else if !self.0.pipeline.broker.healthy() {
            "broker_unavailable"
        } else if !self.0.control.loaded.load(Relaxed) || !self.0.control.store.listening() {
            "control_plane_unavailable"
        } else if self.0.config.server.admin_token.is_none() && self.0.tenants.is_empty() {
            "no_tenants"
        } else {
            "ready"
        }
    }

    pub(crate) fn render_metrics(&self) -> String {
        let mut tenants = self.0.tenants.all();
        tenants.sort_by(|a, b| a.id.cmp(&b.id));
        let mut out = crate::metrics::render(&self.0.metrics, tenants.iter().map(|t| (&*t.id, &*t.metrics)));
        crate::metrics::render_addresses(&mut out, self.0.edge.addresses.gauges());
        crate::metrics::render_tasks(&mut out, tokio::runtime::Handle::current().metrics().num_alive_tasks());
        crate::metrics::render_plugins(&mut out, &self.0.pipeline.plugins.all_metrics());
        crate::metrics::render_plugin_components(&mut out, &self.0.pipeline.plugins.components());
        crate::metrics::render_shrink(&mut out, self.0.hub.compression(), &crate::metrics::COMPRESSION);
        crate::metrics::render_shrink(&mut out, self.0.hub.deltas(), &crate::metrics::DELTAS);
        self.0.webhooks.render_metrics(&mut out);
        let sets: Vec<_> = tenants.iter().filter_map(|t| Some((&*t.id, t.auth.jwks()?))).collect();
        crate::auth::render_metrics(&mut out, &sets);
        if let Some(pending) = self.0.pipeline.push.escalations.pending() {
            crate::metrics::render_push_pending(&mut out, pending);
        }
        if let Some(streams) = self.0.history.streams_kept() {
            crate::metrics::render_history(&mut out, streams);
        }
        if self.0.shared {
            crate::metrics::render_broker(&mut out, &self.0.broker_metrics);
        }
        if let Some(tls) = &self.0.edge.tls {
            crate::metrics::render_tls(&mut out, tls.reloads.load(Relaxed), tls.reload_failures.load(Relaxed));
        }
        crate::metrics::render_process(&mut out, &self.0.node_id, self.0.started_at_ms);
        out
    }
}

/// The parts a handler takes on its own (`State<Arc<dyn History>>` and so on).
impl axum::extract::FromRef<App> for Arc<dyn History> {
    fn from_ref(app: &App) -> Self {
        app.0.history.clone()
    }
}

impl axum::extract::FromRef<App> for Arc<dyn Presence> {
    fn from_ref(app: &App) -> Self {
        app.0.presence.clone()
    }
}

impl axum::extract::FromRef<App> for Arc<Tenants> {
    fn from_ref(app: &App) -> Self {
        app.0.tenants.clone()
    }
}

impl axum::extract::FromRef<App> for Pipeline {
    fn from_ref(app: &App) -> Self {
        app.0.pipeline.clone()
    }
}

/// Tells the tenant's webhooks of a breaker turning on this node (`plugin.disabled`,
/// `plugin.enabled`): each node's breakers are its own, so the notice names the node.
fn breaker_notices(webhooks: Arc<Webhooks>, node: Arc<str>) -> BreakerListener {
    Box::new(move |turn| {
        let kind = if turn.disabled { Kind::PluginDisabled } else { Kind::PluginEnabled };
        let data = serde_json::json!({"hook": turn.hook.as_str(), "version": turn.hash, "node": &*node,
                                      "reason": turn.reason});
        webhooks.emit(turn.tenant, Notice::new(kind, data));
    })
}
