//! The backends of a single node: delivery straight into the local hub, history and
//! idempotency keys in memory, presence read from the local connections.

mod broker;
mod control;
mod devices;
mod escalations;
mod history;
mod idempotency;
mod members;
mod presence;

use std::sync::Arc;

use control::FileStore;

use super::{Backends, BackendsError, LocalDelivery};
use crate::config::{Config, MemoryConfig};
use crate::webhook::Webhooks;

/// One node's backends; the control-plane state is kept in a file under `server.data_dir`,
/// or in memory without one.
pub(super) fn backends(
    config: &Config,
    memory: &MemoryConfig,
    local: &Arc<dyn LocalDelivery>,
    webhooks: &Arc<Webhooks>,
) -> Result<Backends, BackendsError> {
    let history = Arc::new(history::MemoryHistory::default());
    let data_dir = config.server.data_dir.as_ref().map(|d| config.base_dir.join(d));
    Ok(Backends {
        broker: Arc::new(broker::MemoryBroker::new(local.clone(), history.clone())),
        history,
        idempotency: Arc::new(idempotency::MemoryIdempotency::default()),
        presence: Arc::new(presence::MemoryPresence::new(local.clone(), webhooks.clone(), memory.presence_debounce)),
        members: Arc::new(members::MemoryMembers::default()),
        devices: Arc::new(devices::MemoryDevices::default()),
        escalations: Arc::new(escalations::MemoryEscalations::default()),
        control: Arc::new(FileStore::open(data_dir)?),
        node_id: super::random_node_id(),
        shared: false,
        ingestion: None,
        tasks: Vec::new(),
    })
}
