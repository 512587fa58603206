//! The wasmtime engine shared by every plugin: pooling allocator, epoch interruption, a
//! linker that grants only the `host` interface and a WASI with nothing in it, and a
//! compile cache keyed by the component's sha256.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{StoreState, auth, route, transform};
use super::{Hook, PluginError};
use crate::config::PluginLimits;
use crate::tenant::hex;

/// One epoch tick; deadlines are counted in ticks.
const TICK: Duration = Duration::from_millis(1);

/// A compiled, linked component: ready to instantiate for any hook it exports.
pub(crate) struct Compiled {
    pub hash: String,
    /// The component's bytes, to put back in a control-plane store that lost them.
    pub wasm: bytes::Bytes,
    pub pre: InstancePre<StoreState>,
    pub auth: Option<auth::GuestIndices>,
    pub transform: Option<transform::GuestIndices>,
    pub route: Option<route::GuestIndices>,
}

impl Compiled {
    pub(crate) fn exports(&self, hook: Hook) -> bool {
        match hook {
            Hook::Auth => self.auth.is_some(),
            Hook::Transform => self.transform.is_some(),
            Hook::Route => self.route.is_some(),
        }
    }
}

/// Engine, linker and compile cache.
pub(crate) struct Runtime {
    pub engine: Engine,
    linker: Linker<StoreState>,
    pub limits: PluginLimits,
    /// Compiled components by sha256, so re-uploads and rollbacks skip compilation. Held
    /// only while looking up or inserting, never across a compilation.
    cache: Mutex<HashMap<String, Arc<Compiled>>>,
}

impl Runtime {
    pub(crate) fn new(limits: PluginLimits) -> Result<Arc<Self>, PluginError> {
        let mut pool = PoolingAllocationConfig::default();
        let instances = limits.max_instances;
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .max_memory_size(limits.memory_limit_bytes);
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
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_error)?;
        super::bindings::PluginHost::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(engine_error)?;

        // Epoch ticker: the clock every call deadline is measured against. It holds only a
        // weak reference, so it stops when the runtime is dropped.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| PluginError::Engine(e.into()))?;
        Ok(Arc::new(Self { engine, linker, limits, cache: Mutex::default() }))
    }

    /// The compiled component with sha256 `hash`, if this node compiled it before.
    pub(crate) fn cached(&self, hash: &str) -> Option<Arc<Compiled>> {
        self.cache.lock().expect("plugin cache lock").get(hash).cloned()
    }

    /// Forgets compiled components no plugin version uses any more.
    pub(crate) fn retain(&self, in_use: &std::collections::HashSet<&str>) {
        self.cache.lock().expect("plugin cache lock").retain(|hash, _| in_use.contains(hash.as_str()));
    }

    /// Compiles `wasm` (a component; precompiled native code is never accepted), links it,
    /// and finds which hooks it exports.
    pub(crate) fn compile(&self, wasm: &[u8]) -> Result<Arc<Compiled>, PluginError> {
        let hash = hex(&Sha256::digest(wasm));
        if let Some(hit) = self.cache.lock().expect("plugin cache lock").get(&hash) {
            return Ok(hit.clone());
        }
        if !is_component(wasm) {
            let reason = "not a WebAssembly component (build with --target wasm32-wasip2)";
            return Err(PluginError::Invalid { reason: reason.into(), source: None });
        }
        let component = Component::new(&self.engine, wasm).map_err(|e| PluginError::rejected("", e))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::rejected("imports something the host does not provide: ", e))?;
        let compiled = Arc::new(Compiled {
            auth: auth::GuestIndices::new(&pre).ok(),
            transform: transform::GuestIndices::new(&pre).ok(),
            route: route::GuestIndices::new(&pre).ok(),
            hash: hash.clone(),
            wasm: bytes::Bytes::copy_from_slice(wasm),
            pre,
        });
        self.cache.lock().expect("plugin cache lock").insert(hash, compiled.clone());
        Ok(compiled)
    }
}

/// Components start with the wasm magic and a version/layer word whose layer is 1.
fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}
