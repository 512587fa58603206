//! The control-plane store: state that the admin API changes at runtime (tenants created
//! through it), versioned, replaced atomically, with change notification.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::BoxFuture;
use crate::config::{AuthConfig, HistoryConfig, LimitOverrides, SlowClientPolicy};

/// The whole control-plane state at one version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ControlState {
    /// Starts at 0 (nothing stored) and grows by one with every change.
    pub version: u64,
    pub tenants: BTreeMap<String, StoredTenant>,
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
    pub limits: LimitOverrides,
}

fn all_channels() -> Vec<String> {
    vec!["*".into()]
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
}

/// Keeps the control-plane state.
///
/// Contract:
/// - `load` returns one consistent state with its version;
/// - `replace` stores `state` as version `expected + 1` only if the stored version is still
///   `expected`, atomically (a reader sees the old state or the new one, never a mix; a crash
///   leaves one of them), and fails with `Conflict` otherwise: concurrent changes resolve by
///   version, never by whoever writes last;
/// - after every successful `replace`, by any node sharing the store, `watch` yields the new
///   version (possibly skipping versions: a watcher reloads the state, it does not replay).
pub(crate) trait ControlStore: Send + Sync + 'static {
    fn load(&self) -> BoxFuture<'_, Result<ControlState, StoreError>>;
    fn replace(&self, expected: u64, state: ControlState) -> BoxFuture<'_, Result<u64, StoreError>>;
    fn watch(&self) -> watch::Receiver<u64>;
}
