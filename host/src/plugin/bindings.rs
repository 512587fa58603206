//! The host's one `bindgen!` for the `notify:plugin` WIT package, and the store state that
//! implements the plugin-facing `host` interface (log, config) plus a locked-down WASI.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin-host",
});

pub(crate) use exports::notify::plugin::{auth, route, transform};
pub(crate) use notify::plugin::types;

/// Per-store state: one per plugin instance, never shared across tenants.
pub(crate) struct StoreState {
    pub tenant: Arc<str>,
    /// `<hook>@<hash prefix>`, for log lines.
    pub plugin: Arc<str>,
    pub config: Arc<BTreeMap<String, String>>,
    /// Memory and instance caps enforced by wasmtime on every growth.
    pub limits: StoreLimits,
    /// WASI with nothing granted: no preopened directories, no environment, no arguments,
    /// no network, empty stdin, discarded stdout/stderr.
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    /// The running call's budget, read by the epoch callback.
    pub clock: CallClock,
}

/// A call's CPU-time budget. The epoch ticker wakes the callback every millisecond; the call
/// is interrupted once its thread has used `budget` of CPU, so a host preempted under load
/// does not fail healthy plugins. `WALL_FACTOR` times the budget in wall time is the hard
/// stop for a thread that is starved rather than busy.
pub(crate) struct CallClock {
    /// The calling thread's CPU time at the start (calls are synchronous, so the whole call
    /// runs on that thread).
    cpu: Option<std::time::Duration>,
    wall: std::time::Instant,
    budget: std::time::Duration,
}

impl CallClock {
    const WALL_FACTOR: u32 = 50;

    pub(crate) fn start(budget: std::time::Duration) -> Self {
        Self { cpu: thread_cpu(), wall: std::time::Instant::now(), budget }
    }

    /// Whether the call has used up its budget.
    pub(crate) fn expired(&self) -> bool {
        let cpu_spent = self.cpu.zip(thread_cpu()).map(|(start, now)| now.saturating_sub(start));
        // Without a thread clock, wall time is all there is.
        let spent = cpu_spent.unwrap_or_else(|| self.wall.elapsed());
        spent >= self.budget || self.wall.elapsed() >= self.budget * Self::WALL_FACTOR
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

fn thread_cpu() -> Option<std::time::Duration> {
    cpu_time::ThreadTime::try_now().ok().map(|t| t.as_duration())
}

impl notify::plugin::host::Host for StoreState {
    fn log(&mut self, level: notify::plugin::host::Level, message: String) {
        use notify::plugin::host::Level;
        let (tenant, plugin) = (&*self.tenant, &*self.plugin);
        let message: String = message.chars().take(2048).collect();
        match level {
            Level::Debug => tracing::debug!(tenant, plugin, "{message}"),
            Level::Info => tracing::info!(tenant, plugin, "{message}"),
            Level::Warn => tracing::warn!(tenant, plugin, "{message}"),
            Level::Error => tracing::error!(tenant, plugin, "{message}"),
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

impl notify::plugin::types::Host for StoreState {}
