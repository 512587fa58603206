//! The node's lifecycle, in the style of mini-redis: the drain signal, and the tasks that
//! shutdown waits for once it started, in this order: connections flushing their queues and
//! background workers finishing what they read (within `shutdown_grace`), then the node's
//! named long-lived tasks, stopped last since connections need them until the end (the
//! broker's subscriber delivers to a draining connection, presence mirrors its close).

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

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
    /// The node's long-lived tasks (the backends', the control plane's, housekeeping),
    /// each named; stopped last, once connections and workers are done.
    tasks: TaskTracker,
    /// Stops the long-lived tasks that still run (see [`Lifecycle::stop_tasks`]).
    stop: CancellationToken,
}

impl Lifecycle {
    /// Runs `task` as the long-lived task `name` until it ends or the tasks are stopped.
    pub(crate) fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        let run = async move {
            tokio::select! {
                () = task => tracing::debug!("ended"),
                () = stop.cancelled() => tracing::debug!("stopped"),
            }
        };
        self.tasks.spawn(run.instrument(tracing::info_span!("task", name)));
    }

    /// The last step of shutdown: stops the long-lived tasks and waits until they are gone.
    pub(crate) async fn stop_tasks(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
