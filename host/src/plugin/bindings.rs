//! The host's one `bindgen!` for the `notify:plugin` WIT package, and the store state that
//! implements the plugin-facing `host` interface (log, config) plus a locked-down WASI.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::budget::CallClock;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin-host",
    // Guest code runs on a fiber, so a call can yield to the async runtime at an epoch tick.
    exports: { default: async },
    // Events and connect requests are lent to the guest, not copied into owned values first.
    ownership: Borrowing { duplicate_if_necessary: true },
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

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
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
