//! A tenant's plugin limits on this node: its call deadlines, the memory cap of its
//! instances and how many calls it may have in progress at once, the node's `[plugins]`
//! with the tenant's `limits.plugin_*` overrides. One tenant whose JavaScript plugin handles
//! large payloads gets room without raising every other tenant's limits, and one tenant's
//! flood of calls takes at most its own share of the node's instances. Changed in place
//! when the tenant's settings change: calls and instances started after that get the new
//! limits.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Hook;
use crate::config::PluginLimits;

pub(crate) struct PluginQuota {
    auth_deadline_ns: AtomicU64,
    hook_deadline_ns: AtomicU64,
    memory_bytes: AtomicUsize,
    /// One permit per call the tenant may have in progress at once (`plugin_instances`).
    /// Replaced, not resized, when the limit changes: calls holding the old one's permits
    /// finish under it. Read-locked only to clone the `Arc`.
    calls: RwLock<(usize, Arc<Semaphore>)>,
}

/// A call's place among the tenant's calls in progress, given back when dropped.
pub(crate) struct CallSlot(#[allow(dead_code)] OwnedSemaphorePermit);

impl PluginQuota {
    pub(crate) fn new(limits: &PluginLimits) -> Self {
        let quota = Self {
            auth_deadline_ns: 0.into(),
            hook_deadline_ns: 0.into(),
            memory_bytes: 0.into(),
            calls: RwLock::new((0, Arc::new(Semaphore::new(0)))),
        };
        quota.set(limits);
        quota
    }

    pub(crate) fn set(&self, limits: &PluginLimits) {
        self.auth_deadline_ns.store(nanos(limits.auth_deadline), Relaxed);
        self.hook_deadline_ns.store(nanos(limits.hook_deadline), Relaxed);
        self.memory_bytes.store(limits.memory_limit_bytes, Relaxed);
        let slots = limits.instances_per_tenant as usize;
        let mut calls = self.calls.write().expect("plugin call slots lock");
        if calls.0 != slots {
            *calls = (slots, Arc::new(Semaphore::new(slots)));
        }
    }

    /// A place for one call, waiting at most `wait` for one of the tenant's calls in
    /// progress to end; `None` if none did.
    pub(crate) async fn slot(&self, wait: Duration) -> Option<CallSlot> {
        let calls = self.calls.read().expect("plugin call slots lock").1.clone();
        if let Ok(permit) = calls.clone().try_acquire_owned() {
            return Some(CallSlot(permit));
        }
        let permit = tokio::time::timeout(wait, calls.acquire_owned()).await.ok()?.ok()?;
        Some(CallSlot(permit))
    }

    /// The deadline of one call of `hook`.
    pub(crate) fn deadline(&self, hook: Hook) -> Duration {
        let ns = if hook == Hook::Auth { &self.auth_deadline_ns } else { &self.hook_deadline_ns };
        Duration::from_nanos(ns.load(Relaxed))
    }

    /// The linear memory cap of one instance.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.memory_bytes.load(Relaxed)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tenant_has_as_many_calls_in_progress_as_its_slots_and_a_changed_limit_applies_to_the_next() {
        let limits = PluginLimits { instances_per_tenant: 1, ..PluginLimits::default() };
        let quota = PluginQuota::new(&limits);
        let first = quota.slot(Duration::ZERO).await.expect("one slot");
        assert!(quota.slot(Duration::from_millis(20)).await.is_none(), "the only slot is taken");
        drop(first);
        let again = quota.slot(Duration::ZERO).await.expect("given back");
        quota.set(&PluginLimits { instances_per_tenant: 2, ..limits.clone() });
        let (_a, _b) = (quota.slot(Duration::ZERO).await, quota.slot(Duration::ZERO).await);
        assert!(_a.is_some() && _b.is_some(), "two slots from now on");
        drop(again);
    }
}
