//! The backends of a single node: delivery straight into the local hub, history and
//! idempotency keys in memory, presence read from the hub.

mod broker;
mod control;
mod history;
mod idempotency;
mod presence;

use std::sync::Arc;

pub(crate) use control::FileStore;

use super::Backends;
use crate::hub::Hub;

pub(super) fn backends(hub: &Arc<Hub>) -> Backends {
    let history = Arc::new(history::MemoryHistory::default());
    Backends {
        broker: Arc::new(broker::MemoryBroker::new(hub.clone(), history.clone())),
        history,
        idempotency: Arc::new(idempotency::MemoryIdempotency::default()),
        presence: Arc::new(presence::MemoryPresence::new(hub.clone())),
    }
}
