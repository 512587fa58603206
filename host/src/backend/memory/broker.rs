//! In-process broker: publishing is delivery into the local hub, through the stream history
//! when the tenant keeps one (positions, resume).

use std::sync::Arc;

use super::history::MemoryHistory;
use crate::backend::history::Limits;
use crate::backend::{BoxFuture, Broker, BrokerError};
use crate::event::Event;
use crate::hub::Hub;
use crate::tenant::Tenant;

/// Delivers straight into the local hub; the publisher waits for the fan-out, which is what
/// bounds ingest when fan-out falls behind.
pub(crate) struct MemoryBroker {
    hub: Arc<Hub>,
    history: Arc<MemoryHistory>,
}

impl MemoryBroker {
    pub(crate) fn new(hub: Arc<Hub>, history: Arc<MemoryHistory>) -> Self {
        Self { hub, history }
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(&'a self, tenant: &'a Arc<Tenant>, events: &'a [Event]) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let limits = Limits::from(tenant.config.history);
            for event in events {
                if !tenant.config.history.enabled() {
                    self.hub.deliver(tenant, event);
                    continue;
                }
                for target in event.targets() {
                    let filter = event.filter.as_ref();
                    self.history.append(
                        tenant.index,
                        target,
                        limits,
                        filter,
                        |position| event.encode_for(target, Some(position)),
                        |frame, position| {
                            let latency = event.received_at.elapsed();
                            let filter = filter.map(|f| &**f);
                            self.hub.deliver_frame(tenant, target, frame, filter, Some(position), latency);
                        },
                    );
                }
            }
            Ok(())
        })
    }

    fn healthy(&self) -> bool {
        true
    }
}
