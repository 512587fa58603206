//! Per-tenant quotas on one node: connection slots (counting the tenant's connections on
//! the other nodes as they last reported them), connections per user, and the publish rate
//! (a token bucket). A refusal never waits: the caller answers 429 at once, so a
//! tenant at its limits does not slow the others. Limits can change while the tenant runs
//! (`set_limits`): the tenant's connections are always counted, so a lowered limit holds
//! exactly; a user's connections are counted while the tenant has a per-user limit (kept
//! off the path of tenants without one: one map entry per user would cost every idle
//! connection).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::bucket::Bucket;
use crate::config::TenantLimits;

/// A tenant's share of the node, shared by every version of the tenant.
pub(crate) struct Quota {
    /// Read on every check; written only when an admin changes the tenant.
    limits: RwLock<TenantLimits>,
    /// Open (or upgrading) connections of the tenant on this node.
    connections: AtomicUsize,
    /// The tenant's connections on the other live nodes, as they last reported them
    /// (cluster mode; refreshed every second).
    elsewhere: AtomicUsize,
    /// Open connections per user. Held for one update.
    users: Mutex<HashMap<Box<str>, usize>>,
    /// Held for one refill and take.
    bucket: Mutex<Bucket>,
}

/// Which quota refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Connections,
    UserConnections,
}

/// A connection's place in its tenant's counts; dropping it frees it.
pub(crate) struct Slots {
    quota: Arc<Quota>,
    /// The user, when counted under a per-user limit.
    user: Option<Box<str>>,
}

impl Drop for Slots {
    fn drop(&mut self) {
        self.quota.connections.fetch_sub(1, SeqCst);
        let Some(user) = &self.user else { return };
        let mut users = self.quota.users.lock().expect("quota lock");
        if let Some(n) = users.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                users.remove(user);
            }
        }
    }
}

impl Quota {
    pub(crate) fn new(limits: TenantLimits) -> Self {
        Self {
            limits: RwLock::new(limits),
            connections: AtomicUsize::new(0),
            elsewhere: AtomicUsize::new(0),
            users: Mutex::default(),
            bucket: Mutex::new(Bucket::full(f64::from(limits.burst()), Instant::now())),
        }
    }

    pub(crate) fn limits(&self) -> TenantLimits {
        *self.limits.read().expect("quota lock")
    }

    /// New limits for connections and publishes from now on; the publish bucket keeps its
    /// tokens, capped to the new burst.
    pub(crate) fn set_limits(&self, limits: TenantLimits) {
        *self.limits.write().expect("quota lock") = limits;
    }

    /// The tenant's open connections on this node.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(SeqCst)
    }

    /// How many connections the tenant has on the other nodes.
    pub(crate) fn set_elsewhere(&self, connections: usize) {
        self.elsewhere.store(connections, SeqCst);
    }

    /// Counts one more connection of `user`, or refuses it. The tenant's connection limit
    /// counts its connections on other nodes too, as last reported.
    pub(crate) fn admit(self: &Arc<Self>, user: &str) -> Result<Slots, Refusal> {
        let limits = self.limits();
        let open = self.connections.fetch_add(1, SeqCst) + self.elsewhere.load(SeqCst);
        let mut slots = Slots { quota: self.clone(), user: None };
        // From here on, dropping `slots` undoes the counts.
        if limits.max_connections > 0 && open >= limits.max_connections {
            return Err(Refusal::Connections);
        }
        // Anonymous connections (no user) count under the tenant's limit only.
        if limits.max_connections_per_user > 0 && !user.is_empty() {
            let mut users = self.users.lock().expect("quota lock");
            let of_user = users.entry(user.into()).or_insert(0);
            *of_user += 1;
            slots.user = Some(user.into());
            if *of_user > limits.max_connections_per_user {
                drop(users);
                return Err(Refusal::UserConnections);
            }
        }
        Ok(slots)
    }

    /// The index of the first event whose `data` is over `max_event_bytes`, if any.
    pub(crate) fn oversized(&self, events: &[crate::event::Event]) -> Option<usize> {
        let max = self.limits().max_event_bytes;
        (max > 0).then(|| events.iter().position(|e| e.data.get().len() > max)).flatten()
    }

    /// Takes `events` tokens from the publish bucket, all or none, or says how long until
    /// they would be there (`None`: never, the batch is larger than the bucket).
    pub(crate) fn publish(&self, events: usize) -> Result<(), Option<Duration>> {
        let limits = self.limits();
        if limits.publish_rate == 0 {
            return Ok(());
        }
        let wanted = events as f64;
        if wanted > f64::from(limits.burst()) {
            return Err(None);
        }
        self.refilled(&limits).take(wanted, f64::from(limits.publish_rate)).map_err(Some)
    }

    /// Takes tokens for as many of `events` as the bucket holds; returns how many.
    pub(crate) fn publish_up_to(&self, events: usize) -> usize {
        let limits = self.limits();
        if limits.publish_rate == 0 {
            return events;
        }
        self.refilled(&limits).take_up_to(events)
    }

    fn refilled(&self, limits: &TenantLimits) -> std::sync::MutexGuard<'_, Bucket> {
        let mut b = self.bucket.lock().expect("quota lock");
        b.refill(f64::from(limits.publish_rate), f64::from(limits.burst()), Instant::now());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, per_user: usize, rate: u32, burst: u32) -> TenantLimits {
        TenantLimits {
            max_connections,
            max_connections_per_user: per_user,
            publish_rate: rate,
            publish_burst: burst,
            ..TenantLimits::default()
        }
    }

    #[test]
    fn connection_slots_come_back() {
        let q = Arc::new(Quota::new(limits(2, 0, 0, 0)));
        let a = q.admit("u1").unwrap();
        let _b = q.admit("u2").unwrap();
        assert_eq!(q.admit("u3").err(), Some(Refusal::Connections));
        drop(a);
        assert!(q.admit("u3").is_ok());
    }

    #[test]
    fn users_are_counted_apart() {
        let q = Arc::new(Quota::new(limits(0, 1, 0, 0)));
        let alice = q.admit("alice").unwrap();
        assert_eq!(q.admit("alice").err(), Some(Refusal::UserConnections));
        let _bob = q.admit("bob").unwrap();
        drop(alice);
        assert!(q.admit("alice").is_ok());
        assert!(q.users.lock().unwrap().get("alice").is_none(), "a user without connections is forgotten");
    }

    #[test]
    fn a_lowered_limit_holds_for_connections_admitted_before() {
        let q = Arc::new(Quota::new(TenantLimits::default()));
        let held: Vec<_> = (0..3).map(|i| q.admit(&format!("u{i}")).unwrap()).collect();
        q.set_limits(limits(2, 0, 0, 0));
        assert_eq!(q.admit("u9").err(), Some(Refusal::Connections), "3 open, limit 2");
        drop(held);
        assert!(q.admit("u9").is_ok());
    }

    #[test]
    fn without_limits_everything_passes() {
        let q = Arc::new(Quota::new(TenantLimits::default()));
        let _a = q.admit("alice").unwrap();
        let _b = q.admit("alice").unwrap();
        assert_eq!(q.publish(1_000_000), Ok(()));
    }

    #[test]
    fn the_bucket_allows_its_burst_then_tells_when_to_retry() {
        let q = Quota::new(limits(0, 0, 10, 5));
        assert_eq!(q.publish(5), Ok(()));
        let wait = q.publish(1).unwrap_err().unwrap();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        assert_eq!(q.publish(6), Err(None), "larger than the bucket: never");
        let q = Quota::new(limits(0, 0, 1, 3));
        assert_eq!(q.publish_up_to(5), 3, "as many as the bucket holds");
        assert_eq!(q.publish_up_to(5), 0);
    }
}
