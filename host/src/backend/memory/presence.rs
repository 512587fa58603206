//! Presence on one node: the local hub is the whole truth.

use std::sync::Arc;

use crate::backend::BoxFuture;
use crate::backend::presence::{Presence, PresenceError, Status};
use crate::hub::Hub;
use crate::tenant::Tenant;

/// Reads connection counts from the hub; nothing to keep.
pub(crate) struct MemoryPresence {
    hub: Arc<Hub>,
}

impl MemoryPresence {
    pub(crate) fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

impl Presence for MemoryPresence {
    fn connected(&self, _: &Arc<Tenant>, _: &str) {}

    fn disconnected(&self, _: &Arc<Tenant>, _: &str) {}

    fn status<'a>(&'a self, tenant: &'a Tenant, user: &'a str) -> BoxFuture<'a, Result<Status, PresenceError>> {
        let connections = self.hub.user_connections(tenant, user) as u64;
        Box::pin(async move { Ok(Status { connections }) })
    }
}
