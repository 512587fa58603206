//! The host's one `bindgen!`, over every version of the `notify:plugin` WIT package it runs
//! (the current one and 0.1.0), and the store state that implements the plugin-facing `host`
//! interface (log, config) of each, plus a locked-down WASI.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::budget::CallClock;
use super::memory::MemoryCaps;
use notify::plugin0_2_0::host::Level;

wasmtime::component::bindgen!({
    path: ["../wit", "../wit/compat/0.1.0", "../wit/host"],
    world: "notify:host/plugin-host",
    // Guest code runs on a fiber, so a call can yield to the async runtime at an epoch tick.
    exports: { default: async },
    // Events and connect requests are lent to the guest, not copied into owned values first.
    ownership: Borrowing { duplicate_if_necessary: true },
});

pub(crate) use exports::notify::plugin0_2_0::{auth, route, transform};
pub(crate) use notify::plugin0_2_0::types;

/// The hooks and types of components built against `notify:plugin@0.1.0`.
pub(crate) mod v0_1 {
    pub(crate) use super::exports::notify::plugin0_1_0::{auth, route, transform};
    pub(crate) use super::notify::plugin0_1_0::types;
}

/// Per-store state: one per plugin instance, never shared across tenants.
pub(crate) struct StoreState {
    pub tenant: Arc<str>,
    /// `<hook>@<hash prefix>`, for log lines.
    pub plugin: Arc<str>,
    pub config: Arc<BTreeMap<String, String>>,
    /// Memory and instance caps enforced by wasmtime on every growth.
    pub limits: MemoryCaps,
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

impl StoreState {
    fn write_log(&self, level: Level, message: &str) {
        let (tenant, plugin) = (&*self.tenant, &*self.plugin);
        let message: String = message.chars().take(2048).collect();
        match level {
            Level::Debug => tracing::debug!(tenant, plugin, "{message}"),
            Level::Info => tracing::info!(tenant, plugin, "{message}"),
            Level::Warn => tracing::warn!(tenant, plugin, "{message}"),
            Level::Error => tracing::error!(tenant, plugin, "{message}"),
        }
    }

    fn config_value(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }
}

impl notify::plugin0_2_0::host::Host for StoreState {
    fn log(&mut self, level: Level, message: String) {
        self.write_log(level, &message);
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.config_value(&key)
    }
}

impl notify::plugin0_2_0::types::Host for StoreState {}

impl notify::plugin0_1_0::host::Host for StoreState {
    fn log(&mut self, level: notify::plugin0_1_0::host::Level, message: String) {
        use notify::plugin0_1_0::host::Level as Old;
        let level = match level {
            Old::Debug => Level::Debug,
            Old::Info => Level::Info,
            Old::Warn => Level::Warn,
            Old::Error => Level::Error,
        };
        self.write_log(level, &message);
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.config_value(&key)
    }
}

impl notify::plugin0_1_0::types::Host for StoreState {}
