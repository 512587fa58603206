//! Gives memory back to the operating system after a crowd of connections has left.
//!
//! What a crowd of connections leaves behind is spread through the heaps of the worker
//! threads, and stays resident until [`crate::heap::release`] hands the free pages back. A
//! node that held 15,000 connections would otherwise keep most of that memory for the rest
//! of its life.

use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::drain::Drain;

/// How often the connection count is looked at.
const EVERY: Duration = Duration::from_secs(1);
/// Trims once connections fell by at least this many since the last peak, and by a quarter.
const FELL_BY: usize = 1000;

/// Watches the count of `connections` until the node drains; trims after a large drop.
pub(crate) async fn run(drain: Drain, connections: TaskTracker) {
    let mut peak = 0;
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            () = drain.started() => return,
            _ = tick.tick() => {}
        }
        let now = connections.len();
        peak = peak.max(now);
        if peak - now >= FELL_BY.max(peak / 4) {
            peak = now;
            let _ = tokio::task::spawn_blocking(crate::heap::release).await;
        }
    }
}
