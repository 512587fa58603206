//! Gives memory back to the operating system after a crowd of connections has left.
//!
//! What a crowd of connections leaves behind is spread through the heaps of the worker
//! threads, and stays resident until [`crate::heap::release`] hands the free pages back. A
//! node that held 15,000 connections would otherwise keep most of that memory for the rest
//! of its life.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;

/// How often the connection count is looked at.
const EVERY: Duration = Duration::from_secs(1);
/// Trims once connections fell by at least this many since the last peak, and by a quarter.
const FELL_BY: usize = 1000;

/// Watches the connection count until the node drains; trims after a large drop.
pub(crate) async fn run(app: Arc<App>) {
    let mut peak = 0;
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            () = app.lifecycle.drain.started() => return,
            _ = tick.tick() => {}
        }
        let now = app.lifecycle.connections.len();
        peak = peak.max(now);
        if peak - now >= FELL_BY.max(peak / 4) {
            peak = now;
            let _ = tokio::task::spawn_blocking(crate::heap::release).await;
        }
    }
}
