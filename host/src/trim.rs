//! Gives memory back to the operating system after a crowd of connections has left, and
//! after a plugin compilation.
//!
//! glibc's allocator returns freed memory on its own only from the top of each heap; what a
//! crowd of connections leaves behind is spread through the heaps of the worker threads, and
//! stays resident until `malloc_trim` releases the free pages. A node that held 15,000
//! connections would otherwise keep most of that memory for the rest of its life, and so
//! would a node that compiled a JavaScript or Python runtime (hundreds of MB of compiler
//! state, freed once the code is made). On other platforms this does nothing.

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
            () = app.drain.started() => return,
            _ = tick.tick() => {}
        }
        let now = app.connections.len();
        peak = peak.max(now);
        if peak - now >= FELL_BY.max(peak / 4) {
            peak = now;
            let _ = tokio::task::spawn_blocking(release).await;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn release() {
    // SAFETY: `malloc_trim` only releases free memory inside glibc's own heaps; it takes the
    // allocator's locks itself and touches no memory the program owns.
    #[allow(unsafe_code)]
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released = released == 1, "gave free heap memory back");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release() {}
