//! Per-tenant WebAssembly plugins: `authenticate`, `transform` and `route` hooks run in
//! wasmtime sandboxes (see docs/PLUGINS.md).
//!
//! - `bindings`: the single `bindgen!` and the store state (host interface, empty WASI).
//! - `compat`: hooks of components built against an earlier WIT version, called through the
//!   current types.
//! - `push`: an event's push as plugins see it.
//! - `budget`: a call's CPU-time budget, measured per poll.
//! - `runtime`: engine (pooling allocator, epoch deadlines), linker, compile cache.
//! - `artifacts`: compiled components kept on disk for versions that do not run.
//! - `instance`: one loaded plugin version with warm instances and a circuit breaker.
//! - `memory`: an instance's caps, and whether its memory has grown near them.
//! - `quota`: a tenant's deadlines and instance memory cap (the node's, with its overrides).
//! - `version`: what the control plane keeps of a version and of a changed hook slot.
//! - this module: the hook slots of every tenant on this node, made to match the control-plane
//!   state; the calls themselves are in `hooks`, run in the calling task.

mod artifacts;
pub(crate) mod bindings;
mod budget;
mod compat;
pub(crate) mod hooks;
pub(crate) mod instance;
mod memory;
mod push;
mod quota;
pub(crate) mod runtime;
pub(crate) mod version;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};

pub(crate) use instance::{LoadedPlugin, Source};
use runtime::Compiled;
pub(crate) use runtime::{BreakerListener, BreakerTurn, Runtime};
pub(crate) use version::{Provenance, SlotSpec, TenantSlots, VersionState};

use crate::config::{Config, FailurePolicy, PluginConfig};
pub(crate) use crate::hook::Hook;
use crate::metrics::HookMetrics;
use crate::tenant::Tenants;
use quota::PluginQuota;

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
    #[error("the bytes of plugin {0} are not in the control-plane store")]
    Missing(String),
    #[error("cannot keep compiled plugins under {}: {source}", dir.display())]
    Artifacts { dir: std::path::PathBuf, source: std::io::Error },
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
}

/// Why one plugin call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CallError {
    #[error("plugin is disabled after repeated failures")]
    Disabled,
    #[error("every one of the tenant's plugin call slots (limits.plugin_instances) stayed in use")]
    Busy,
    #[error("plugin exceeded its deadline")]
    Deadline,
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin could not be instantiated: {0}")]
    Instantiate(String),
    #[error("plugin returned {0}")]
    Unusable(String),
}

/// A hook slot as the admin API shows it.
pub(crate) struct HookStatus {
    pub hook: Hook,
    pub active: Option<Arc<LoadedPlugin>>,
    /// Earlier versions, newest last (rollback takes the last); the configured plugin comes
    /// first once the admin API changed the slot.
    pub history: Vec<VersionState>,
}

/// What one node runs for one hook of a tenant, as other nodes show it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub(crate) struct Running {
    pub hook: Hook,
    pub hash: String,
    pub source: Source,
    pub installed_at: u64,
    pub disabled: bool,
    pub calls: u64,
    pub failures: u64,
    pub consecutive_failures: u32,
}

impl Running {
    fn of(hook: Hook, p: &LoadedPlugin) -> Self {
        Self {
            hook,
            hash: p.compiled.hash.clone(),
            source: p.source,
            installed_at: p.installed_at,
            disabled: p.is_disabled(),
            calls: p.calls.load(Relaxed),
            failures: p.failures.load(Relaxed),
            consecutive_failures: p.consecutive_failures(),
        }
    }
}

/// A tenant and one of its hooks.
type SlotKey = (Arc<str>, Hook);

/// A tenant's hook on this node.
#[derive(Default)]
struct Slot {
    /// Named in config.toml; active unless the admin API changed the slot.
    configured: Option<Arc<LoadedPlugin>>,
    /// The slot as the control-plane state has it, loaded on this node.
    stored: Option<Stored>,
    metrics: Arc<HookMetrics>,
}

/// A slot changed through the admin API, its active version loaded. Its history is not: a
/// JavaScript or Python version takes 70–170 MB compiled, so rollback targets stay on disk
/// (`artifacts`) until a rollback loads one.
struct Stored {
    spec: SlotSpec,
    active: Option<Arc<LoadedPlugin>>,
}

impl Slot {
    fn active(&self) -> Option<&Arc<LoadedPlugin>> {
        match &self.stored {
            Some(stored) => stored.active.as_ref(),
            None => self.configured.as_ref(),
        }
    }

    fn loaded(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.configured.iter().chain(self.stored.iter().flat_map(|s| &s.active))
    }

    /// The hashes of every version the slot names, loaded or not.
    fn named(&self) -> impl Iterator<Item = &str> {
        let stored = self.stored.iter().flat_map(|s| s.spec.versions()).map(|v| v.hash.as_str());
        self.loaded().map(|p| p.compiled.hash.as_str()).chain(stored)
    }
}

/// Every tenant's plugins on this node.
pub(crate) struct Plugins {
    runtime: Arc<Runtime>,
    /// Hook slots by (tenant id, hook). Readers clone the active `Arc` and drop the lock
    /// before calling, so a swap never waits for a call and in-flight calls finish on the
    /// version they started with.
    slots: RwLock<HashMap<SlotKey, Slot>>,
    /// Serialises `sync` (held across compiling and instantiating), so two states are never
    /// applied over each other.
    syncing: tokio::sync::Mutex<()>,
    /// Each tenant's plugin limits, shared with its loaded versions; set from the tenant
    /// registry by [`Plugins::limit`]. Locked only to look up or insert.
    quotas: RwLock<HashMap<Arc<str>, Arc<PluginQuota>>>,
}

impl Plugins {
    /// Creates the runtime and loads the plugins named in config.toml.
    pub(crate) async fn from_config(config: &Config, tenants: &Tenants) -> Result<Self, PluginError> {
        let plugins = Self {
            runtime: Runtime::new(config.plugins.clone())?,
            slots: RwLock::default(),
            syncing: tokio::sync::Mutex::default(),
            quotas: RwLock::default(),
        };
        plugins.limit(tenants);
        for tenant in tenants.all() {
            for (&hook, pc) in &tenant.config.plugins {
                let plugin = plugins.load_configured(&tenant.id, hook, pc, &config.base_dir).await.map_err(|e| {
                    PluginError::Configured { tenant: tenant.id.to_string(), hook: hook.as_str(), source: Box::new(e) }
                })?;
                let mut slots = plugins.slots.write().expect("plugin slots lock");
                slots.entry((tenant.id.clone(), hook)).or_default().configured = Some(plugin);
            }
        }
        Ok(plugins)
    }

    async fn load_configured(
        &self,
        tenant: &Arc<str>,
        hook: Hook,
        pc: &PluginConfig,
        base: &std::path::Path,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let path = base.join(&pc.path);
        let wasm = std::fs::read(&path).map_err(|source| PluginError::Read { path: path.clone(), source })?;
        let provenance = Provenance {
            config: pc.config.clone(),
            on_failure: pc.on_failure.unwrap_or_default(),
            installed_at: crate::clock::now_millis() / 1000,
            source: Source::Config,
        };
        self.prepare(tenant, hook, wasm.into(), provenance).await
    }

    /// Compiles and checks `wasm` as a version of `hook` without activating it.
    pub(crate) async fn prepare(
        &self,
        tenant: &Arc<str>,
        hook: Hook,
        wasm: bytes::Bytes,
        provenance: Provenance,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let compiled = self.compile(wasm).await?;
        self.load(tenant, hook, compiled, provenance).await
    }

    /// A component compiled before, from memory or from disk (on a blocking thread).
    async fn restore(&self, hash: &str) -> Option<Arc<Compiled>> {
        if let Some(hit) = self.runtime.cached(hash) {
            return Some(hit);
        }
        let (runtime, hash) = (self.runtime.clone(), hash.to_owned());
        tokio::task::spawn_blocking(move || runtime.restore(&hash)).await.ok().flatten()
    }

    /// Compiles on a blocking thread: compilation takes a while.
    async fn compile(&self, wasm: bytes::Bytes) -> Result<Arc<Compiled>, PluginError> {
        let runtime = self.runtime.clone();
        match tokio::task::spawn_blocking(move || runtime.compile(wasm)).await {
            Ok(compiled) => compiled,
            Err(e) => Err(PluginError::Engine(e.into())),
        }
    }

    async fn load(
        &self,
        tenant: &Arc<str>,
        hook: Hook,
        compiled: Arc<Compiled>,
        provenance: Provenance,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        if !compiled.exports(hook) {
            return Err(PluginError::invalid(format!(
                "the component does not implement the `{}` world (export `notify:plugin/{}@0.2.0` or `@0.1.0`)",
                hook.world(),
                hook.as_str()
            )));
        }
        let (metrics, quota) = (self.metrics(tenant, hook), self.quota(tenant));
        let plugin =
            LoadedPlugin::new(self.runtime.clone(), tenant.clone(), hook, compiled, provenance, metrics, quota)
                .await
                .map_err(|e| PluginError::Invalid { reason: e.to_string(), source: Some(Box::new(e)) })?;
        Ok(Arc::new(plugin))
    }

    /// Sets who hears of breakers opening and of disabled versions replaced.
    pub(crate) fn on_breaker(&self, listener: BreakerListener) {
        self.runtime.on_breaker(listener);
    }

    /// Whether config.toml names a plugin for the tenant's hook.
    pub(crate) fn configured(&self, tenant: &Arc<str>, hook: Hook) -> bool {
        let slots = self.slots.read().expect("plugin slots lock");
        slots.get(&(tenant.clone(), hook)).is_some_and(|s| s.configured.is_some())
    }

    /// The hashes of the active versions `state` names that this node cannot load without
    /// their bytes: those must come from the control-plane store before `sync`.
    pub(crate) fn missing(&self, state: &BTreeMap<String, TenantSlots>) -> Vec<String> {
        let hashes: BTreeSet<&String> = state
            .values()
            .flat_map(|slots| slots.values())
            .flat_map(|slot| &slot.active)
            .map(|v| &v.hash)
            .filter(|hash| !self.runtime.available(hash))
            .collect();
        hashes.into_iter().cloned().collect()
    }

    /// Makes every slot match `state` (the slots changed through the admin API, by tenant).
    /// Versions that did not change stay as they are (warm instances, counters, breaker);
    /// new ones are compiled from `blobs` unless compiled before; a slot the state no longer
    /// names falls back to the configured plugin; the slots of tenants gone from `tenants`
    /// are forgotten. A slot whose versions cannot be loaded keeps what it runs, and its
    /// error is returned.
    pub(crate) async fn sync(
        &self,
        tenants: &Tenants,
        state: &BTreeMap<String, TenantSlots>,
        blobs: &HashMap<String, bytes::Bytes>,
    ) -> Vec<PluginError> {
        let _one = self.syncing.lock().await;
        self.limit(tenants);
        let applied = self.applied();
        let wanted = state.iter().flat_map(|(t, slots)| slots.keys().map(move |h| (t.as_str(), *h)));
        let keys: BTreeSet<(&str, Hook)> = wanted.chain(applied.keys().map(|(t, h)| (&**t, *h))).collect();
        let mut errors = Vec::new();
        let mut updates = Vec::new();
        for (tenant, hook) in keys {
            let Some(tenant) = tenants.get(tenant) else { continue };
            let spec = state.get(&*tenant.id).and_then(|slots| slots.get(&hook));
            let current = applied.get(&(tenant.id.clone(), hook));
            if spec == current.map(|(spec, _)| spec) {
                continue;
            }
            let loaded = current.map_or(&[][..], |(_, loaded)| loaded);
            let stored = match spec {
                Some(spec) => self.load_slot(&tenant.id, hook, spec, loaded, blobs).await.map(Some),
                None => Ok(None),
            };
            match stored {
                Ok(stored) => updates.push(((tenant.id.clone(), hook), stored)),
                Err(e) => errors.push(e),
            }
        }
        self.commit(tenants, updates);
        // The versions replaced go with the last of their clones, here; a JavaScript or
        // Python one leaves tens of MB of freed heap behind.
        drop(applied);
        crate::heap::release();
        errors
    }

    /// Every slot changed through the admin API: its spec and the versions loaded for it.
    fn applied(&self) -> HashMap<SlotKey, (SlotSpec, Vec<Arc<LoadedPlugin>>)> {
        let slots = self.slots.read().expect("plugin slots lock");
        let stored = slots.iter().filter_map(|(key, slot)| {
            let stored = slot.stored.as_ref()?;
            Some((key.clone(), (stored.spec.clone(), slot.loaded().cloned().collect())))
        });
        stored.collect()
    }

    /// Swaps the changed slots in, forgets tenants gone from the registry, and drops
    /// compiled components nothing uses.
    fn commit(&self, tenants: &Tenants, updates: Vec<(SlotKey, Option<Stored>)>) {
        let mut slots = self.slots.write().expect("plugin slots lock");
        for ((tenant, hook), stored) in updates {
            let slot = slots.entry((tenant.clone(), hook)).or_default();
            let was_disabled = slot.active().is_some_and(|p| p.is_disabled());
            slot.stored = stored;
            let active = slot.active();
            let disabled = active.is_some_and(|p| p.is_disabled());
            slot.metrics.disabled.store(u64::from(disabled), Relaxed);
            let hash = active.map(|p| p.compiled.hash.as_str());
            tracing::info!(tenant = &*tenant, hook = hook.as_str(), hash, "plugin slot changed");
            if was_disabled && !disabled {
                let reason = if hash.is_some() { "another version was activated" } else { "the plugin was removed" };
                self.runtime.breaker_turned(BreakerTurn { tenant: &tenant, hook, hash, disabled: false, reason });
            }
        }
        slots.retain(|(tenant, _), _| tenants.get(tenant).is_some());
        let in_use: HashSet<&str> = slots.values().flat_map(Slot::loaded).map(|p| p.compiled.hash.as_str()).collect();
        let named: HashSet<&str> = slots.values().flat_map(Slot::named).collect();
        self.runtime.retain(&in_use, &named);
    }

    /// Loads the active version `spec` names, reusing one of `loaded`.
    async fn load_slot(
        &self,
        tenant: &Arc<str>,
        hook: Hook,
        spec: &SlotSpec,
        loaded: &[Arc<LoadedPlugin>],
        blobs: &HashMap<String, bytes::Bytes>,
    ) -> Result<Stored, PluginError> {
        let active = match &spec.active {
            Some(v) => Some(self.load_version(tenant, hook, v, loaded, blobs).await?),
            None => None,
        };
        Ok(Stored { spec: spec.clone(), active })
    }

    /// The version `v` of a slot: one of `loaded` if it is there, else loaded afresh.
    async fn load_version(
        &self,
        tenant: &Arc<str>,
        hook: Hook,
        v: &VersionState,
        loaded: &[Arc<LoadedPlugin>],
        blobs: &HashMap<String, bytes::Bytes>,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        if let Some(p) = loaded.iter().find(|p| p.version_state() == *v) {
            return Ok(p.clone());
        }
        let compiled = match self.restore(&v.hash).await {
            Some(compiled) => compiled,
            None => {
                let wasm = blobs.get(&v.hash).ok_or_else(|| PluginError::Missing(v.hash.clone()))?;
                self.compile(wasm.clone()).await?
            }
        };
        if compiled.hash != v.hash {
            return Err(PluginError::invalid(format!("the bytes stored as plugin {} have another hash", v.hash)));
        }
        self.load(tenant, hook, compiled, v.provenance.clone()).await
    }

    /// The bytes of a component this node compiled, while a slot names it.
    pub(crate) fn bytes(&self, hash: &str) -> Option<bytes::Bytes> {
        self.runtime.wasm(hash)
    }

    /// The active version of a tenant's hook.
    pub(crate) fn get(&self, tenant: &Arc<str>, hook: Hook) -> Option<Arc<LoadedPlugin>> {
        let slots = self.slots.read().expect("plugin slots lock");
        slots.get(&(tenant.clone(), hook)).and_then(|s| s.active().cloned())
    }

    /// Active version and history of each hook of `tenant`.
    pub(crate) fn list(&self, tenant: &Arc<str>) -> Vec<HookStatus> {
        let slots = self.slots.read().expect("plugin slots lock");
        Hook::ALL
            .into_iter()
            .filter_map(|hook| {
                let s = slots.get(&(tenant.clone(), hook))?;
                let history = match &s.stored {
                    Some(stored) => {
                        let configured = s.configured.iter().map(|p| p.version_state());
                        configured.chain(stored.spec.history.iter().cloned()).collect()
                    }
                    None => Vec::new(),
                };
                (s.configured.is_some() || s.stored.is_some()).then(|| HookStatus {
                    hook,
                    active: s.active().cloned(),
                    history,
                })
            })
            .collect()
    }

    /// What this node runs, by tenant: the active version of every hook that has one.
    pub(crate) fn running(&self) -> BTreeMap<Arc<str>, Vec<Running>> {
        let slots = self.slots.read().expect("plugin slots lock");
        let mut running: BTreeMap<Arc<str>, Vec<Running>> = BTreeMap::new();
        for ((tenant, hook), slot) in slots.iter() {
            let Some(p) = slot.active() else { continue };
            running.entry(tenant.clone()).or_default().push(Running::of(*hook, p));
        }
        running.values_mut().for_each(|list| list.sort_by_key(|r| r.hook));
        running
    }

    /// What this node runs for `tenant`, by hook.
    pub(crate) fn running_of(&self, tenant: &Arc<str>) -> Vec<Running> {
        let slots = self.slots.read().expect("plugin slots lock");
        let active = |hook| slots.get(&(tenant.clone(), hook)).and_then(Slot::active).map(|p| Running::of(hook, p));
        Hook::ALL.into_iter().filter_map(active).collect()
    }

    /// Gives every tenant of `tenants` its plugin limits (changed in place for the versions
    /// loaded), and forgets those of tenants gone.
    fn limit(&self, tenants: &Tenants) {
        let node = &self.runtime.limits;
        let mut quotas = self.quotas.write().expect("plugin quotas lock");
        let all = tenants.all();
        for t in &all {
            let limits = node.with(&t.config.limits);
            match quotas.get(&t.id) {
                Some(quota) => quota.set(&limits),
                None => drop(quotas.insert(t.id.clone(), Arc::new(PluginQuota::new(&limits)))),
            }
        }
        let present: HashSet<&str> = all.iter().map(|t| &*t.id).collect();
        quotas.retain(|id, _| present.contains(&**id));
    }

    /// The plugin limits of `tenant` (the node's until [`Self::limit`] has seen it).
    fn quota(&self, tenant: &Arc<str>) -> Arc<PluginQuota> {
        let mut quotas = self.quotas.write().expect("plugin quotas lock");
        quotas.entry(tenant.clone()).or_insert_with(|| Arc::new(PluginQuota::new(&self.runtime.limits))).clone()
    }

    fn metrics(&self, tenant: &Arc<str>, hook: Hook) -> Arc<HookMetrics> {
        let mut slots = self.slots.write().expect("plugin slots lock");
        slots.entry((tenant.clone(), hook)).or_default().metrics.clone()
    }

    /// What the runtime holds, for `/metrics`.
    pub(crate) fn components(&self) -> crate::metrics::PluginComponents {
        self.runtime.components()
    }

    /// Every hook's metrics, for `/metrics`.
    pub(crate) fn all_metrics(&self) -> Vec<(Arc<str>, &'static str, Arc<HookMetrics>)> {
        let slots = self.slots.read().expect("plugin slots lock");
        let mut all: Vec<_> = slots.iter().map(|((t, h), s)| ((t.clone(), *h), s.metrics.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.into_iter().map(|((t, h), m)| (t, h.as_str(), m)).collect()
    }
}
