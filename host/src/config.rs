//! `config.toml` schema: serde structs with defaults, `NOTIFY_...` environment overrides and
//! validation whose messages name the offending key.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::alert::{MAX_PUSH_DELAY, MAX_PUSH_TTL, PushWhen};
use crate::hook::Hook;

/// Everything the host reads at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub connections: ConnectionConfig,
    #[serde(default)]
    pub broker: BrokerConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub plugins: PluginLimits,
    /// Every tenant's quotas, unless the tenant overrides them (`[tenants.<id>.limits]`).
    #[serde(default)]
    pub limits: TenantLimits,
    /// Limits per client address, whatever the tenant.
    #[serde(default)]
    pub addresses: AddressLimits,
    /// How webhooks are sent, for every tenant's endpoints.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// How pushes to devices are sent, for every tenant (docs/PUSH.md).
    #[serde(default)]
    pub push: PushServiceConfig,
    /// Tenants by id; the id is the `{tenant}` path segment of client URLs.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Directory that relative paths in the file are resolved against (the file's own).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Sandbox limits applied to every plugin call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// Deadline of one `authenticate` call.
    #[serde(with = "humantime_serde")]
    pub auth_deadline: Duration,
    /// Deadline of one `transform` or `route` call.
    #[serde(with = "humantime_serde")]
    pub hook_deadline: Duration,
    /// Linear memory cap of one plugin instance.
    pub memory_limit_bytes: usize,
    /// A warm instance is replaced after this many calls.
    pub recycle_after_calls: u32,
    /// Consecutive failures after which a plugin version is disabled.
    pub breaker_threshold: u32,
    /// Plugin instances that may exist at once across all tenants (pooling allocator slots).
    pub max_instances: u32,
    /// Plugin calls one tenant may have in progress at once on this node (each on an instance
    /// of its own; a tenant's other instances are idle, at most four per running version).
    /// A call beyond waits for one of them, at most the set-up allowance.
    pub instances_per_tenant: u32,
    /// Where the node keeps compiled plugin versions that do not run (rollback targets), in
    /// a private directory of its own; `None`: the system's temporary directory.
    pub artifacts_dir: Option<PathBuf>,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            auth_deadline: Duration::from_millis(10),
            hook_deadline: Duration::from_millis(5),
            memory_limit_bytes: 32 * 1024 * 1024,
            recycle_after_calls: 10_000,
            breaker_threshold: 5,
            max_instances: 1000,
            instances_per_tenant: 16,
            artifacts_dir: None,
        }
    }
}

/// A tenant's plugins, at most one per hook.
pub(crate) type TenantPlugins = BTreeMap<Hook, PluginConfig>;

/// One plugin set in config.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Path of the `.wasm` component, relative to the config file.
    pub path: PathBuf,
    /// The plugin's own key/value configuration.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// For `transform` and `route`: what happens to an event when the call fails.
    /// (`auth` always fails closed.)
    pub on_failure: Option<FailurePolicy>,
}

/// What a failed `transform` or `route` call does to the event. Only `skip` ever delivers an
/// event the hook did not process, so it is never the default: a redaction plugin that
/// overran its deadline once must not leak the field it exists to remove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Call the hook once more (on another instance); if that fails too, deliver nothing
    /// and dead-letter the event as `drop` does.
    #[default]
    Retry,
    /// Deliver the event unprocessed, as if the hook were not installed.
    Skip,
    /// Deliver nothing; the event is dead-lettered.
    Drop,
}

/// Listener, admin and process-wide limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where `GET /metrics` is served without credentials (`"off"`: nowhere). Its labels name
    /// every tenant, so it stays off the client port, where it answers the admin token only.
    #[serde(deserialize_with = "address_or_off")]
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer token of the admin API; `None` disables it.
    pub admin_token: Option<String>,
    /// How long a draining host waits for queues to flush before it exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Time from TCP accept until the WebSocket upgrade must be complete.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Largest accepted body of `POST /v1/publish` and `/v1/publish/batch`.
    pub max_publish_bytes: usize,
    /// Largest number of events in one `/v1/publish/batch` request.
    pub max_batch_events: usize,
    /// How long an event's `idempotency_key` is remembered: a retry with the same key
    /// within it returns the first event's id and delivers nothing.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Most connections (of any tenant) one host accepts; 0 means no limit.
    pub max_connections: usize,
    /// Most accepted sockets still waiting for their first answer (a slow or stalled
    /// handshake holds one until `handshake_timeout`); more are refused with 503. 0 means
    /// no limit.
    pub max_handshakes: usize,
    /// Where uploaded plugins are kept (relative to the config file); without it uploads
    /// do not survive a restart.
    pub data_dir: Option<PathBuf>,
    /// Largest accepted plugin upload.
    pub max_plugin_bytes: usize,
    /// Serve the browser demo at `/demo` (development; off unless set).
    pub demo: bool,
    /// Connections the kernel may hold for the host before it accepts them (the `listen`
    /// backlog; Linux caps it at `net.core.somaxconn`). Bursts of handshakes beyond it are
    /// dropped by the kernel and retried by clients a second later.
    pub accept_backlog: u32,
    /// A Unix socket (relative to the config file) on which this node hands its listening
    /// socket to a successor started with the same setting, then drains: an upgrade on one
    /// machine without a refused connect (docs/OPERATIONS.md, Upgrading in place).
    pub handoff_socket: Option<PathBuf>,
    /// Native TLS on the listener (`wss://`, `https://`); none: plain only.
    pub tls: Option<TlsConfig>,
}

/// The listener's certificate and key, reloaded when the files change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first (relative to the config file).
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
    /// How often the files are checked; a changed pair that loads serves new connections.
    #[serde(default = "default_tls_reload", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Also serve plain HTTP and WebSocket on the port (told apart by their first byte),
    /// for health checks and clients inside a private network.
    #[serde(default)]
    pub allow_plaintext: bool,
}

fn default_tls_reload() -> Duration {
    Duration::from_secs(10)
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            admin_token: None,
            shutdown_grace: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_publish_bytes: 1024 * 1024,
            max_batch_events: 1000,
            idempotency_window: Duration::from_secs(300),
            max_connections: 0,
            max_handshakes: 1024,
            data_dir: None,
            max_plugin_bytes: 32 * 1024 * 1024,
            demo: false,
            accept_backlog: 4096,
            handoff_socket: None,
            tls: None,
        }
    }
}

/// A socket address, or `"off"` for none.
fn address_or_off<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "off" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an address (ip:port) or \"off\"")))
}

/// Limits per client address (docs/OPERATIONS.md#limits-per-client-address). The client
/// address is the TCP peer's, or the one a trusted proxy names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AddressLimits {
    /// Most connections one address holds on a node at once; 0 means no limit.
    pub max_connections: u32,
    /// WebSocket and SSE connect requests one address may make per second, on average;
    /// 0 means no limit.
    pub connect_rate: f64,
    /// Connect requests one address may make at once before `connect_rate` applies.
    pub connect_burst: u32,
    /// Failed connect requests (bad credentials, unknown tenant, malformed) within
    /// `failure_window` after which the address is refused for `failure_refusal`; 0 never.
    pub max_failures: u32,
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    #[serde(with = "humantime_serde")]
    pub failure_refusal: Duration,
    /// Networks of proxies whose `Forwarded` / `X-Forwarded-For` headers name the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// IPv6 clients count per network of this prefix length.
    pub ipv6_prefix: u8,
}

impl Default for AddressLimits {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            connect_rate: 50.0,
            connect_burst: 1000,
            max_failures: 50,
            failure_window: Duration::from_secs(60),
            failure_refusal: Duration::from_secs(60),
            trusted_proxies: Vec::new(),
            ipv6_prefix: 64,
        }
    }
}

impl AddressLimits {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.connect_rate.is_finite() || self.connect_rate < 0.0 {
            return Err(invalid("addresses.connect_rate", "must be 0 (no limit) or a positive number"));
        }
        if self.connect_rate > 0.0 && self.connect_burst == 0 {
            return Err(invalid("addresses.connect_burst", "must be at least 1 when connect_rate is set"));
        }
        if self.max_failures > 0 && (self.failure_window.is_zero() || self.failure_refusal.is_zero()) {
            return Err(invalid("addresses", "failure_window and failure_refusal must be greater than zero"));
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            return Err(invalid("addresses.ipv6_prefix", "must be between 1 and 128"));
        }
        Ok(())
    }
}

/// Per-connection behaviour and limits, shared by every tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionConfig {
    /// A ping goes out after this long without any frame sent by the server.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A connection that sends nothing (no pong, no frame) for this long is closed with 4000.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest inbound client message (and frame); larger ones close the connection with 1009.
    pub max_message_bytes: usize,
    /// A connection whose socket accepts no bytes for this long is closed as a slow client.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Most frames waiting in one connection's send queue before the slow-client policy applies.
    pub send_queue_frames: usize,
    /// Most bytes waiting in one connection's send queue before the slow-client policy applies.
    pub send_queue_bytes: usize,
    /// Initial read buffer of a connection; it grows only when a client sends a larger frame.
    pub read_buffer_bytes: usize,
    /// Most channels one connection may be subscribed to.
    pub max_subscriptions: usize,
    /// A draining node tells each client to wait a random delay up to this long before it
    /// reconnects, so its clients do not all land on the other nodes at once.
    #[serde(with = "humantime_serde")]
    pub reconnect_spread: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            max_message_bytes: 64 * 1024,
            write_timeout: Duration::from_secs(10),
            send_queue_frames: 1024,
            send_queue_bytes: 1024 * 1024,
            read_buffer_bytes: 64,
            max_subscriptions: 256,
            reconnect_spread: Duration::from_secs(2),
        }
    }
}

/// Which broker carries events between publishers and hubs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum BrokerConfig {
    /// Single process: events go straight from ingest to the local hub.
    Memory(MemoryConfig),
    /// Many nodes sharing one Redis (or Redis Cluster).
    Redis(RedisConfig),
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self::Memory(MemoryConfig::default())
    }
}

/// One node on its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// A user whose last connection closed is reported offline (webhooks) only after this
    /// long, so a quick reconnect is not an offline/online pair.
    #[serde(with = "humantime_serde")]
    pub presence_debounce: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self { presence_debounce: Duration::from_secs(5) }
    }
}

/// How webhooks are sent (docs/WEBHOOKS.md); each tenant lists its endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Endpoints may be reached at loopback, private, link-local and other non-public
    /// addresses. Off, such an endpoint is refused (server-side request forgery).
    pub allow_private: bool,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The most one request may take, connecting included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The first wait before a failed batch is sent again; each later one doubles (with
    /// jitter), up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long a batch is retried before it goes to the tenant's dead letters.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
    /// Events waiting per endpoint; when full, the oldest go to the dead letters.
    pub queue: usize,
    /// Dead-lettered batches kept per tenant (the oldest go first).
    pub dead_letters: usize,
    /// An endpoint that has failed every request for this long is paused on every node:
    /// its events go straight to the dead letters until it is resumed through the admin API.
    #[serde(with = "humantime_serde")]
    pub pause_after: Duration,
    /// How often each node sums up the connects it refused, per tenant, in one
    /// `connection.refused` event.
    #[serde(with = "humantime_serde")]
    pub refusals_every: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            retry_for: Duration::from_secs(24 * 3600),
            queue: 10_000,
            dead_letters: 1_000,
            pause_after: Duration::from_secs(3 * 24 * 3600),
            refusals_every: Duration::from_secs(60),
        }
    }
}

/// How the node sends pushes, for every tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushServiceConfig {
    /// Push endpoints may be at loopback, private and other non-public addresses. Off, a
    /// Web Push subscription naming one is refused when sent (server-side request forgery).
    pub allow_private: bool,
    /// The most one request to a push service may take, connecting included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Pushes of one tenant in flight at once on a node (eight times as many wait on the
    /// node): a push service that hangs holds its tenant's pushes only, and other tenants'
    /// pushes go on.
    pub concurrency: usize,
    /// Escalations waiting for their time at most, over every tenant; a publish beyond this
    /// is delivered but not pushed (counted in `notify_push_failed_total{reason="full"}`).
    pub max_pending: usize,
}

impl Default for PushServiceConfig {
    fn default() -> Self {
        Self { allow_private: false, timeout: Duration::from_secs(10), concurrency: 16, max_pending: 1_000_000 }
    }
}

impl PushServiceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(60) {
            return Err(invalid("push.timeout", "must be 100ms-60s"));
        }
        if !(1..=1024).contains(&self.concurrency) {
            return Err(invalid("push.concurrency", "must be 1-1024"));
        }
        if self.max_pending == 0 {
            return Err(invalid("push.max_pending", "must be above 0"));
        }
        Ok(())
    }
}

/// One webhook endpoint of a tenant.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// `https://...` or `http://...`.
    pub url: String,
    /// The Standard Webhooks signing secret: `whsec_` and the base64 of 24 to 64 random
    /// bytes (none for the `pusher` format, signed with the tenant's Pusher secret).
    #[serde(default)]
    pub secret: String,
    /// The event types sent to it (docs/WEBHOOKS.md); empty: every type that is on by default
    /// (for the `pusher` format: the types Pusher sends).
    #[serde(default)]
    pub events: Vec<String>,
    /// Events per request, and how long the first of a batch waits for more.
    #[serde(default)]
    pub batch: WebhookBatch,
    /// `standard` (Standard Webhooks), or `pusher` (Pusher's webhooks: docs/PUSHER.md).
    #[serde(default)]
    pub format: WebhookFormat,
}

/// How a webhook endpoint's requests are shaped and signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// Standard Webhooks: `{"type": "notify.batch", ...}`, signed with the endpoint's secret.
    #[default]
    Standard,
    /// Pusher's: `{"time_ms", "events": [...]}`, with `X-Pusher-Key` and `X-Pusher-Signature`
    /// (the tenant's Pusher app).
    Pusher,
}

impl WebhookFormat {
    pub(crate) fn is_standard(&self) -> bool {
        *self == Self::Standard
    }
}

/// The webhook event types an endpoint may ask for (docs/WEBHOOKS.md).
pub(crate) const WEBHOOK_EVENTS: [&str; 16] = [
    "user.online",
    "user.offline",
    "channel.occupied",
    "channel.vacated",
    "event.acked",
    "event.dead_lettered",
    "plugin.disabled",
    "plugin.enabled",
    "push.failed",
    "subscription.added",
    "subscription.removed",
    "connection.refused",
    "member.added",
    "member.removed",
    "client.event",
    "cache.miss",
];

/// The event types sent only to endpoints that list them: every type from
/// `subscription.added` on (high volume, or Pusher's).
pub(crate) const WEBHOOK_EVENTS_OPT_IN: &[&str] = WEBHOOK_EVENTS.split_at(9).1;

/// The event types a `pusher` endpoint that lists none gets: those Pusher sends.
pub(crate) const WEBHOOK_EVENTS_PUSHER: [&str; 6] =
    ["channel.occupied", "channel.vacated", "member.added", "member.removed", "client.event", "cache.miss"];

impl WebhookEndpoint {
    /// Checks the endpoint's settings; errors name `{key}.<field>`.
    pub(crate) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let field = |f: &str| format!("{key}.{f}");
        let url: Option<hyper::Uri> = self.url.parse().ok();
        let scheme = url.as_ref().and_then(|u| u.scheme_str());
        if !matches!(scheme, Some("http" | "https")) || url.as_ref().and_then(|u| u.host()).is_none_or(str::is_empty) {
            return Err(invalid(field("url"), "must be http://HOST[:PORT]/... or https://..."));
        }
        match self.format {
            WebhookFormat::Standard => {
                check_webhook_secret(&self.secret).map_err(|why| invalid(field("secret"), why))?
            }
            WebhookFormat::Pusher if !self.secret.is_empty() => {
                return Err(invalid(field("secret"), "a pusher endpoint is signed with the tenant's Pusher secret"));
            }
            WebhookFormat::Pusher => {}
        }
        if let Some(unknown) = self.events.iter().find(|e| !WEBHOOK_EVENTS.contains(&e.as_str())) {
            let why = format!("{unknown:?} is not an event type ({})", WEBHOOK_EVENTS.join(", "));
            return Err(invalid(field("events"), why));
        }
        if !(1..=1000).contains(&self.batch.max_events) {
            return Err(invalid(field("batch.max_events"), "must be 1 to 1000"));
        }
        Ok(())
    }
}

/// Why a Standard Webhooks secret is not one: `whsec_` and the base64 of 24 to 64 bytes.
fn check_webhook_secret(secret: &str) -> Result<(), String> {
    let secret = secret.strip_prefix("whsec_").ok_or("must start with whsec_")?;
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, secret)
        .map_err(|e| format!("whsec_ must be followed by base64: {e}"))?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(format!("must hold 24 to 64 bytes, not {}", bytes.len()));
    }
    Ok(())
}

/// How a webhook endpoint's events are grouped into requests.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookBatch {
    pub max_events: usize,
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for WebhookBatch {
    fn default() -> Self {
        Self { max_events: 100, max_wait: Duration::from_millis(200) }
    }
}

/// Cluster mode over Redis: node-to-node fan-out, publishing through Redis, presence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`. With `cluster = true`, a comma-separated list
    /// of seed nodes of a Redis Cluster.
    pub url: String,
    /// Use Redis Cluster and its sharded pub/sub (SSUBSCRIBE/SPUBLISH).
    pub cluster: bool,
    /// This node's name in the ingest consumer group and in presence. A stable name lets a
    /// restarted node pick up the entries it left pending at once; without one a random name
    /// is chosen per process and other nodes claim its entries after `claim_idle`.
    pub node_id: Option<String>,
    /// Connect and response timeout of every Redis command.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A stream nobody local listens to any more stays subscribed this long, so connection
    /// churn does not turn into SUBSCRIBE/UNSUBSCRIBE churn.
    #[serde(with = "humantime_serde")]
    pub unsubscribe_delay: Duration,
    /// Longest wait between reconnect attempts (backoff doubles from 50 ms up to this).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Read `notify:{tenant}:ingest` streams and `notify:{tenant}:publish` channels.
    pub ingest: bool,
    /// Entries left pending this long by another node are claimed (XAUTOCLAIM).
    #[serde(with = "humantime_serde")]
    pub claim_idle: Duration,
    /// A user whose last connection closed is reported offline only after this long, so a
    /// quick reconnect is not an offline/online pair.
    #[serde(with = "humantime_serde")]
    pub presence_debounce: Duration,
    /// A node whose presence heartbeat (every second) is this old counts as dead: its users'
    /// connections stop counting and another node reports them offline.
    #[serde(with = "humantime_serde")]
    pub node_timeout: Duration,
}

impl RedisConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for url in self.urls() {
            redis::Client::open(url).map_err(|e| invalid("broker.url", format!("not a Redis URL ({url}): {e}")))?;
        }
        if self.node_timeout < Duration::from_secs(2) {
            return Err(invalid("broker.node_timeout", "must be at least 2s (nodes heartbeat every second)"));
        }
        if self.timeout.is_zero() || self.max_backoff.is_zero() || self.claim_idle.is_zero() {
            return Err(invalid("broker", "timeout, max_backoff and claim_idle must be greater than zero"));
        }
        if let Some(id) = &self.node_id
            && !valid_tenant_id(id)
        {
            return Err(invalid("broker.node_id", "node ids are 1-64 characters of a-z, 0-9, '-' and '_'"));
        }
        Ok(())
    }

    /// The configured URLs (seed nodes in cluster mode).
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty())
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            cluster: false,
            node_id: None,
            timeout: Duration::from_secs(2),
            unsubscribe_delay: Duration::from_secs(10),
            max_backoff: Duration::from_secs(2),
            ingest: true,
            claim_idle: Duration::from_secs(30),
            presence_debounce: Duration::from_secs(5),
            node_timeout: Duration::from_secs(10),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// Default filter when `RUST_LOG` is not set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// One tenant: its keys, how its clients authenticate, and its policies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Bearer key for `POST /v1/publish`.
    pub publish_key: String,
    #[serde(default)]
    pub auth: AuthConfig,
    /// Browser origins allowed to connect; empty allows any. `https://*.example.com` matches
    /// subdomains.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Channel patterns a client may subscribe to when its credentials name none.
    #[serde(default = "default_channel_patterns")]
    pub default_channels: Vec<String>,
    /// What happens when a connection's send queue is full.
    #[serde(default)]
    pub slow_client: SlowClientPolicy,
    /// Bearer key with which the tenant manages its own plugins through the admin API.
    pub management_key: Option<String>,
    /// WebAssembly plugins, by hook.
    #[serde(default)]
    pub plugins: TenantPlugins,
    /// How much history each stream keeps for resuming clients.
    #[serde(default)]
    pub history: HistoryConfig,
    /// WebSocket compression (permessage-deflate) of the tenant's events.
    #[serde(default)]
    pub compression: CompressionConfig,
    /// This tenant's quotas where they differ from `[limits]`.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Where the tenant's webhooks go.
    #[serde(default)]
    pub webhooks: Vec<WebhookEndpoint>,
    /// Credentials for the Pusher Channels HTTP API (docs/PUSHER.md).
    #[serde(default)]
    pub pusher: Option<PusherCredentials>,
    /// Push to the devices of users who are not connected (docs/PUSH.md).
    #[serde(default)]
    pub push: PushConfig,
}

/// When a tenant's events to users reach their devices, and the providers' credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// When events to users are pushed unless the publish body says otherwise.
    pub when: PushWhen,
    /// How long an event may stay unread before it is pushed (`unread_after`).
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "30s", default = "30s")]
    pub delay: Duration,
    /// How long a push service keeps a message for a device that is offline.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "1d", default = "1d")]
    pub ttl: Duration,
    /// Pushes one user gets per hour at most; 0: no cap.
    pub max_per_hour: u32,
    /// Devices one user may register.
    pub max_devices_per_user: usize,
    /// Web Push (RFC 8030): the VAPID key pair and contact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web: Option<WebPushCredentials>,
    /// Firebase Cloud Messaging (HTTP v1): a service account's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fcm: Option<FcmCredentials>,
    /// Apple Push Notification service: a token-based (`.p8`) key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns: Option<ApnsCredentials>,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            when: PushWhen::Never,
            delay: Duration::from_secs(30),
            ttl: Duration::from_secs(24 * 3600),
            max_per_hour: 0,
            max_devices_per_user: 10,
            web: None,
            fcm: None,
            apns: None,
        }
    }
}

/// A tenant's Web Push identity: the VAPID private key (base64url PKCS#8 of a P-256 key, as
/// `notify-host push vapid-keys` prints it) and the contact push services may write to.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebPushCredentials {
    pub vapid_private_key: String,
    /// `mailto:` or `https:` (RFC 8292's `sub`).
    pub contact: String,
}

impl std::fmt::Debug for WebPushCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushCredentials").field("contact", &self.contact).finish_non_exhaustive()
    }
}

/// A tenant's Firebase project: the key file (JSON) of a service account that may send
/// messages, and where FCM is reached.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FcmCredentials {
    /// The service account's key file as the Firebase console gives it (JSON text with
    /// `project_id`, `client_email`, `private_key`, `token_uri`).
    pub service_account: String,
    /// FCM's base URL: `https://`, or `http://` to a loopback address.
    #[serde(default = "default_fcm_url")]
    pub base_url: String,
}

fn default_fcm_url() -> String {
    "https://fcm.googleapis.com".into()
}

impl std::fmt::Debug for FcmCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmCredentials").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

/// A tenant's APNs provider key: a `.p8` signing key of an Apple team, and the app's bundle
/// id its pushes go to.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApnsCredentials {
    /// The Apple Developer team id (10 characters).
    pub team_id: String,
    /// The key's id (10 characters).
    pub key_id: String,
    /// The `.p8` file's text: a P-256 private key in PEM.
    pub private_key: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// `https://api.push.apple.com` (production, the default), `https://api.sandbox.push.apple.com`
    /// (development builds), or another (`http://` to a loopback address only).
    #[serde(default = "default_apns_url")]
    pub base_url: String,
}

fn default_apns_url() -> String {
    "https://api.push.apple.com".into()
}

impl std::fmt::Debug for ApnsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsCredentials")
            .field("team_id", &self.team_id)
            .field("key_id", &self.key_id)
            .field("topic", &self.topic)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ApnsCredentials {
    /// `key` is the `tenants.{id}.push.apns` path errors name.
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let apple_id = |s: &str| s.len() == 10 && s.bytes().all(|b| b.is_ascii_alphanumeric());
        if !apple_id(&self.team_id) {
            return Err(invalid(format!("{key}.team_id"), "must be the 10-character team id"));
        }
        if !apple_id(&self.key_id) {
            return Err(invalid(format!("{key}.key_id"), "must be the 10-character key id"));
        }
        if jsonwebtoken::EncodingKey::from_ec_pem(self.private_key.as_bytes()).is_err() {
            return Err(invalid(format!("{key}.private_key"), "must be the .p8 file's P-256 private key in PEM"));
        }
        if self.topic.is_empty() || self.topic.len() > 255 || !self.topic.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(format!("{key}.topic"), "must be the app's bundle id"));
        }
        check_jwks_url(&self.base_url).map_err(|m| invalid(format!("{key}.base_url"), m))
    }
}

/// The fields of a service account's key file that FCM needs.
#[derive(Clone, Deserialize)]
pub(crate) struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    pub token_uri: String,
}

impl ServiceAccount {
    /// Reads a key file; what is wrong with it.
    pub(crate) fn parse(json: &str) -> Result<Self, String> {
        let account: Self = serde_json::from_str(json).map_err(|e| format!("not a service account key file: {e}"))?;
        jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|_| "private_key is not an RSA private key in PEM".to_owned())?;
        check_jwks_url(&account.token_uri).map_err(|m| format!("token_uri {m}"))?;
        if account.project_id.is_empty() || !account.project_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("project_id must be letters, digits and -".into());
        }
        Ok(account)
    }
}

/// Whether `private` is base64url PKCS#8 of a P-256 key (a VAPID key).
fn vapid_key_parses(private: &str) -> bool {
    use base64::Engine;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let Ok(der) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(private.trim()) else { return false };
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &ring::rand::SystemRandom::new()).is_ok()
}

impl PushConfig {
    /// `key` is the `tenants.{id}.push` path errors name; `acks` whether the tenant keeps
    /// read cursors.
    pub(crate) fn validate(&self, key: &str, acks: bool) -> Result<(), ConfigError> {
        if self.when == PushWhen::UnreadAfter && !acks {
            return Err(invalid(format!("{key}.when"), "unread_after needs read cursors (history.acks = true)"));
        }
        if self.delay > MAX_PUSH_DELAY {
            return Err(invalid(format!("{key}.delay"), "must be at most 7 days"));
        }
        if self.ttl > MAX_PUSH_TTL {
            return Err(invalid(format!("{key}.ttl"), "must be at most 28 days"));
        }
        if !(1..=100).contains(&self.max_devices_per_user) {
            return Err(invalid(format!("{key}.max_devices_per_user"), "must be 1-100"));
        }
        if let Some(web) = &self.web {
            if !vapid_key_parses(&web.vapid_private_key) {
                return Err(invalid(
                    format!("{key}.web.vapid_private_key"),
                    "must be base64url PKCS#8 of a P-256 key (notify-host push vapid-keys makes one)",
                ));
            }
            if !(web.contact.starts_with("mailto:") || web.contact.starts_with("https://")) {
                return Err(invalid(format!("{key}.web.contact"), "must start with mailto: or https://"));
            }
        }
        if let Some(fcm) = &self.fcm {
            ServiceAccount::parse(&fcm.service_account)
                .map_err(|m| invalid(format!("{key}.fcm.service_account"), m))?;
            check_jwks_url(&fcm.base_url).map_err(|m| invalid(format!("{key}.fcm.base_url"), m))?;
        }
        if let Some(apns) = &self.apns {
            apns.validate(&format!("{key}.apns"))?;
        }
        Ok(())
    }
}

/// A tenant's Pusher app: its id in API paths, the key that names it, the secret requests
/// are signed with.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PusherCredentials {
    pub app_id: String,
    pub key: String,
    pub secret: String,
    /// Whether clients may send `client-*` events on private and presence channels.
    #[serde(default)]
    pub client_events: bool,
}

impl PusherCredentials {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let printable = |s: &str| (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
        if !printable(&self.app_id) || !printable(&self.key) {
            return Err(invalid(format!("{key}.app_id"), "app_id and key are 1-128 printable characters without '/'"));
        }
        if self.secret.len() < 16 {
            return Err(invalid(format!("{key}.secret"), "must be at least 16 characters"));
        }
        Ok(())
    }
}

/// A tenant's quotas on one node; 0 means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    /// Concurrent WebSocket connections of the tenant (exact per node).
    pub max_connections: usize,
    /// Concurrent connections of one user of the tenant (exact per node).
    pub max_connections_per_user: usize,
    /// Events per second the tenant may publish, sustained (HTTP and Redis ingest together).
    pub publish_rate: u32,
    /// Events the tenant may publish at once; 0: one second's worth of `publish_rate`.
    pub publish_burst: u32,
    /// Channel subscriptions per connection; 0: `connections.max_subscriptions`.
    pub max_subscriptions: usize,
    /// Bytes of one event's `data` (as published); 0: only `server.max_publish_bytes` applies.
    pub max_event_bytes: usize,
    /// Push devices registered over all the tenant's users (exact, every node); 0: no limit.
    pub max_devices: usize,
}

/// Per-tenant overrides of `[limits]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_user: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_burst: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_subscriptions: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_event_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_devices: Option<usize>,
    /// Deadline of the tenant's `authenticate` calls instead of `plugins.auth_deadline`.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "20ms")]
    pub plugin_auth_deadline: Option<Duration>,
    /// Deadline of the tenant's `transform` and `route` calls instead of
    /// `plugins.hook_deadline`.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "20ms")]
    pub plugin_hook_deadline: Option<Duration>,
    /// Linear memory cap of one of the tenant's plugin instances, at most (and by default)
    /// `plugins.memory_limit_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_memory_bytes: Option<usize>,
    /// Plugin calls the tenant may have in progress at once on a node instead of
    /// `plugins.instances_per_tenant`, at most `plugins.max_instances`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_instances: Option<u32>,
}

impl TenantLimits {
    /// These limits with a tenant's overrides applied.
    pub(crate) fn with(self, o: &LimitOverrides) -> Self {
        Self {
            max_connections: o.max_connections.unwrap_or(self.max_connections),
            max_connections_per_user: o.max_connections_per_user.unwrap_or(self.max_connections_per_user),
            publish_rate: o.publish_rate.unwrap_or(self.publish_rate),
            publish_burst: o.publish_burst.unwrap_or(self.publish_burst),
            max_subscriptions: o.max_subscriptions.unwrap_or(self.max_subscriptions),
            max_event_bytes: o.max_event_bytes.unwrap_or(self.max_event_bytes),
            max_devices: o.max_devices.unwrap_or(self.max_devices),
        }
    }

    /// The publish bucket's size: the burst, or one second of the rate.
    pub(crate) fn burst(&self) -> u32 {
        if self.publish_burst > 0 { self.publish_burst } else { self.publish_rate }
    }
}

/// Per-stream history of a tenant (users, channels, broadcast).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Events kept per stream; 0 turns history and positions off.
    pub size: usize,
    /// Events older than this are dropped from history.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "10m", default = "10m")]
    pub ttl: Duration,
    /// Clients ack what they have read: the host keeps a read cursor per user, replays
    /// unacked events of the user stream on every connect and reports unread counts.
    pub acks: bool,
}

impl HistoryConfig {
    /// Whether streams of the tenant have positions and history at all.
    pub fn enabled(&self) -> bool {
        self.size > 0
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self { size: 100, ttl: Duration::from_secs(600), acks: false }
    }
}

/// WebSocket compression of a tenant's events (permessage-deflate, RFC 7692): each event
/// compressed once, its bytes shared by every connection that negotiated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Whether a client that offers permessage-deflate gets it.
    pub enabled: bool,
    /// Events shorter than this (bytes of their JSON) go uncompressed: deflate gains little
    /// on them and may grow them.
    pub min_bytes: usize,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self { enabled: true, min_bytes: 128 }
    }
}

fn default_channel_patterns() -> Vec<String> {
    vec!["*".into()]
}

/// How a tenant's clients prove who they are.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, tag = "mode", rename_all = "snake_case")]
pub enum AuthConfig {
    /// JWT verification; at least one key must be set.
    Jwt(#[schema(inline)] Box<JwtConfig>),
    /// Development only: the user id is taken from the `user` query parameter.
    #[default]
    Insecure,
}

/// Keys and checks for JWT authentication (docs/OPERATIONS.md, "JWT auth").
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Shared secret for HS256 tokens.
    pub hs256_secret: Option<String>,
    /// PEM public key (inline) for RS256 tokens.
    pub rs256_public_key: Option<String>,
    /// Accepted `iss` claims (a string or a list); when set, a token must name one of them.
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub issuer: Vec<String>,
    /// Accepted `aud` claims (a string or a list); when set, a token must name one of them.
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub audience: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    #[serde(default)]
    pub leeway_secs: u64,
    /// The claim holding the user id (`sub` when unset); a dotted path (`a.b`) reaches
    /// into an object when no claim has the whole name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_claim: Option<String>,
    /// The claim listing the channel patterns granted (`channels` when unset), read as
    /// `user_claim` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels_claim: Option<String>,
    /// The signature algorithms accepted (`RS256`, `ES256`, `EdDSA`, `HS256`, ...); when
    /// empty, every algorithm one of the keys is for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<String>,
    /// Named keys, chosen by the token header's `kid`: during a rotation both the old and
    /// the new key are listed, then the old one is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<JwtKey>,
    /// The identity provider's key set (JWKS), fetched at start and refreshed in the
    /// background: `https://`, or `http://` to a loopback address only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// The key set is fetched again after the provider's `Cache-Control: max-age`, but
    /// never sooner than this (seconds)...
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh_secs: u64,
    /// ...and never later than this (seconds; also the wait when the provider sets none).
    #[serde(default = "default_jwks_max_refresh")]
    pub jwks_max_refresh_secs: u64,
    /// The shortest time between two fetches caused by tokens naming a `kid` the key set
    /// lacks (seconds): a flood of made-up `kid`s costs the provider one request per period.
    #[serde(default = "default_jwks_cooldown")]
    pub jwks_cooldown_secs: u64,
    /// The most one fetch of the key set may take, connecting included (milliseconds).
    #[serde(default = "default_jwks_timeout")]
    pub jwks_timeout_ms: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            rs256_public_key: None,
            issuer: Vec::new(),
            audience: Vec::new(),
            leeway_secs: 0,
            user_claim: None,
            channels_claim: None,
            algorithms: Vec::new(),
            keys: Vec::new(),
            jwks_url: None,
            jwks_min_refresh_secs: default_jwks_min_refresh(),
            jwks_max_refresh_secs: default_jwks_max_refresh(),
            jwks_cooldown_secs: default_jwks_cooldown(),
            jwks_timeout_ms: default_jwks_timeout(),
        }
    }
}

fn default_jwks_min_refresh() -> u64 {
    60
}
fn default_jwks_max_refresh() -> u64 {
    3600
}
fn default_jwks_cooldown() -> u64 {
    10
}
fn default_jwks_timeout() -> u64 {
    5000
}

/// A string, or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// One named JWT verification key: a secret (HMAC) or a public key (RSA, EC or Ed25519).
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    /// Matched against the `kid` of token headers.
    pub kid: String,
    /// A secret for HS256 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs256_secret: Option<String>,
    /// A PEM RSA public key for RS256 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rs256_public_key: Option<String>,
    /// A secret for HS256, HS384 and HS512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A PEM public key: RSA (RS256/384/512, PS256/384/512), EC P-256 or P-384 (ES256,
    /// ES384) or Ed25519 (EdDSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// Slow-client policy: what to do when a connection's bounded send queue overflows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlowClientPolicy {
    /// Close the connection with code 4001; the client reconnects and resumes.
    #[default]
    Disconnect,
    /// Discard the oldest queued frames to make room, counting each as dropped.
    DropOldest,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: {source}")]
    Parse { origin: String, source: toml::de::Error },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// A `NOTIFY_*` variable names no configuration key, or holds a value of the wrong type.
    #[error("environment variable {var} does not fit the configuration: {source}")]
    EnvKey { var: String, source: toml::de::Error },
    #[error("invalid `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

impl Config {
    /// Reads `path`, applies `NOTIFY_...` overrides from `env`, and validates.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text, &path.display().to_string(), env)
    }

    /// Parses TOML text (`origin` names it in errors), applies overrides, and validates.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let table: toml::Table = text.parse().map_err(|source| ConfigError::Parse { origin: origin.into(), source })?;
        let env: Vec<(String, String)> = env.into_iter().filter(|(var, _)| is_override(var)).collect();
        let config = match Self::with_overrides(table.clone(), &env) {
            Ok(config) => config,
            Err(ConfigError::Parse { source, .. }) => return Err(blame(&table, &env, origin, source)),
            Err(e) => return Err(e),
        };
        config.validate()?;
        Ok(config)
    }

    fn with_overrides(mut table: toml::Table, env: &[(String, String)]) -> Result<Self, ConfigError> {
        apply_env_overrides(&mut table, env.iter().cloned())?;
        table.try_into().map_err(|source| ConfigError::Parse { origin: String::new(), source })
    }

    /// Checks what serde cannot: ranges, relations between keys, key uniqueness.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.connections.validate()?;
        self.plugins.validate()?;
        self.server.validate()?;
        self.addresses.validate()?;
        self.webhooks.validate()?;
        self.push.validate()?;
        // With Redis, tenants created through another node's admin API reach this one; in
        // memory, such a node could never serve anything.
        let shared = matches!(self.broker, BrokerConfig::Redis(_));
        if self.tenants.is_empty() && self.server.admin_token.is_none() && !shared {
            let why = "at least one tenant is required (e.g. [tenants.demo]), or server.admin_token to create tenants through the admin API, or a Redis broker whose other nodes create them";
            return Err(invalid("tenants", why));
        }
        if let BrokerConfig::Redis(r) = &self.broker {
            r.validate()?;
        }
        let mut keys = HashSet::new();
        let mut pusher = HashSet::new();
        for (id, t) in &self.tenants {
            t.validate(id)?;
            self.plugins.check(&format!("tenants.{id}.limits"), &t.limits)?;
            if !keys.insert(t.publish_key.as_str()) {
                return Err(invalid(format!("tenants.{id}.publish_key"), "is already used by another tenant"));
            }
            if let Some(p) = &t.pusher
                && !(pusher.insert(("app_id", p.app_id.as_str())) && pusher.insert(("key", p.key.as_str())))
            {
                return Err(invalid(format!("tenants.{id}.pusher"), "app_id and key must be unique across tenants"));
            }
        }
        Ok(())
    }
}

impl ConnectionConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval.is_zero() {
            return Err(invalid("connections.heartbeat_interval", "must be greater than zero"));
        }
        if self.idle_timeout <= self.heartbeat_interval {
            return Err(invalid(
                "connections.idle_timeout",
                format!(
                    "must be longer than connections.heartbeat_interval ({:?}), or every client times out between pings",
                    self.heartbeat_interval
                ),
            ));
        }
        if self.write_timeout.is_zero() {
            return Err(invalid("connections.write_timeout", "must be greater than zero"));
        }
        if self.max_message_bytes < 256 {
            return Err(invalid("connections.max_message_bytes", "must be at least 256"));
        }
        if self.send_queue_frames == 0 {
            return Err(invalid("connections.send_queue_frames", "must be at least 1"));
        }
        if self.send_queue_bytes < 1024 {
            return Err(invalid("connections.send_queue_bytes", "must be at least 1024"));
        }
        if !(64..=1024 * 1024).contains(&self.read_buffer_bytes) {
            return Err(invalid("connections.read_buffer_bytes", "must be between 64 and 1048576"));
        }
        Ok(())
    }
}

impl PluginLimits {
    /// These limits with a tenant's overrides applied (checked by [`Self::check`]).
    pub(crate) fn with(&self, o: &LimitOverrides) -> Self {
        Self {
            auth_deadline: o.plugin_auth_deadline.unwrap_or(self.auth_deadline),
            hook_deadline: o.plugin_hook_deadline.unwrap_or(self.hook_deadline),
            memory_limit_bytes: o.plugin_memory_bytes.unwrap_or(self.memory_limit_bytes),
            instances_per_tenant: o.plugin_instances.unwrap_or(self.instances_per_tenant),
            ..self.clone()
        }
    }

    /// Checks a tenant's plugin overrides against this node's limits; `key` names the
    /// tenant's `limits` table. An instance's memory slot is the node's cap, so a tenant's
    /// may only be lower.
    pub(crate) fn check(&self, key: &str, o: &LimitOverrides) -> Result<(), ConfigError> {
        let deadlines =
            [("plugin_auth_deadline", o.plugin_auth_deadline), ("plugin_hook_deadline", o.plugin_hook_deadline)];
        if let Some((name, _)) = deadlines.iter().find(|(_, d)| d.is_some_and(|d| d < Duration::from_millis(1))) {
            return Err(invalid(format!("{key}.{name}"), "must be at least 1ms"));
        }
        if o.plugin_instances.is_some_and(|n| !(1..=self.max_instances).contains(&n)) {
            let message = format!("must be between 1 and plugins.max_instances ({})", self.max_instances);
            return Err(invalid(format!("{key}.plugin_instances"), message));
        }
        match o.plugin_memory_bytes {
            Some(m) if !(1024 * 1024..=self.memory_limit_bytes).contains(&m) => Err(invalid(
                format!("{key}.plugin_memory_bytes"),
                format!("must be between 1048576 and plugins.memory_limit_bytes ({})", self.memory_limit_bytes),
            )),
            _ => Ok(()),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.auth_deadline.is_zero() || self.hook_deadline.is_zero() {
            return Err(invalid("plugins.hook_deadline", "plugin deadlines must be greater than zero"));
        }
        if self.memory_limit_bytes < 1024 * 1024 {
            return Err(invalid("plugins.memory_limit_bytes", "must be at least 1048576"));
        }
        if self.breaker_threshold == 0 || self.recycle_after_calls == 0 || self.max_instances == 0 {
            return Err(invalid(
                "plugins",
                "breaker_threshold, recycle_after_calls and max_instances must be at least 1",
            ));
        }
        if !(1..=self.max_instances).contains(&self.instances_per_tenant) {
            return Err(invalid("plugins.instances_per_tenant", "must be between 1 and plugins.max_instances"));
        }
        Ok(())
    }
}

impl WebhooksConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.connect_timeout.is_zero() || self.timeout.is_zero() {
            return Err(invalid("webhooks.timeout", "webhook timeouts must be greater than zero"));
        }
        if self.initial_backoff.is_zero() || self.max_backoff < self.initial_backoff {
            return Err(invalid("webhooks.max_backoff", "must be at least webhooks.initial_backoff, above zero"));
        }
        if self.queue == 0 || self.dead_letters == 0 {
            return Err(invalid("webhooks.queue", "webhooks.queue and webhooks.dead_letters must be at least 1"));
        }
        if self.pause_after.is_zero() {
            return Err(invalid("webhooks.pause_after", "must be greater than zero"));
        }
        if self.refusals_every < Duration::from_millis(100) {
            return Err(invalid("webhooks.refusals_every", "must be at least 100ms"));
        }
        Ok(())
    }
}

impl ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_publish_bytes < 256 {
            return Err(invalid("server.max_publish_bytes", "must be at least 256"));
        }
        if self.max_batch_events == 0 {
            return Err(invalid("server.max_batch_events", "must be at least 1"));
        }
        if self.handshake_timeout.is_zero() {
            return Err(invalid("server.handshake_timeout", "must be greater than zero"));
        }
        if self.idempotency_window < Duration::from_secs(1) {
            return Err(invalid("server.idempotency_window", "must be at least 1s"));
        }
        if self.accept_backlog == 0 {
            return Err(invalid("server.accept_backlog", "must be at least 1"));
        }
        if let Some(token) = &self.admin_token
            && token.len() < 8
        {
            return Err(invalid("server.admin_token", "must be at least 8 characters"));
        }
        if self.tls.as_ref().is_some_and(|t| t.reload_interval < Duration::from_millis(100)) {
            return Err(invalid("server.tls.reload_interval", "must be at least 100ms"));
        }
        Ok(())
    }
}

impl TenantConfig {
    /// Checks tenant `id`'s settings; errors name `tenants.{id}.<key>`.
    pub(crate) fn validate(&self, id: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("tenants.{id}.{field}");
        if !valid_tenant_id(id) {
            return Err(invalid(format!("tenants.{id}"), "tenant ids are 1-64 characters of a-z, 0-9, '-' and '_'"));
        }
        if self.publish_key.len() < 8 {
            return Err(invalid(key("publish_key"), "must be at least 8 characters"));
        }
        if let Some(i) =
            self.allowed_origins.iter().position(|o| !(o.starts_with("http://") || o.starts_with("https://")))
        {
            return Err(invalid(key(&format!("allowed_origins[{i}]")), "must start with http:// or https://"));
        }
        if let Some(i) = self.default_channels.iter().position(|p| !crate::channel::valid_pattern(p)) {
            return Err(invalid(
                key(&format!("default_channels[{i}]")),
                "must be `*`, a channel name, or a prefix ending in `.*`",
            ));
        }
        if self.history.acks && !self.history.enabled() {
            return Err(invalid(key("history.acks"), "needs history (history.size above 0)"));
        }
        if self.history.enabled() && self.history.ttl < Duration::from_secs(1) {
            return Err(invalid(key("history.ttl"), "must be at least 1s"));
        }
        if let Some(k) = &self.management_key
            && k.len() < 16
        {
            return Err(invalid(key("management_key"), "must be at least 16 characters"));
        }
        if self.plugins.get(&Hook::Auth).is_some_and(|p| p.on_failure.is_some()) {
            return Err(invalid(key("plugins.auth.on_failure"), "auth plugins always fail closed"));
        }
        for (i, endpoint) in self.webhooks.iter().enumerate() {
            endpoint.validate(&key(&format!("webhooks[{i}]")))?;
            if endpoint.format == WebhookFormat::Pusher && self.pusher.is_none() {
                return Err(invalid(
                    key(&format!("webhooks[{i}].format")),
                    "a pusher endpoint needs the tenant's pusher app",
                ));
            }
        }
        if let Some(pusher) = &self.pusher {
            pusher.validate(&key("pusher"))?;
        }
        self.push.validate(&key("push"), self.history.acks)?;
        match &self.auth {
            AuthConfig::Jwt(jwt) => jwt.validate(&key("auth")),
            _ => Ok(()),
        }
    }
}

impl JwtConfig {
    /// `key` is the `tenants.{id}.auth` path errors name.
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.hs256_secret.is_none()
            && self.rs256_public_key.is_none()
            && self.keys.is_empty()
            && self.jwks_url.is_none()
        {
            return Err(invalid(key, "mode = \"jwt\" needs hs256_secret, rs256_public_key, keys or jwks_url"));
        }
        check_jwt_key(key, self.hs256_secret.as_deref(), self.rs256_public_key.as_deref())?;
        let mut kids = HashSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            let at = format!("{key}.keys[{i}]");
            if k.kid.is_empty() || !kids.insert(k.kid.as_str()) {
                return Err(invalid(format!("{at}.kid"), "must be non-empty and unique"));
            }
            let set =
                [&k.hs256_secret, &k.rs256_public_key, &k.secret, &k.public_key].iter().filter(|v| v.is_some()).count();
            if set != 1 {
                return Err(invalid(at, "needs exactly one of secret, public_key, hs256_secret and rs256_public_key"));
            }
            check_jwt_key(&at, k.hs256_secret.as_deref(), k.rs256_public_key.as_deref())?;
            if k.secret.as_ref().is_some_and(|s| s.len() < 16) {
                return Err(invalid(format!("{at}.secret"), "must be at least 16 bytes"));
            }
            if let Some(pem) = &k.public_key
                && !public_key_parses(pem)
            {
                return Err(invalid(format!("{at}.public_key"), "not an RSA, EC or Ed25519 public key in PEM"));
            }
        }
        if let Some(bad) = self.algorithms.iter().find(|a| a.parse::<jsonwebtoken::Algorithm>().is_err()) {
            return Err(invalid(
                format!("{key}.algorithms"),
                format!("unknown algorithm {bad:?} (RS256, PS256, ES256, EdDSA, HS256, ...)"),
            ));
        }
        for (name, claim) in [("user_claim", &self.user_claim), ("channels_claim", &self.channels_claim)] {
            if claim.as_deref().is_some_and(str::is_empty) {
                return Err(invalid(format!("{key}.{name}"), "must not be empty"));
            }
        }
        self.validate_jwks(key)
    }

    fn validate_jwks(&self, key: &str) -> Result<(), ConfigError> {
        if let Some(url) = &self.jwks_url {
            check_jwks_url(url).map_err(|m| invalid(format!("{key}.jwks_url"), m))?;
        }
        if self.jwks_min_refresh_secs == 0 {
            return Err(invalid(format!("{key}.jwks_min_refresh_secs"), "must be at least 1"));
        }
        if self.jwks_max_refresh_secs < self.jwks_min_refresh_secs {
            return Err(invalid(format!("{key}.jwks_max_refresh_secs"), "must not be below jwks_min_refresh_secs"));
        }
        if !(100..=60_000).contains(&self.jwks_timeout_ms) {
            return Err(invalid(format!("{key}.jwks_timeout_ms"), "must be 100 to 60000"));
        }
        Ok(())
    }
}

/// A key set URL must be `https`, or `http` to a loopback address (a provider on the same
/// machine, or a test): over plain HTTP anyone on the path could hand in their own keys.
fn check_jwks_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let host = uri.host().ok_or("has no host")?.trim_matches(['[', ']']);
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) => {
            Ok(())
        }
        Some("http") => Err("must be https (http only to a loopback address)".into()),
        _ => Err("must be an https URL".into()),
    }
}

/// Whether `pem` holds an RSA, EC or Ed25519 public key.
fn public_key_parses(pem: &str) -> bool {
    use jsonwebtoken::DecodingKey;
    let pem = pem.as_bytes();
    DecodingKey::from_rsa_pem(pem).is_ok()
        || DecodingKey::from_ec_pem(pem).is_ok()
        || DecodingKey::from_ed_pem(pem).is_ok()
}

/// An HMAC secret of at least 16 bytes, an RS256 key that parses; `key` names the place.
fn check_jwt_key(key: &str, secret: Option<&str>, pem: Option<&str>) -> Result<(), ConfigError> {
    if secret.is_some_and(|s| s.len() < 16) {
        return Err(invalid(format!("{key}.hs256_secret"), "must be at least 16 bytes"));
    }
    if let Some(pem) = pem {
        jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| invalid(format!("{key}.rs256_public_key"), format!("not an RSA public key in PEM: {e}")))?;
    }
    Ok(())
}

/// Tenant ids appear in URLs and Redis keys, so they are kept to a safe alphabet.
pub(crate) fn valid_tenant_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Whether an environment variable names a key path (`NOTIFY_SECTION__KEY`). Every key lives in
/// a section, so other `NOTIFY_*` variables (`NOTIFY_CONFIG`, the command line's `NOTIFY_URL`,
/// `NOTIFY_ADMIN_TOKEN`, ...) are not the configuration's business.
fn is_override(var: &str) -> bool {
    var.strip_prefix("NOTIFY_").is_some_and(|path| path.contains("__"))
}

/// Applies `NOTIFY_SECTION__KEY=value` variables: `__` separates path segments, segments are
/// lower-cased, and the value is read as a TOML value when it parses as one (numbers, booleans,
/// arrays) and as a string otherwise. `NOTIFY_TENANTS__DEMO__PUBLISH_KEY=k` sets
/// `tenants.demo.publish_key`.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (var, raw) in env {
        let Some(path) = var.strip_prefix("NOTIFY_").filter(|_| is_override(&var)) else {
            continue;
        };
        let segments: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if segments.iter().any(String::is_empty) {
            return Err(ConfigError::Env { var, message: "empty path segment".into() });
        }
        let value = parse_env_value(&raw);
        let (last, parents) = segments.split_last().expect("split yields at least one segment");
        let mut cursor = &mut *table;
        for seg in parents {
            let entry = cursor.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cursor = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::Env {
                        var,
                        message: format!("`{seg}` is not a table in the configuration"),
                    });
                }
            };
        }
        cursor.insert(last.clone(), value);
    }
    Ok(())
}

/// Names the environment variable behind a schema error (an unknown key such as
/// `NOTIFY_REPO` from another tool, a wrong type) when leaving it out makes the error go away;
/// otherwise the error is the file's.
fn blame(table: &toml::Table, env: &[(String, String)], origin: &str, source: toml::de::Error) -> ConfigError {
    for (i, (var, _)) in env.iter().enumerate() {
        let others: Vec<_> = env.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, kv)| kv.clone()).collect();
        let without = Config::with_overrides(table.clone(), &others);
        if !matches!(&without, Err(ConfigError::Parse { source: s, .. }) if *s == source) {
            return ConfigError::EnvKey { var: var.clone(), source };
        }
    }
    ConfigError::Parse { origin: origin.into(), source }
}

fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "[tenants.demo]\npublish_key = \"demo-key\"\n";

    #[test]
    fn defaults_fill_everything_but_tenants() {
        let c = Config::from_toml(MIN, "t", []).unwrap();
        assert_eq!(c.server.listen.port(), 8080);
        assert_eq!(c.connections.heartbeat_interval, Duration::from_secs(25));
        assert!(matches!(c.tenants["demo"].auth, AuthConfig::Insecure));
    }

    #[test]
    fn server_switches_default_and_are_checked() {
        let c = Config::from_toml(MIN, "t", []).unwrap();
        assert_eq!((c.server.accept_backlog, c.server.demo), (4096, false));
        let err = Config::from_toml(&format!("[server]\naccept_backlog = 0\n{MIN}"), "t", []).unwrap_err();
        assert!(err.to_string().contains("server.accept_backlog"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::from_toml("[server]\nlisten_addr = \"x\"\n", "t", []).unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn env_overrides_nested_keys() {
        let env = [
            ("NOTIFY_SERVER__LISTEN".to_string(), "127.0.0.1:9999".to_string()),
            ("NOTIFY_CONNECTIONS__SEND_QUEUE_FRAMES".to_string(), "7".to_string()),
            ("NOTIFY_TENANTS__DEMO__PUBLISH_KEY".to_string(), "other-key-123".to_string()),
            ("UNRELATED".to_string(), "1".to_string()),
        ];
        let c = Config::from_toml(MIN, "t", env).unwrap();
        assert_eq!(c.server.listen.port(), 9999);
        assert_eq!(c.connections.send_queue_frames, 7);
        assert_eq!(c.tenants["demo"].publish_key, "other-key-123");
    }

    #[test]
    fn a_key_set_url_is_https_or_loopback_http_and_jwt_settings_name_their_key() {
        assert!(check_jwks_url("https://id.example.com/realms/a/protocol/openid-connect/certs").is_ok());
        assert!(check_jwks_url("http://127.0.0.1:8180/certs").is_ok());
        assert!(check_jwks_url("http://[::1]:8180/certs").is_ok());
        assert!(check_jwks_url("http://localhost/certs").is_ok());
        assert!(check_jwks_url("http://id.example.com/certs").unwrap_err().contains("https"));
        assert!(check_jwks_url("http://10.0.0.1/certs").is_err());
        assert!(check_jwks_url("ftp://id.example.com/certs").is_err());
        let with = |auth: &str| {
            let text = format!("[tenants.demo]\npublish_key = \"demo-key\"\nauth = {{ mode = \"jwt\", {auth} }}\n");
            Config::from_toml(&text, "t", []).err().map(|e| e.to_string())
        };
        assert_eq!(
            with("jwks_url = \"https://id.example.com/certs\", issuer = [\"a\", \"b\"], audience = \"n\""),
            None
        );
        let refused = [
            ("jwks_url = \"http://id.example.com/certs\"", "tenants.demo.auth.jwks_url"),
            ("jwks_url = \"https://a/c\", jwks_min_refresh_secs = 0", "jwks_min_refresh_secs"),
            ("jwks_url = \"https://a/c\", jwks_max_refresh_secs = 10", "jwks_max_refresh_secs"),
            ("jwks_url = \"https://a/c\", jwks_timeout_ms = 10", "jwks_timeout_ms"),
            ("jwks_url = \"https://a/c\", algorithms = [\"none\"]", "tenants.demo.auth.algorithms"),
            ("jwks_url = \"https://a/c\", user_claim = \"\"", "user_claim"),
            ("keys = [{ kid = \"k\", public_key = \"not a key\" }]", "keys[0].public_key"),
            ("keys = [{ kid = \"k\", secret = \"short\" }]", "keys[0].secret"),
            ("keys = [{ kid = \"k\", secret = \"0123456789abcdef\", hs256_secret = \"0123456789abcdef\" }]", "keys[0]"),
        ];
        for (auth, key) in refused {
            let error = with(auth).unwrap_or_else(|| panic!("{auth} was accepted"));
            assert!(error.contains(key), "{auth}: {error}");
        }
    }

    #[test]
    fn metrics_listen_defaults_to_loopback_and_can_be_off() {
        let c = Config::from_toml(MIN, "t", []).unwrap();
        assert_eq!(c.server.metrics_listen, Some(SocketAddr::from(([127, 0, 0, 1], 9464))));
        let c = Config::from_toml(&format!("[server]\nmetrics_listen = \"off\"\n{MIN}"), "t", []).unwrap();
        assert_eq!(c.server.metrics_listen, None);
        let e = Config::from_toml(&format!("[server]\nmetrics_listen = \"9464\"\n{MIN}"), "t", []).unwrap_err();
        assert!(e.to_string().contains("metrics_listen"), "{e}");
    }

    #[test]
    fn variables_that_name_no_key_path_are_left_alone() {
        let env = ["NOTIFY_URL", "NOTIFY_PUBLISH_KEY", "NOTIFY_ADMIN_TOKEN", "NOTIFY_CA_CERT", "NOTIFY_CONFIG"]
            .map(|var| (var.to_string(), "x".to_string()));
        let c = Config::from_toml(MIN, "t", env).unwrap();
        assert!(c.server.admin_token.is_none());
    }

    #[test]
    fn an_unknown_variable_is_named_in_full() {
        let env = [
            ("NOTIFY_SERVER__LISTEN".to_string(), "127.0.0.1:9999".to_string()),
            ("NOTIFY_SERVR__LISTEN".to_string(), "127.0.0.1:9998".to_string()),
        ];
        let e = Config::from_toml(MIN, "test", env).unwrap_err().to_string();
        assert!(e.contains("NOTIFY_SERVR__LISTEN"), "{e}");
        let env = [("NOTIFY_CONNECTIONS__SEND_QUEUE_FRAMES".to_string(), "many".to_string())];
        let e = Config::from_toml(MIN, "test", env).unwrap_err().to_string();
        assert!(e.contains("NOTIFY_CONNECTIONS__SEND_QUEUE_FRAMES"), "{e}");
        let e = Config::from_toml("[tenants.demo]\npublish_key = 5\n", "file.toml", []).unwrap_err().to_string();
        assert!(e.starts_with("file.toml:"), "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        let text = format!("{MIN}[connections]\nheartbeat_interval = \"30s\"\nidle_timeout = \"10s\"\n");
        let err = Config::from_toml(&text, "t", []).unwrap_err();
        assert!(err.to_string().contains("connections.idle_timeout"), "{err}");
        let err = Config::from_toml("[tenants.demo]\npublish_key = \"short\"\n", "t", []).unwrap_err();
        assert!(err.to_string().contains("tenants.demo.publish_key"), "{err}");
        let text = "[tenants.demo]\npublish_key = \"demo-key\"\nauth = { mode = \"jwt\" }\n";
        let err = Config::from_toml(text, "t", []).unwrap_err();
        assert!(err.to_string().contains("tenants.demo.auth"), "{err}");
    }
}
