//! Per-tenant quotas on one node: connection slots, connections per user, and the publish
//! rate (a token bucket). A refusal never waits: the caller answers 429 at once, so a
//! tenant at its limits does not slow the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::TenantLimits;

/// Open connections per user.
type UserCounts = Arc<Mutex<HashMap<Box<str>, usize>>>;

/// A tenant's share of the node.
pub(crate) struct Quota {
    pub limits: TenantLimits,
    /// `None` without a connection limit.
    connections: Option<Arc<Semaphore>>,
    /// Open connections per user, only kept with a per-user limit. Held for one update.
    users: UserCounts,
    /// `None` without a publish rate. Held for one refill and take.
    bucket: Option<Mutex<Bucket>>,
}

/// Which quota refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Connections,
    UserConnections,
}

/// A connection's slots under its tenant's quotas; dropping it frees them.
pub(crate) struct Slots {
    _connection: Option<OwnedSemaphorePermit>,
    user: Option<(UserCounts, Box<str>)>,
}

impl Drop for Slots {
    fn drop(&mut self) {
        if let Some((users, user)) = self.user.take() {
            let mut users = users.lock().expect("quota lock");
            if let Some(n) = users.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    users.remove(&user);
                }
            }
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Quota {
    pub(crate) fn new(limits: TenantLimits) -> Self {
        let max = limits.max_connections.min(Semaphore::MAX_PERMITS);
        Self {
            limits,
            connections: (max > 0).then(|| Arc::new(Semaphore::new(max))),
            users: Arc::default(),
            bucket: (limits.publish_rate > 0)
                .then(|| Mutex::new(Bucket { tokens: f64::from(limits.burst()), at: Instant::now() })),
        }
    }

    /// Slots for one more connection of `user`; `None` inside the result when the tenant has
    /// no connection limits (nothing to hold).
    pub(crate) fn admit(&self, user: &str) -> Result<Option<Box<Slots>>, Refusal> {
        if self.connections.is_none() && self.limits.max_connections_per_user == 0 {
            return Ok(None);
        }
        let connection = match &self.connections {
            Some(s) => Some(s.clone().try_acquire_owned().map_err(|_| Refusal::Connections)?),
            None => None,
        };
        let user = match self.limits.max_connections_per_user {
            0 => None,
            max => {
                let mut users = self.users.lock().expect("quota lock");
                let n = users.entry(user.into()).or_insert(0);
                if *n >= max {
                    return Err(Refusal::UserConnections);
                }
                *n += 1;
                Some((self.users.clone(), Box::from(user)))
            }
        };
        Ok(Some(Box::new(Slots { _connection: connection, user })))
    }

    /// The index of the first event whose `data` is over `max_event_bytes`, if any.
    pub(crate) fn oversized(&self, events: &[crate::event::Event]) -> Option<usize> {
        let max = self.limits.max_event_bytes;
        (max > 0).then(|| events.iter().position(|e| e.data.get().len() > max)).flatten()
    }

    /// Takes `events` tokens from the publish bucket, all or none, or says how long until
    /// they would be there (`None`: never, the batch is larger than the bucket).
    pub(crate) fn publish(&self, events: usize) -> Result<(), Option<Duration>> {
        let Some(bucket) = &self.bucket else { return Ok(()) };
        let rate = f64::from(self.limits.publish_rate);
        let wanted = events as f64;
        if wanted > f64::from(self.limits.burst()) {
            return Err(None);
        }
        let mut b = self.refilled(bucket);
        if b.tokens >= wanted {
            b.tokens -= wanted;
            return Ok(());
        }
        Err(Some(Duration::from_secs_f64((wanted - b.tokens) / rate)))
    }

    /// Takes tokens for as many of `events` as the bucket holds; returns how many.
    pub(crate) fn publish_up_to(&self, events: usize) -> usize {
        let Some(bucket) = &self.bucket else { return events };
        let mut b = self.refilled(bucket);
        let n = (b.tokens.floor() as usize).min(events);
        b.tokens -= n as f64;
        n
    }

    fn refilled<'a>(&self, bucket: &'a Mutex<Bucket>) -> std::sync::MutexGuard<'a, Bucket> {
        let mut b = bucket.lock().expect("quota lock");
        let now = Instant::now();
        let rate = f64::from(self.limits.publish_rate);
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(f64::from(self.limits.burst()));
        b.at = now;
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
        let q = Quota::new(limits(2, 0, 0, 0));
        let a = q.admit("u1").unwrap();
        let _b = q.admit("u2").unwrap();
        assert_eq!(q.admit("u3").err(), Some(Refusal::Connections));
        drop(a);
        assert!(q.admit("u3").is_ok());
    }

    #[test]
    fn users_are_counted_apart() {
        let q = Quota::new(limits(0, 1, 0, 0));
        let alice = q.admit("alice").unwrap();
        assert_eq!(q.admit("alice").err(), Some(Refusal::UserConnections));
        let _bob = q.admit("bob").unwrap();
        drop(alice);
        assert!(q.admit("alice").is_ok());
        assert!(q.users.lock().unwrap().get("alice").is_none(), "a user without connections is forgotten");
    }

    #[test]
    fn without_limits_nothing_is_held() {
        let q = Quota::new(TenantLimits::default());
        assert!(q.admit("alice").unwrap().is_none());
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
