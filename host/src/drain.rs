//! The drain signal, in the style of mini-redis: once started, new WebSocket upgrades and
//! publishes are refused, `/readyz` answers 503, every connection flushes its queue and
//! closes with 1001, and background workers stop reading.

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A handle on the node's drain signal; clones share it.
#[derive(Clone, Default)]
pub(crate) struct Drain(CancellationToken);

impl Drain {
    /// Starts draining; idempotent.
    pub(crate) fn start(&self) {
        self.0.cancel();
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once draining has started.
    pub(crate) fn started(&self) -> WaitForCancellationFuture<'_> {
        self.0.cancelled()
    }
}
