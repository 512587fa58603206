//! The node's lifecycle, in the style of mini-redis: the drain signal, and the tasks that
//! shutdown waits for once it started (connections flushing their queues, background
//! workers finishing what they read).

use tokio_util::task::TaskTracker;

use crate::drain::Drain;

/// The drain signal and the tracked tasks.
#[derive(Default)]
pub(crate) struct Lifecycle {
    /// Started when the host drains: new WebSocket upgrades and publishes are refused, and
    /// every connection flushes its queue and closes with 1001.
    pub(crate) drain: Drain,
    /// Tracks connection tasks, so shutdown can wait for their queues to flush.
    pub(crate) connections: TaskTracker,
    /// Background workers (a backend's ingestion consumers, forgetting a deleted tenant);
    /// they stop reading when draining starts and shutdown waits for them to finish what
    /// they read.
    pub(crate) workers: TaskTracker,
}
