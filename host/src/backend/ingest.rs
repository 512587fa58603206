//! Publishing through a backend (Redis streams and channels today): the node as the
//! backend's ingestion consumers see it, one narrow trait the node implements, and the
//! starter [`Backends::start`](super::Backends::start) returns for backends that ingest.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use super::{BoxFuture, BrokerError};
use crate::drain::Drain;
use crate::event::Event;
use crate::plugin::hooks::Refusal;
use crate::tenant::{Tenant, Tenants};

/// What ingestion consumers hand their events to, and what they read of the node.
pub(crate) trait Publisher: Send + Sync + 'static {
    /// The live tenant registry (tenants come and go at runtime).
    fn tenants(&self) -> &Tenants;

    /// A publish body checked as `POST /v1/publish` checks one; the error says why not.
    fn parse(&self, body: &[u8]) -> Result<Event, String>;

    /// Runs `events` through the publish pipeline every publish takes (idempotency keys,
    /// plugins, the broker); `Ok` carries the broker's guarantee, and the events a plugin
    /// dropped.
    fn publish<'a>(
        &'a self,
        tenant: &'a Arc<Tenant>,
        events: Vec<Event>,
    ) -> BoxFuture<'a, Result<Vec<Refusal>, BrokerError>>;

    /// The node's drain signal: consumers stop reading once it starts.
    fn drain(&self) -> &Drain;
}

/// Starts a backend's ingestion consumers as tasks of `workers` (which shutdown waits for),
/// handing what they read to the publisher.
pub(crate) type Ingestion =
    Box<dyn FnOnce(Arc<dyn Publisher>, TaskTracker) -> BoxFuture<'static, Result<(), BrokerError>> + Send + Sync>;
