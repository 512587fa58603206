//! The broker carries accepted events from ingest to every hub with interested connections.
//! `memory` (default) serves one process.

mod memory;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use memory::MemoryBroker;

use crate::event::Event;
use crate::tenant::Tenant;

/// A boxed future, so brokers can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a broker could not take events.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Carries events to hubs.
///
/// Contract:
/// - `publish` resolves `Ok` only once every event has been handed on (queued on local
///   connections, or accepted by the shared transport); on `Err` nothing may be assumed
///   delivered and the caller must report failure to its publisher.
/// - Order: events of one `publish` call, and of successive calls by one caller, reach each
///   target stream on each node in that order. No order holds between different publishers.
/// - Delivery is at most once per connection; recovery of missed events is history's job.
pub trait Broker: Send + Sync + 'static {
    fn publish<'a>(&'a self, tenant: &'a Arc<Tenant>, events: &'a [Event]) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Whether the broker can currently carry events (reported by `/readyz`).
    fn healthy(&self) -> bool;
}
