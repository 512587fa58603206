//! Presence: how many connections a user has, over every live node.

use std::sync::Arc;
use std::time::Duration;

use super::{BackendError, BoxFuture};
use crate::tenant::Tenant;

/// How presence waits: `debounce` before reporting a user offline, `node_timeout` before a
/// silent node counts as dead.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub debounce: Duration,
    pub node_timeout: Duration,
}

/// A user's presence as `GET /v1/presence/{user}` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub connections: u64,
}

/// Why presence could not be read.
#[derive(Debug, thiserror::Error)]
#[error("presence unavailable: {0}")]
pub(crate) struct PresenceError(#[from] pub(crate) BackendError);

/// Counts users' connections.
///
/// Contract:
/// - `connected` and `disconnected` are called once each per connection, in that order, and
///   never wait (they run on connection tasks);
/// - `status` counts the connections of every live node: those of this node at once, those of
///   other nodes once their changes have propagated;
/// - a node that dies stops counting after the store's node timeout.
pub(crate) trait Presence: Send + Sync + 'static {
    fn connected(&self, tenant: &Arc<Tenant>, user: &str);
    fn disconnected(&self, tenant: &Arc<Tenant>, user: &str);
    fn status<'a>(&'a self, tenant: &'a Tenant, user: &'a str) -> BoxFuture<'a, Result<Status, PresenceError>>;

    /// Drops what is kept of a deleted tenant's presence (nothing on one node: it counts
    /// live connections).
    fn forget<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<(), PresenceError>> {
        let _ = tenant;
        Box::pin(async { Ok(()) })
    }
}
