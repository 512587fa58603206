//! The wasmtime engine shared by every plugin: pooling allocator, epoch interruption, a
//! linker that grants only the `host` interface and a WASI with nothing in it, and a
//! compile cache keyed by the component's sha256: in memory for the versions that run, on
//! disk (`artifacts`) for every version the control plane still names.
//!
//! Guest code runs on fibers inside the async tasks that call it (no hand-off to another
//! thread), so the WASI imports are the async ones: a guest waiting in one waits on the
//! async runtime, not on a thread.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::artifacts::Artifacts;
use super::bindings::{StoreState, auth, route, transform, v0_1};
use super::budget::TICK;
use super::compat::Versioned;
use super::{Hook, PluginError};
use crate::config::PluginLimits;
use crate::tenant::hex;

/// Ticks the ticker goes on for after the last call ended, so that calls arriving one after
/// another do not each have to wake it.
const LINGER_TICKS: u32 = 100;

/// How often a parked epoch ticker looks whether its runtime is gone.
const PARKED_CHECK: Duration = Duration::from_secs(1);

/// A compiled, linked component: ready to instantiate for any hook it exports.
pub(crate) struct Compiled {
    pub hash: String,
    /// The component's bytes, to put back in a control-plane store that lost them.
    pub wasm: bytes::Bytes,
    pub pre: InstancePre<StoreState>,
    pub exports: Exports,
}

impl Compiled {
    pub(crate) fn exports(&self, hook: Hook) -> bool {
        self.exports.has(hook)
    }
}

macro_rules! compiled_exports {
    ($($hook:ident: $name:literal, world $world:literal, exports $exports:ident;)*) => {
        /// Where each hook's exports are in a compiled component (`None`: not exported).
        pub(crate) struct Exports {
            $(pub(crate) $exports: Option<Versioned<$exports::GuestIndices, v0_1::$exports::GuestIndices>>,)*
        }

        impl Exports {
            fn of(pre: &InstancePre<StoreState>) -> Self {
                Self {
                    $($exports: $exports::GuestIndices::new(pre)
                        .map(Versioned::Current)
                        .or_else(|_| v0_1::$exports::GuestIndices::new(pre).map(Versioned::V0_1))
                        .ok(),)*
                }
            }

            fn has(&self, hook: Hook) -> bool {
                match hook {
                    $(Hook::$hook => self.$exports.is_some(),)*
                }
            }
        }
    };
}

crate::hook::for_each_hook!(compiled_exports);

/// Engine, linker and compile cache.
pub(crate) struct Runtime {
    pub engine: Engine,
    linker: Linker<StoreState>,
    pub limits: PluginLimits,
    /// Compiled components by sha256, so re-uploads skip compilation: those a loaded
    /// version uses. Held only while looking up or inserting, never across a compilation.
    cache: Mutex<HashMap<String, Arc<Compiled>>>,
    /// Every compiled component a slot still names, on disk, so a rollback skips it too.
    artifacts: Artifacts,
    compiled: AtomicU64,
    restored: AtomicU64,
    /// Shared with the epoch ticker.
    clock: Arc<Clock>,
    /// The epoch ticker.
    ticker: Thread,
    /// Told when a breaker opens, or a slot whose version was disabled runs an enabled one;
    /// set once by the node.
    breaker_listener: OnceLock<BreakerListener>,
}

/// Who hears of breakers turning.
pub(crate) type BreakerListener = Box<dyn Fn(BreakerTurn<'_>) + Send + Sync>;

/// A plugin version's breaker opened (`disabled`), or its tenant's hook runs an enabled
/// version again (a new version or a rollback replaced the disabled one).
#[derive(Debug)]
pub(crate) struct BreakerTurn<'a> {
    pub tenant: &'a str,
    pub hook: Hook,
    /// The version (sha256) disabled, or now active.
    pub hash: Option<&'a str>,
    pub disabled: bool,
    /// Why: the last failure, or what replaced the disabled version.
    pub reason: &'a str,
}

impl Runtime {
    /// Sets who hears of breakers turning; a second listener is ignored.
    pub(crate) fn on_breaker(&self, listener: BreakerListener) {
        let _ = self.breaker_listener.set(listener);
    }

    pub(crate) fn breaker_turned(&self, turn: BreakerTurn<'_>) {
        if let Some(listener) = self.breaker_listener.get() {
            listener(turn);
        }
    }
}

/// Keeps the epoch clock ticking while guest code may run (see [`Runtime::ticking`]).
pub(crate) struct Ticking<'a>(&'a Runtime);

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.clock.running.fetch_sub(1, SeqCst);
    }
}

impl Runtime {
    pub(crate) fn new(limits: PluginLimits) -> Result<Arc<Self>, PluginError> {
        let parent = limits.artifacts_dir.clone().unwrap_or_else(std::env::temp_dir);
        let artifacts = Artifacts::create(&parent).map_err(|e| PluginError::Artifacts { dir: parent, source: e })?;
        let mut pool = PoolingAllocationConfig::default();
        let instances = limits.max_instances;
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .max_memory_size(limits.memory_limit_bytes)
            // Every call and instantiation runs on a fiber stack and holds an instance.
            .total_stacks(instances);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .memory_reservation(limits.memory_limit_bytes as u64)
            .memory_reservation_for_growth(0)
            .memory_guard_size(64 * 1024)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine_error = |e: wasmtime::Error| PluginError::Engine(e.into());
        let engine = Engine::new(&config).map_err(engine_error)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_error)?;
        super::bindings::PluginHost::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(engine_error)?;

        let clock = Arc::new(Clock::default());
        let ticker = spawn_ticker(&engine, clock.clone())?;
        let breaker_listener = OnceLock::new();
        let cache = Mutex::default();
        let (compiled, restored) = (AtomicU64::new(0), AtomicU64::new(0));
        Ok(Arc::new(Self {
            engine,
            linker,
            limits,
            cache,
            artifacts,
            compiled,
            restored,
            clock,
            ticker,
            breaker_listener,
        }))
    }

    /// Makes the epoch clock, which every call deadline is measured against, tick until the
    /// guard is dropped. Hold it while guest code runs.
    pub(crate) fn ticking(&self) -> Ticking<'_> {
        self.clock.running.fetch_add(1, SeqCst);
        // Pairs with the ticker's store of `parked` then load of `running`: one of the two
        // sees the other.
        if self.clock.parked.load(SeqCst) {
            self.ticker.unpark();
        }
        Ticking(self)
    }

    /// The compiled component with sha256 `hash`, if this node compiled it before.
    pub(crate) fn cached(&self, hash: &str) -> Option<Arc<Compiled>> {
        self.cache.lock().expect("plugin cache lock").get(hash).cloned()
    }

    /// Whether the component with sha256 `hash` can be loaded without its bytes.
    pub(crate) fn available(&self, hash: &str) -> bool {
        self.cached(hash).is_some() || self.artifacts.has(hash)
    }

    /// The bytes of the component with sha256 `hash`, if this node compiled it and a slot
    /// still names it.
    pub(crate) fn wasm(&self, hash: &str) -> Option<bytes::Bytes> {
        self.cached(hash).map(|c| c.wasm.clone()).or_else(|| self.artifacts.wasm(hash))
    }

    /// Forgets compiled components no loaded version uses (`in_use`), and removes from disk
    /// those no slot names (`named`).
    pub(crate) fn retain(&self, in_use: &HashSet<&str>, named: &HashSet<&str>) {
        self.cache.lock().expect("plugin cache lock").retain(|hash, _| in_use.contains(hash.as_str()));
        self.artifacts.retain(named);
    }

    /// The component with sha256 `hash` as this node compiled it before, from disk: loading
    /// it takes milliseconds where compiling takes up to seconds.
    pub(crate) fn restore(&self, hash: &str) -> Option<Arc<Compiled>> {
        if let Some(hit) = self.cached(hash) {
            return Some(hit);
        }
        let component = self.artifacts.component(&self.engine, hash)?;
        let wasm = self.artifacts.wasm(hash)?;
        let pre = self.linker.instantiate_pre(&component).ok()?;
        self.restored.fetch_add(1, SeqCst);
        Some(self.insert(Compiled { exports: Exports::of(&pre), hash: hash.to_owned(), wasm, pre }))
    }

    pub(crate) fn components(&self) -> crate::metrics::PluginComponents {
        crate::metrics::PluginComponents {
            in_memory: self.cache.lock().expect("plugin cache lock").len(),
            on_disk: self.artifacts.len(),
            compiled: self.compiled.load(SeqCst),
            restored: self.restored.load(SeqCst),
        }
    }

    fn insert(&self, compiled: Compiled) -> Arc<Compiled> {
        let compiled = Arc::new(compiled);
        self.cache.lock().expect("plugin cache lock").insert(compiled.hash.clone(), compiled.clone());
        compiled
    }

    /// Compiles `wasm` (a component; precompiled native code is never accepted), links it,
    /// and finds which hooks it exports.
    pub(crate) fn compile(&self, wasm: bytes::Bytes) -> Result<Arc<Compiled>, PluginError> {
        let hash = hex(&Sha256::digest(&wasm));
        if let Some(hit) = self.cache.lock().expect("plugin cache lock").get(&hash) {
            return Ok(hit.clone());
        }
        if !is_component(&wasm) {
            let reason = "not a WebAssembly component (build with --target wasm32-wasip2)";
            return Err(PluginError::Invalid { reason: reason.into(), source: None });
        }
        let component = Component::new(&self.engine, &wasm);
        crate::heap::release();
        let component = component.map_err(|e| PluginError::rejected("", e))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::rejected("imports something the host does not provide: ", e))?;
        self.compiled.fetch_add(1, SeqCst);
        if let Err(e) = self.artifacts.keep(&hash, &wasm, &component) {
            tracing::warn!(hash, "compiled plugin not kept on disk (a rollback to it compiles it again): {e:#}");
        }
        Ok(self.insert(Compiled { exports: Exports::of(&pre), hash, wasm, pre }))
    }
}

/// Components start with the wasm magic and a version/layer word whose layer is 1.
fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

/// What the epoch ticker shares with the runtime.
#[derive(Default)]
struct Clock {
    /// Plugin calls and instantiations running now. The epoch ticker ticks only while this is
    /// above zero and shortly after: otherwise every node, plugins or not, would wake a
    /// thousand times a second.
    running: AtomicUsize,
    /// Set by the epoch ticker before it parks; a call that starts then unparks it.
    parked: AtomicBool,
    /// Epoch increments so far: how the tests see the clock stand still.
    #[cfg_attr(not(test), allow(dead_code))]
    ticks: AtomicU64,
}

/// The epoch ticker: increments the engine's epoch every [`TICK`] while guest code runs and
/// for [`LINGER_TICKS`] after, parks otherwise. It holds only a weak reference, so it stops
/// when the engine is dropped.
fn spawn_ticker(engine: &Engine, clock: Arc<Clock>) -> Result<Thread, PluginError> {
    let weak = engine.weak();
    let handle = std::thread::Builder::new()
        .name("plugin-epoch".into())
        .spawn(move || {
            let mut quiet = LINGER_TICKS;
            loop {
                quiet = if clock.running.load(SeqCst) > 0 { 0 } else { quiet.saturating_add(1) };
                if quiet > LINGER_TICKS {
                    clock.parked.store(true, SeqCst);
                    if clock.running.load(SeqCst) == 0 {
                        // An unpark after the store above makes this return at once.
                        std::thread::park_timeout(PARKED_CHECK);
                    }
                    clock.parked.store(false, SeqCst);
                    if weak.upgrade().is_none() {
                        break;
                    }
                    continue;
                }
                // The first tick comes a whole TICK after the clock starts, so a call shorter
                // than that, alone, never meets its deadline callback.
                std::thread::sleep(TICK);
                let Some(engine) = weak.upgrade() else { break };
                engine.increment_epoch();
                clock.ticks.fetch_add(1, SeqCst);
            }
        })
        .map_err(|e| PluginError::Engine(e.into()))?;
    Ok(handle.thread().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(what: &str, done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{what} did not happen within 10 s");
    }

    #[test]
    fn the_epoch_clock_ticks_only_while_guest_code_runs() {
        let runtime = Runtime::new(PluginLimits::default()).expect("runtime");
        let ticks = || runtime.clock.ticks.load(SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(ticks(), 0, "an idle runtime's clock stands still");

        let running = runtime.ticking();
        wait_for("ticking", || ticks() >= 5);
        drop(running);
        // It lingers for LINGER_TICKS, then parks.
        wait_for("the clock to stop", || {
            let before = ticks();
            std::thread::sleep(Duration::from_millis(200));
            ticks() == before
        });
        let stopped = ticks();
        std::thread::sleep(Duration::from_millis(300));
        assert!(ticks() <= stopped + 1, "the clock stops once no guest code has run for a while");

        let _running = runtime.ticking();
        wait_for("ticking again", || ticks() >= stopped + 5);
    }
}
