//! What backends hand to this node's own connections: the seam between a broker (or
//! presence on one node) and the hub, as narrow as the backends need, so a backend can be
//! tested against a recording stand-in and never depends on the hub's other methods.

use std::time::Duration;

use bytes::Bytes;

use crate::event::Event;
use crate::hub::{Hub, Routing};
use crate::stream::Target;
use crate::tenant::Tenant;

/// The node's local connections, as backends see them.
pub(crate) trait LocalDelivery: Send + Sync + 'static {
    /// Encodes `event` once per target and pushes it to the local connections of each
    /// (tenants without history: no positions).
    fn deliver(&self, tenant: &Tenant, event: &Event);

    /// Pushes an already encoded frame of one stream to its local connections; `latency` is
    /// the time from its publication to this call.
    fn deliver_frame(
        &self,
        tenant: &Tenant,
        target: Target<'_>,
        frame: &Bytes,
        routing: Routing<'_>,
        latency: Duration,
    );

    /// Tells every local connection that events may have been missed: each is asked to
    /// reconnect and resume within `spread`. Returns how many were told.
    fn resync(&self, spread: Duration) -> usize;

    /// [`LocalDelivery::resync`] for the local connections of one stream.
    fn resync_stream(&self, tenant: &Tenant, target: Target<'_>, spread: Duration) -> usize;

    /// How many local connections `user` has.
    fn user_connections(&self, tenant: &Tenant, user: &str) -> usize;
}

impl LocalDelivery for Hub {
    fn deliver(&self, tenant: &Tenant, event: &Event) {
        Hub::deliver(self, tenant, event);
    }

    fn deliver_frame(
        &self,
        tenant: &Tenant,
        target: Target<'_>,
        frame: &Bytes,
        routing: Routing<'_>,
        latency: Duration,
    ) {
        Hub::deliver_frame(self, tenant, target, frame, routing, latency);
    }

    fn resync(&self, spread: Duration) -> usize {
        Hub::resync(self, spread)
    }

    fn resync_stream(&self, tenant: &Tenant, target: Target<'_>, spread: Duration) -> usize {
        Hub::resync_stream(self, tenant, target, spread)
    }

    fn user_connections(&self, tenant: &Tenant, user: &str) -> usize {
        Hub::user_connections(self, tenant, user)
    }
}
