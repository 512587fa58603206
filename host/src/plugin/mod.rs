//! Per-tenant WebAssembly plugins: `authenticate`, `transform` and `route` hooks run in
//! wasmtime sandboxes (see docs/PLUGINS.md).
//!
//! - `bindings`: the single `bindgen!` and the store state (host interface, empty WASI).
//! - `runtime`: engine (pooling allocator, epoch deadlines), linker, compile cache.
//! - `instance`: one loaded plugin version with warm instances and a circuit breaker.
//! - this module: hook slots per tenant (install, rollback, remove) and the calls the rest
//!   of the host makes, run on blocking threads.

pub(crate) mod bindings;
pub(crate) mod hooks;
pub(crate) mod instance;
pub(crate) mod runtime;
pub(crate) mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};

pub(crate) use instance::{LoadedPlugin, Source};
pub(crate) use runtime::Runtime;
use store::{PluginStore, Provenance, SlotState, VersionState};

use crate::config::{Config, FailurePolicy, PluginConfig};
use crate::metrics::HookMetrics;
use crate::tenant::Tenants;

/// A plugin hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Hook {
    Auth,
    Transform,
    Route,
}

impl Hook {
    pub(crate) const ALL: [Hook; 3] = [Hook::Auth, Hook::Transform, Hook::Route];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Hook::Auth => "auth",
            Hook::Transform => "transform",
            Hook::Route => "route",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.as_str() == s)
    }

    fn world(self) -> &'static str {
        match self {
            Hook::Auth => "authenticator",
            Hook::Transform => "transformer",
            Hook::Route => "router",
        }
    }
}

/// Why a plugin could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin engine: {0}")]
    Engine(#[source] Cause),
    /// `reason` spells out the cause chain for the uploader; `source` keeps the cause.
    #[error("invalid plugin: {reason}")]
    Invalid { reason: String, source: Option<Cause> },
    #[error("cannot read plugin {}: {source}", path.display())]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("no {0} plugin to roll back to")]
    NoPrevious(&'static str),
    #[error("no {0} plugin installed")]
    NotInstalled(&'static str),
    #[error("plugin storage: {what}: {source}")]
    Storage { what: String, source: std::io::Error },
    #[error("tenants.{tenant}.plugins.{hook}: {source}")]
    Configured { tenant: String, hook: &'static str, source: Box<PluginError> },
}

/// A lower-level error kept as a plugin error's source.
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync>;

impl PluginError {
    fn invalid(reason: impl Into<String>) -> Self {
        Self::Invalid { reason: reason.into(), source: None }
    }

    /// A wasmtime error that makes a component unusable, with `context` before its causes.
    fn rejected(context: &str, e: wasmtime::Error) -> Self {
        Self::Invalid { reason: format!("{context}{e:#}"), source: Some(e.into()) }
    }

    fn storage(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Storage { what, source }
    }
}

/// Why one plugin call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CallError {
    #[error("plugin is disabled after repeated failures")]
    Disabled,
    #[error("plugin exceeded its deadline")]
    Deadline,
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin could not be instantiated: {0}")]
    Instantiate(String),
}

/// A hook slot as the admin API shows it.
pub(crate) struct HookStatus {
    pub hook: Hook,
    pub active: Option<Arc<LoadedPlugin>>,
    /// Earlier versions, newest last (rollback takes the last).
    pub history: Vec<Arc<LoadedPlugin>>,
}

/// A tenant's hook: the active version and the ones before it, newest last.
#[derive(Default)]
struct Slot {
    active: Option<Arc<LoadedPlugin>>,
    history: Vec<Arc<LoadedPlugin>>,
    metrics: Arc<HookMetrics>,
    /// Changed through the admin API, so its state is stored and wins over config.toml.
    persisted: bool,
}

/// Every tenant's plugins.
pub(crate) struct Plugins {
    runtime: Arc<Runtime>,
    /// Hook slots by (tenant id, hook). Readers clone the active `Arc` and drop the lock
    /// before calling, so a swap never waits for a call and in-flight calls finish on the
    /// version they started with.
    slots: RwLock<HashMap<(Arc<str>, Hook), Slot>>,
    /// Where uploads are kept across restarts; `None` without `server.data_dir`.
    store: Option<PluginStore>,
    /// Serialises state-file writes so the newest state is the one left on disk.
    save: Mutex<()>,
}

impl Plugins {
    /// Creates the runtime, loads the plugins named in config.toml, then restores the
    /// slots changed through the admin API from `server.data_dir`.
    pub(crate) fn from_config(config: &Config, tenants: &Tenants) -> Result<Self, PluginError> {
        let store = match &config.server.data_dir {
            Some(dir) => Some(
                PluginStore::open(&config.base_dir.join(dir))
                    .map_err(PluginError::storage(dir.display().to_string()))?,
            ),
            None => None,
        };
        let plugins = Self {
            runtime: Runtime::new(config.plugins.clone())?,
            slots: RwLock::default(),
            store,
            save: Mutex::default(),
        };
        for tenant in tenants.all().into_iter() {
            let p = &tenant.config.plugins;
            for (hook, pc) in [(Hook::Auth, &p.auth), (Hook::Transform, &p.transform), (Hook::Route, &p.route)] {
                let Some(pc) = pc else { continue };
                plugins.install_from_config(&tenant.id, hook, pc, &config.base_dir).map_err(|e| {
                    PluginError::Configured { tenant: tenant.id.to_string(), hook: hook.as_str(), source: Box::new(e) }
                })?;
            }
        }
        plugins.restore(tenants)?;
        Ok(plugins)
    }

    fn restore(&self, tenants: &Tenants) -> Result<(), PluginError> {
        let Some(store) = &self.store else { return Ok(()) };
        let states = store.load_state().map_err(PluginError::storage("reading plugin state"))?;
        for state in states {
            let Some(tenant) = tenants.get(&state.tenant) else {
                tracing::warn!(tenant = state.tenant, "stored plugins of a tenant no longer configured are ignored");
                continue;
            };
            let load = |v: &VersionState| {
                let what = format!("stored plugin {} of tenant {}", v.hash, state.tenant);
                let wasm = store.load_blob(&v.hash).map_err(PluginError::storage(what))?;
                self.load_version(&tenant.id, state.hook, &wasm, v.provenance.clone())
            };
            let active = state.active.as_ref().map(load).transpose()?;
            let history = state.history.iter().map(load).collect::<Result<Vec<_>, _>>()?;
            let mut slots = self.slots.write().expect("plugin slots lock");
            let slot = slots.entry((tenant.id.clone(), state.hook)).or_default();
            slot.active = active;
            slot.history = history;
            slot.persisted = true;
        }
        Ok(())
    }

    /// Stores the state of every slot changed through the admin API.
    fn persist(&self) -> Result<(), PluginError> {
        let Some(store) = &self.store else { return Ok(()) };
        let _order = self.save.lock().expect("plugin save lock");
        let states: Vec<SlotState> = {
            let slots = self.slots.read().expect("plugin slots lock");
            let mut states: Vec<_> = slots
                .iter()
                .filter(|(_, s)| s.persisted)
                .map(|((tenant, hook), s)| SlotState {
                    tenant: tenant.to_string(),
                    hook: *hook,
                    active: s.active.as_deref().map(LoadedPlugin::version_state),
                    history: s.history.iter().map(|p| p.version_state()).collect(),
                })
                .collect();
            states.sort_by(|a, b| (&a.tenant, a.hook).cmp(&(&b.tenant, b.hook)));
            states
        };
        store.save_state(states).map_err(PluginError::storage("writing plugin state"))
    }

    fn install_from_config(
        &self,
        tenant: &Arc<str>,
        hook: Hook,
        pc: &PluginConfig,
        base: &std::path::Path,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let path = base.join(&pc.path);
        let wasm = std::fs::read(&path).map_err(|source| PluginError::Read { path: path.clone(), source })?;
        let on_failure = pc.on_failure.unwrap_or_default();
        self.install(tenant, hook, &wasm, pc.config.clone(), on_failure, Source::Config)
    }

    /// Validates `wasm` for `hook` and makes it the tenant's active version; the previous
    /// one is kept for rollback. In-flight calls finish on the version they started with.
    pub(crate) fn install(
        &self,
        tenant: &Arc<str>,
        hook: Hook,
        wasm: &[u8],
        config: BTreeMap<String, String>,
        on_failure: FailurePolicy,
        source: Source,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let installed_at = crate::clock::now_millis() / 1000;
        let plugin = self.load_version(tenant, hook, wasm, Provenance { config, on_failure, installed_at, source })?;
        let mut slots = self.slots.write().expect("plugin slots lock");
        let slot = slots.entry((tenant.clone(), hook)).or_default();
        if let Some(old) = slot.active.replace(plugin.clone()) {
            slot.history.push(old);
        }
        slot.metrics.disabled.store(0, Relaxed);
        if source == Source::Upload {
            slot.persisted = true;
        }
        drop(slots);
        tracing::info!(tenant = &**tenant, hook = hook.as_str(), hash = %plugin.compiled.hash, "plugin installed");
        Ok(plugin)
    }

    /// Installs an uploaded plugin and stores it so it survives restarts.
    pub(crate) fn upload(
        &self,
        tenant: &Arc<str>,
        hook: Hook,
        wasm: &[u8],
        config: BTreeMap<String, String>,
        on_failure: FailurePolicy,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let plugin = self.install(tenant, hook, wasm, config, on_failure, Source::Upload)?;
        self.persist()?;
        Ok(plugin)
    }

    /// Compiles and checks one version without activating it; keeps its bytes in the store.
    fn load_version(
        &self,
        tenant: &Arc<str>,
        hook: Hook,
        wasm: &[u8],
        provenance: Provenance,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let compiled = self.runtime.compile(wasm)?;
        if !compiled.exports(hook) {
            return Err(PluginError::invalid(format!(
                "the component does not implement the `{}` world (export `notify:plugin/{}@0.1.0`)",
                hook.world(),
                hook.as_str()
            )));
        }
        if let Some(store) = &self.store {
            store.save_blob(&compiled.hash, wasm).map_err(PluginError::storage("saving the upload"))?;
        }
        let plugin = LoadedPlugin::new(
            self.runtime.clone(),
            tenant.clone(),
            hook,
            compiled,
            provenance,
            self.metrics(tenant, hook),
        )
        .map_err(|e| PluginError::Invalid { reason: e.to_string(), source: Some(Box::new(e)) })?;
        Ok(Arc::new(plugin))
    }

    /// Makes the previous version active again.
    pub(crate) fn rollback(&self, tenant: &Arc<str>, hook: Hook) -> Result<Arc<LoadedPlugin>, PluginError> {
        let mut slots = self.slots.write().expect("plugin slots lock");
        let slot = slots.get_mut(&(tenant.clone(), hook)).ok_or(PluginError::NoPrevious(hook.as_str()))?;
        let previous = slot.history.pop().ok_or(PluginError::NoPrevious(hook.as_str()))?;
        slot.active = Some(previous.clone());
        slot.metrics.disabled.store(u64::from(previous.is_disabled()), Relaxed);
        slot.persisted = true;
        drop(slots);
        self.persist()?;
        Ok(previous)
    }

    /// Removes the active version (the hook is off afterwards; rollback restores it).
    pub(crate) fn remove(&self, tenant: &Arc<str>, hook: Hook) -> Result<(), PluginError> {
        let mut slots = self.slots.write().expect("plugin slots lock");
        let slot = slots.get_mut(&(tenant.clone(), hook)).ok_or(PluginError::NotInstalled(hook.as_str()))?;
        let old = slot.active.take().ok_or(PluginError::NotInstalled(hook.as_str()))?;
        slot.history.push(old);
        slot.metrics.disabled.store(0, Relaxed);
        slot.persisted = true;
        drop(slots);
        self.persist()
    }

    /// The active version of a tenant's hook.
    pub(crate) fn get(&self, tenant: &Arc<str>, hook: Hook) -> Option<Arc<LoadedPlugin>> {
        let slots = self.slots.read().expect("plugin slots lock");
        slots.get(&(tenant.clone(), hook)).and_then(|s| s.active.clone())
    }

    /// Active version and history of each hook of `tenant`.
    pub(crate) fn list(&self, tenant: &Arc<str>) -> Vec<HookStatus> {
        let slots = self.slots.read().expect("plugin slots lock");
        Hook::ALL
            .into_iter()
            .filter_map(|hook| {
                let s = slots.get(&(tenant.clone(), hook))?;
                Some(HookStatus { hook, active: s.active.clone(), history: s.history.clone() })
            })
            .collect()
    }

    fn metrics(&self, tenant: &Arc<str>, hook: Hook) -> Arc<HookMetrics> {
        let mut slots = self.slots.write().expect("plugin slots lock");
        slots.entry((tenant.clone(), hook)).or_default().metrics.clone()
    }

    /// Every hook's metrics, for `/metrics`.
    pub(crate) fn all_metrics(&self) -> Vec<(Arc<str>, &'static str, Arc<HookMetrics>)> {
        let slots = self.slots.read().expect("plugin slots lock");
        let mut all: Vec<_> = slots.iter().map(|((t, h), s)| ((t.clone(), *h), s.metrics.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.into_iter().map(|((t, h), m)| (t, h.as_str(), m)).collect()
    }
}
