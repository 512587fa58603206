//! In-process broker: publishing is delivery into the local hub.

use std::sync::Arc;

use super::{BoxFuture, Broker, BrokerError};
use crate::event::Event;
use crate::hub::Hub;
use crate::tenant::Tenant;

/// Delivers straight into the local hub; the publisher waits for the fan-out, which is what
/// bounds ingest when fan-out falls behind.
pub struct MemoryBroker {
    hub: Arc<Hub>,
}

impl MemoryBroker {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(&'a self, tenant: &'a Arc<Tenant>, events: &'a [Event]) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            for event in events {
                self.hub.deliver(tenant, event);
            }
            Ok(())
        })
    }

    fn healthy(&self) -> bool {
        true
    }
}
