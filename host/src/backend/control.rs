//! The control-plane store: state that the admin API changes at runtime (tenants created
//! through it, plugin slots changed through it, and the plugins' bytes), versioned, replaced
//! atomically, with change notification; and what every live node reports it runs.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::{BackendError, BoxFuture};
use std::sync::Arc;

use crate::config::{
    AuthConfig, CompressionConfig, HistoryConfig, LimitOverrides, PushConfig, PusherCredentials, SlowClientPolicy,
    TenantConfig,
};
use crate::plugin::TenantSlots;
use crate::revocation::{Revocation, Revoked};
use crate::tenant::{Key, KeyDigest, Keys, Source, Tenant, Tenants};
use crate::webhook::{PausedEndpoints, StoredWebhook};

/// The whole control-plane state at one version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ControlState {
    /// Starts at 0 (nothing stored) and grows by one with every change.
    pub version: u64,
    pub tenants: BTreeMap<String, StoredTenant>,
    /// Plugin slots changed through the admin API, by tenant (configured tenants too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugins: BTreeMap<String, TenantSlots>,
    /// Webhook endpoints created through the admin API, by tenant (configured tenants too),
    /// with their signing secrets: the nodes sign with them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub webhooks: BTreeMap<String, Vec<StoredWebhook>>,
    /// Webhook endpoints paused after failing too long (configured ones too), by tenant and
    /// endpoint id, until resumed through the admin API.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub webhook_pauses: PausedEndpoints,
}

/// A plugin component's bytes, stored under their sha256 (hex).
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    pub hash: String,
    pub bytes: bytes::Bytes,
}

/// Commands a node has not taken yet before older ones are dropped for it.
pub(crate) const COMMAND_BACKLOG: usize = 1024;

/// How long nodes' answers to a request are kept.
pub(crate) const REPLY_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a node's report counts as live: three report intervals.
pub(crate) const REPORT_TTL: std::time::Duration = std::time::Duration::from_secs(3);

/// The report key of a node's own health (`control::NodeHealth`), beside its tenants'.
pub(crate) const NODE_HEALTH: &str = ".";

/// One live node's reports for the tenants asked about, in that order: the JSON it
/// reported for each (none: nothing for that tenant).
#[derive(Debug, Clone)]
pub(crate) struct NodeReport {
    pub node: String,
    pub reports: Vec<Option<String>>,
}

/// A tenant created through the API: its settings and its keys' SHA-256 digests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredTenant {
    pub settings: TenantSettings,
    /// Newest first; older ones are in their overlap window.
    pub publish_keys: Vec<StoredKey>,
    pub management_keys: Vec<StoredKey>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// One more with every change of `settings`.
    #[serde(default)]
    pub revision: u64,
}

/// One key: the hex SHA-256 of the secret, and when it stops working (ms since the Unix
/// epoch; none for the current key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredKey {
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// The settings of a tenant that the API sets (the request body of `POST /v1/admin/tenants`
/// without `id`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantSettings {
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default = "all_channels")]
    pub default_channels: Vec<String>,
    #[serde(default)]
    pub slow_client: SlowClientPolicy,
    #[serde(default)]
    pub history: HistoryConfig,
    #[serde(default)]
    pub compression: CompressionConfig,
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Set and rotated through `POST /v1/admin/tenants/{tenant}/pusher`; the secret is kept
    /// as it is (Pusher's signatures need it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pusher: Option<PusherCredentials>,
    /// With its providers' credentials, kept as they are (signing needs them).
    #[serde(default)]
    pub push: PushConfig,
}

fn all_channels() -> Vec<String> {
    vec!["*".into()]
}

impl ControlState {
    /// Every plugin hash a slot names: the bytes the store must keep.
    pub(crate) fn plugin_hashes(&self) -> BTreeSet<&str> {
        let slots = self.plugins.values().flat_map(|slots| slots.values());
        slots.flat_map(|slot| slot.versions()).map(|v| v.hash.as_str()).collect()
    }

    /// Makes `tenants` match this state: adds stored tenants it lacks, applies changed
    /// settings and keys, removes API tenants the state no longer has, and returns those.
    /// Tenants from `config.toml` are never changed; a stored tenant with the id of a
    /// configured one is ignored (the configuration wins).
    pub(crate) fn sync(&self, tenants: &Tenants) -> Vec<Arc<Tenant>> {
        for (id, stored) in &self.tenants {
            match tenants.get(id) {
                Some(t) if t.source == Source::Config => {
                    tracing::warn!(
                        tenant = id,
                        "a stored tenant has the id of a configured one; the configuration wins"
                    );
                }
                Some(t) => {
                    if t.revision != stored.revision {
                        tenants.reconfigure(id, stored.settings.config(String::new()), stored.revision);
                    }
                    rekey(tenants, id, stored);
                }
                None => add(tenants, id, stored),
            }
        }
        let gone: Vec<_> = tenants
            .all()
            .into_iter()
            .filter(|t| t.source != Source::Config && !self.tenants.contains_key(&*t.id))
            .collect();
        gone.iter().for_each(|t| drop(tenants.remove(&t.id)));
        gone
    }
}

fn add(tenants: &Tenants, id: &str, stored: &StoredTenant) {
    let Some(keys) = stored.keys() else {
        tracing::error!(tenant = id, "stored tenant has malformed key digests; not loaded");
        return;
    };
    let config = stored.settings.config(String::new());
    match tenants.add(id, config, keys, Source::Api { created_at: stored.created_at }) {
        Ok(_) => {
            if stored.revision > 0 {
                tenants.reconfigure(id, stored.settings.config(String::new()), stored.revision);
            }
            tracing::info!(tenant = id, "tenant added");
        }
        Err(e) => tracing::error!(tenant = id, error = %e, "stored tenant not loaded"),
    }
}

/// Brings a stored tenant's keys into the registry after a rotation.
fn rekey(tenants: &Tenants, id: &str, stored: &StoredTenant) {
    let Some(keys) = stored.keys() else { return };
    if tenants.keys(id).is_some_and(|current| current != keys)
        && let Err(e) = tenants.set_keys(id, keys)
    {
        tracing::error!(tenant = id, error = %e, "rotated keys not applied");
    }
}

impl StoredTenant {
    /// Its keys, or `None` when a digest is malformed.
    fn keys(&self) -> Option<Keys> {
        let list = |keys: &[StoredKey]| {
            keys.iter()
                .map(|k| Some(Key { digest: KeyDigest::from_hex(&k.sha256)?, expires_at: k.expires_at }))
                .collect::<Option<Vec<_>>>()
        };
        Some(Keys { publish: list(&self.publish_keys)?, management: list(&self.management_keys)? })
    }
}

impl TenantSettings {
    /// The configuration of a tenant with these settings. `publish_key` is only for
    /// validation: the registry keeps key digests.
    pub(crate) fn config(&self, publish_key: String) -> TenantConfig {
        TenantConfig {
            publish_key,
            auth: self.auth.clone(),
            allowed_origins: self.allowed_origins.clone(),
            default_channels: self.default_channels.clone(),
            slow_client: self.slow_client,
            management_key: None,
            plugins: Default::default(),
            history: self.history,
            compression: self.compression,
            limits: self.limits,
            webhooks: Vec::new(),
            pusher: self.pusher.clone(),
            push: self.push.clone(),
        }
    }
}

/// Why the store could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("the control-plane state changed meanwhile (now version {current})")]
    Conflict { current: u64 },
    #[error("control-plane store: {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("control-plane store: unreadable state: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("control-plane store: {0}")]
    Unavailable(#[from] BackendError),
    #[error(
        "control-plane store: it lost state (version {stored}, this node has {applied}) and is being restored; retry"
    )]
    Lost { stored: u64, applied: u64 },
}

/// Keeps the control-plane state.
///
/// Contract:
/// - `load` returns one consistent state with its version;
/// - `replace` stores `state` as version `expected + 1` only if the stored version is still
///   `expected`, atomically (a reader sees the old state or the new one, never a mix; a crash
///   leaves one of them), and fails with `Conflict` otherwise: concurrent changes resolve by
///   version, never by whoever writes last. In the same step it stores `blobs` and drops the
///   blobs the new state no longer names (`ControlState::plugin_hashes`), so every hash a
///   stored state names has its bytes;
/// - `blob` returns the bytes stored under a hash the current state names;
/// - `version` is the stored version (0: nothing stored);
/// - `restore` stores `state` with its own version, and `blobs`, only if the stored version
///   is lower (the store lost state); it announces the version like `replace`. Of nodes
///   restoring at once, the newest copy ends up stored;
/// - after every successful `replace`, by any node sharing the store, `watch` yields the new
///   version (possibly skipping versions: a watcher reloads the state, it does not replay)
///   while `listening`; when listening starts again, `watch` yields the current version.
pub(crate) trait ControlStore: Send + Sync + 'static {
    fn load(&self) -> BoxFuture<'_, Result<ControlState, StoreError>>;
    fn replace(&self, expected: u64, state: ControlState, blobs: Vec<Blob>) -> BoxFuture<'_, Result<u64, StoreError>>;
    fn blob(&self, hash: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>>;
    fn version(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    fn restore(&self, state: ControlState, blobs: Vec<Blob>) -> BoxFuture<'_, Result<bool, StoreError>>;
    fn watch(&self) -> watch::Receiver<u64>;

    /// Records what `node` runs, as JSON per tenant, replacing its previous report; the
    /// node counts as live for `REPORT_TTL` after it. `None` withdraws the node (it stops).
    /// The key [`NODE_HEALTH`], which no tenant id can be, holds the node's own health.
    fn report(&self, node: &str, report: Option<BTreeMap<String, String>>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The live nodes (sorted by name), with what each reported for each of `tenants`.
    fn reports(&self, tenants: Vec<String>) -> BoxFuture<'_, Result<Vec<NodeReport>, StoreError>>;

    /// Sends `command` (JSON) to every node sharing the store, this one included, through
    /// `commands`; at most once, and only to nodes listening now.
    fn command(&self, command: String) -> BoxFuture<'_, Result<(), StoreError>>;
    fn commands(&self) -> broadcast::Receiver<String>;

    /// Adds one node's answer to request `to` (kept for a few seconds); `replies` takes
    /// the answers so far.
    fn reply(&self, to: &str, answer: String) -> BoxFuture<'_, Result<(), StoreError>>;
    fn replies(&self, to: &str) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Stores a token revocation for nodes that start later; `revocations` returns those
    /// that have not lapsed.
    fn revoke(&self, tenant: &str, user: &str, revoked: Revoked) -> BoxFuture<'_, Result<(), StoreError>>;
    fn revocations(&self) -> BoxFuture<'_, Result<Vec<Revocation>, StoreError>>;

    /// Whether changes made elsewhere are being heard now (a shared store's listener is
    /// connected); a node is not ready until they are.
    fn listening(&self) -> bool {
        true
    }
}
