//! A loaded plugin version: its compiled component bound to one tenant and hook, a small
//! pool of warm instances, deadlines, the memory cap and the circuit breaker.
//!
//! Calls are futures run by the calling task: the guest runs on a fiber and yields to the
//! runtime at each epoch tick once it has run for a tick. An instance is reused until it
//! has served `recycle_after_calls` calls and is discarded after any trap, so a plugin that
//! corrupted its own state never runs again in that instance.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use super::bindings::{StoreState, auth, route, transform, types, v0_1};
use super::budget::TICK;
use super::budget::{Budget, CallClock, CpuMeter, Verdict, bounded};
use super::compat::{self, Versioned};
use super::memory::MemoryCaps;
use super::quota::PluginQuota;
use super::runtime::{BreakerTurn, Compiled, Exports, Runtime};
use super::version::{Provenance, VersionState};
use super::{CallError, FailurePolicy, Hook};
use crate::metrics::HookMetrics;

/// Idle instances kept per plugin version; more concurrent calls instantiate afresh.
const MAX_IDLE: usize = 4;
/// Instantiation (copying data segments, running start functions) gets ten times the call
/// deadline, and at least this much; so does an instance's first call (see [`LoadedPlugin::budget`]).
const SETUP_BUDGET_MIN: Duration = Duration::from_millis(100);

macro_rules! guests {
    ($($hook:ident: $name:literal, world $world:literal, exports $exports:ident;)*) => {
        /// A warm instance's exports: those of its plugin's hook.
        enum Guest {
            $($hook(Versioned<$exports::Guest, v0_1::$exports::Guest>),)*
        }

        impl Guest {
            /// `hook`'s exports in `instance` (`None`: the component does not export it).
            fn load(
                exports: &Exports,
                hook: Hook,
                store: &mut Store<StoreState>,
                instance: &wasmtime::component::Instance,
            ) -> Option<Result<Self, wasmtime::Error>> {
                match hook {
                    $(Hook::$hook => exports.$exports.as_ref().map(|i| match i {
                        Versioned::Current(i) => i.load(&mut *store, instance).map(Versioned::Current),
                        Versioned::V0_1(i) => i.load(&mut *store, instance).map(Versioned::V0_1),
                    }.map(Guest::$hook)),)*
                }
            }
        }
    };
}

crate::hook::for_each_hook!(guests);

struct Warm {
    store: Store<StoreState>,
    /// The store's call meter, reachable while a call borrows the store.
    meter: Arc<CpuMeter>,
    guest: Guest,
    calls: u32,
}

/// Where a plugin version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = PluginSource)]
pub(crate) enum Source {
    Config,
    Upload,
}

/// One plugin version active (or kept for rollback) in a tenant's hook slot.
pub(crate) struct LoadedPlugin {
    pub hook: Hook,
    pub tenant: Arc<str>,
    pub compiled: Arc<Compiled>,
    pub config: Arc<BTreeMap<String, String>>,
    pub on_failure: FailurePolicy,
    /// Unix seconds when this version was installed.
    pub installed_at: u64,
    pub source: Source,
    runtime: Arc<Runtime>,
    label: Arc<str>,
    /// Warm instances; locked only to pop or push one, never during a call.
    idle: Mutex<Vec<Warm>>,
    consecutive_failures: AtomicU32,
    disabled: AtomicBool,
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    metrics: Arc<HookMetrics>,
    /// The tenant's deadlines and memory cap, read at each call and instantiation.
    quota: Arc<PluginQuota>,
}

impl LoadedPlugin {
    pub(crate) async fn new(
        runtime: Arc<Runtime>,
        tenant: Arc<str>,
        hook: Hook,
        compiled: Arc<Compiled>,
        provenance: Provenance,
        metrics: Arc<HookMetrics>,
        quota: Arc<PluginQuota>,
    ) -> Result<Self, CallError> {
        let label = format!("{}@{}", hook.as_str(), &compiled.hash[..12]).into();
        let Provenance { config, on_failure, installed_at, source } = provenance;
        let plugin = Self {
            hook,
            tenant,
            compiled,
            config: Arc::new(config),
            on_failure,
            installed_at,
            source,
            runtime,
            label,
            idle: Mutex::default(),
            consecutive_failures: AtomicU32::new(0),
            disabled: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            metrics,
            quota,
        };
        // Instantiating once checks the export's types against the hook's signature.
        let warm = plugin.instantiate().await?;
        plugin.idle.lock().expect("idle lock").push(warm);
        Ok(plugin)
    }

    /// What the plugin store keeps of this version.
    pub(crate) fn version_state(&self) -> VersionState {
        VersionState {
            hash: self.compiled.hash.clone(),
            provenance: Provenance {
                config: (*self.config).clone(),
                on_failure: self.on_failure,
                installed_at: self.installed_at,
                source: self.source,
            },
        }
    }

    /// Counts a call that returned something the host cannot use (`what`) as a failed call,
    /// toward the breaker too.
    pub(crate) fn unusable(&self, what: &str) {
        self.failed(&CallError::Unusable(what.to_owned()));
    }

    /// The hook's counters, which the failure policy adds to.
    pub(crate) fn metrics(&self) -> &HookMetrics {
        &self.metrics
    }

    pub(crate) fn is_disabled(&self) -> bool {
        self.disabled.load(Relaxed)
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Relaxed)
    }

    async fn instantiate(&self) -> Result<Warm, CallError> {
        let state = StoreState {
            tenant: self.tenant.clone(),
            plugin: self.label.clone(),
            config: self.config.clone(),
            limits: MemoryCaps::new(self.quota.memory_bytes()),
            wasi: WasiCtxBuilder::new().allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).build(),
            table: ResourceTable::new(),
            clock: CallClock::new(),
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|ctx| {
            Ok(match ctx.data().clock.verdict(TICK) {
                Verdict::Expired => UpdateDeadline::Interrupt,
                Verdict::Yield => UpdateDeadline::Yield(1),
                Verdict::Continue => UpdateDeadline::Continue(1),
            })
        });
        let meter = store.data().clock.meter.clone();
        let budget = Budget::cpu(self.setup_budget());
        store.data_mut().clock.start(budget);
        store.set_epoch_deadline(1);
        let _ticking = self.runtime.ticking();
        let fail = |e: wasmtime::Error| CallError::Instantiate(format!("{e:#}"));
        let instance = bounded(&meter, budget, self.compiled.pre.instantiate_async(&mut store)).await.map_err(fail)?;
        let missing = || CallError::Instantiate(format!("component does not export the {} hook", self.hook.as_str()));
        let guest = Guest::load(&self.compiled.exports, self.hook, &mut store, &instance).ok_or_else(missing)?;
        let guest = guest.map_err(fail)?;
        Ok(Warm { store, meter, guest, calls: 0 })
    }

    fn deadline(&self) -> Duration {
        self.quota.deadline(self.hook)
    }

    fn setup_budget(&self) -> Duration {
        self.deadline().saturating_mul(10).max(SETUP_BUDGET_MIN)
    }

    /// The budget of a call on `warm`. An instance's first call faults in the pages it
    /// touches, and a language runtime (JavaScript's, Python's) finishes setting up on first
    /// use, so it gets the set-up allowance in CPU time, unless the version's last two calls
    /// failed: the retry of one failed call (`on_failure = "retry"`, on a fresh instance)
    /// may set up, but a plugin that keeps trapping or looping and is re-instantiated gets
    /// the deadline, no more. The wall-clock stop stays the deadline's.
    fn budget(&self, warm: &Warm) -> Budget {
        let budget = Budget::cpu(self.deadline());
        if warm.calls == 0 && self.consecutive_failures() < 2 { budget.with_cpu(self.setup_budget()) } else { budget }
    }

    /// Runs `f` on a warm instance with the hook's deadline, applying the breaker.
    async fn call<R>(
        &self,
        f: impl AsyncFnOnce(&mut Store<StoreState>, &Guest) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        if self.is_disabled() {
            return Err(CallError::Disabled);
        }
        let Some(_slot) = self.quota.slot(self.setup_budget()).await else {
            self.metrics.busy.fetch_add(1, Relaxed);
            return Err(CallError::Busy);
        };
        let started = Instant::now();
        self.calls.fetch_add(1, Relaxed);
        self.metrics.calls.fetch_add(1, Relaxed);
        let warm = self.idle.lock().expect("idle lock").pop();
        let warm = match warm {
            Some(warm) => Ok(warm),
            None => self.instantiate().await,
        };
        let result = match warm {
            Ok(mut warm) => {
                let budget = self.budget(&warm);
                warm.store.data_mut().clock.start(budget);
                warm.store.set_epoch_deadline(1);
                let ticking = self.runtime.ticking();
                // Boxed once: the call future is large, and moving it into `bounded`'s
                // timeout and meter would copy it several times per call.
                let r = bounded(&warm.meter, budget, Box::pin(f(&mut warm.store, &warm.guest))).await;
                drop(ticking);
                if r.is_ok() {
                    warm.calls += 1;
                    let mut idle = self.idle.lock().expect("idle lock");
                    let retire =
                        warm.calls >= self.runtime.limits.recycle_after_calls || warm.store.data().limits.near_cap();
                    if !retire && idle.len() < MAX_IDLE {
                        idle.push(warm);
                    }
                }
                r.map_err(classify)
            }
            Err(e) => Err(e),
        };
        self.metrics.duration.observe(started.elapsed());
        match &result {
            Ok(_) => self.consecutive_failures.store(0, Relaxed),
            Err(e) => self.failed(e),
        }
        result
    }

    /// Counts a failed call, and disables the version at the breaker's threshold.
    fn failed(&self, e: &CallError) {
        self.failures.fetch_add(1, Relaxed);
        self.metrics.failures.fetch_add(1, Relaxed);
        let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        tracing::warn!(tenant = &*self.tenant, plugin = &*self.label, consecutive = n, "plugin call failed: {e}");
        if n < self.runtime.limits.breaker_threshold || self.disabled.swap(true, Relaxed) {
            return;
        }
        self.metrics.disabled.store(1, Relaxed);
        tracing::error!(
            tenant = &*self.tenant,
            plugin = &*self.label,
            "plugin disabled after {n} consecutive failures; upload a fixed version or roll back"
        );
        let reason = format!("{n} consecutive failures, the last: {e}");
        self.runtime.breaker_turned(BreakerTurn {
            tenant: &self.tenant,
            hook: self.hook,
            hash: Some(&self.compiled.hash),
            disabled: true,
            reason: &reason,
        });
    }

    pub(crate) async fn authenticate(
        &self,
        req: types::ConnectRequest<'_>,
    ) -> Result<Result<types::Identity, types::Deny>, CallError> {
        self.call(async |store, guest| match guest {
            Guest::Auth(Versioned::Current(g)) => g.call_authenticate(store, req).await,
            Guest::Auth(Versioned::V0_1(g)) => compat::authenticate(g, store, req).await,
            _ => unreachable!("auth plugins hold auth guests"),
        })
        .await
    }

    pub(crate) async fn transform(&self, ev: types::EventParam<'_>) -> Result<types::TransformResult, CallError> {
        self.call(async |store, guest| match guest {
            Guest::Transform(Versioned::Current(g)) => g.call_transform(store, ev).await,
            Guest::Transform(Versioned::V0_1(g)) => compat::transform(g, store, ev).await,
            _ => unreachable!("transform plugins hold transform guests"),
        })
        .await
    }

    pub(crate) async fn route(&self, ev: types::EventParam<'_>) -> Result<types::RouteDecision, CallError> {
        self.call(async |store, guest| match guest {
            Guest::Route(Versioned::Current(g)) => g.call_route(store, ev).await,
            Guest::Route(Versioned::V0_1(g)) => compat::route(g, store, ev).await,
            _ => unreachable!("route plugins hold route guests"),
        })
        .await
    }
}

fn classify(e: wasmtime::Error) -> CallError {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Deadline,
        Some(trap) => CallError::Trap(trap.to_string()),
        None => CallError::Trap(format!("{e:#}")),
    }
}
