//! A tenant's plugin limits on this node: its call deadlines and the memory cap of its
//! instances, the node's `[plugins]` with the tenant's `limits.plugin_*` overrides. One
//! tenant whose JavaScript plugin handles large payloads gets room without raising every
//! other tenant's limits. Changed in place when the tenant's settings change: calls and
//! instances started after that get the new limits.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use super::Hook;
use crate::config::PluginLimits;

pub(crate) struct PluginQuota {
    auth_deadline_ns: AtomicU64,
    hook_deadline_ns: AtomicU64,
    memory_bytes: AtomicUsize,
}

impl PluginQuota {
    pub(crate) fn new(limits: &PluginLimits) -> Self {
        let quota = Self { auth_deadline_ns: 0.into(), hook_deadline_ns: 0.into(), memory_bytes: 0.into() };
        quota.set(limits);
        quota
    }

    pub(crate) fn set(&self, limits: &PluginLimits) {
        self.auth_deadline_ns.store(nanos(limits.auth_deadline), Relaxed);
        self.hook_deadline_ns.store(nanos(limits.hook_deadline), Relaxed);
        self.memory_bytes.store(limits.memory_limit_bytes, Relaxed);
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
