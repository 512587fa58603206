//! The broker carries accepted events from ingest to every hub with interested connections.

use std::sync::Arc;

use super::interest::Ticket;
use super::{BackendError, BoxFuture};
use crate::event::Event;
use crate::stream::Target;
use crate::tenant::Tenant;

/// Why a broker could not take events.
#[derive(Debug, thiserror::Error)]
#[error("broker unavailable: {0}")]
pub struct BrokerError(#[from] pub(crate) BackendError);

/// Carries events to hubs.
///
/// Contract:
/// - `publish` resolves `Ok` only once every event has been handed on (queued on local
///   connections, or accepted by the shared transport); on `Err` nothing may be assumed
///   delivered and the caller must report failure to its publisher.
/// - Order: events of one `publish` call, and of successive calls by one caller, reach each
///   target stream on each node in that order. No order holds between different publishers.
/// - Interest: a node receives the events of a stream (a user, a channel, a tenant's
///   broadcast) only while it has announced interest in it through `interest`. Once the
///   future from `synced` resolves, events published afterwards reach this node (while the
///   broker is healthy).
/// - Delivery is at most once per connection; recovery of missed events is history's job.
pub(crate) trait Broker: Send + Sync + 'static {
    fn publish<'a>(&'a self, tenant: &'a Arc<Tenant>, events: &'a [Event]) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Local interest in `streams` rose (`delta > 0`) or fell by one connection. Returns a
    /// ticket for `synced` when the broker must subscribe to carry them here.
    fn interest(&self, tenant: &Tenant, streams: &[Target<'_>], delta: i32) -> Option<Ticket> {
        let _ = (tenant, streams, delta);
        None
    }

    /// Resolves once the interest change behind `ticket` is in effect (or the broker is down,
    /// in which case it takes effect on reconnect).
    fn synced(&self, ticket: Ticket) -> BoxFuture<'_, ()> {
        let _ = ticket;
        Box::pin(async {})
    }

    /// Whether the broker can currently carry events (reported by `/readyz`).
    fn healthy(&self) -> bool;

    /// Drops what the transport keeps of a deleted tenant: the streams publishers write to
    /// (ingest, dead letters). Nothing on one node.
    fn forget<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<(), BrokerError>> {
        let _ = tenant;
        Box::pin(async { Ok(()) })
    }
}
