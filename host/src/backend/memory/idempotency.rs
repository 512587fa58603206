//! Idempotency keys on one node: a map of claimed keys, expired in claim order. At most
//! `MAX_KEYS` are kept: beyond, the oldest claims are forgotten before their window ends.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backend::BoxFuture;
use crate::backend::BrokerError;
use crate::backend::idempotency::{Claim, Idempotency};

/// Keys kept at most (about 100 bytes each with a short key).
const MAX_KEYS: usize = 1_000_000;

/// Keys claimed within their window, by (tenant, key).
#[derive(Default)]
pub(crate) struct MemoryIdempotency {
    /// Locked for a few map operations per publish, never across an await.
    keys: Mutex<Keys>,
}

/// (tenant, key).
type TenantKey = (Box<str>, Box<str>);

#[derive(Default)]
struct Keys {
    owners: HashMap<TenantKey, Owner>,
    /// Claims in the order they were made (so in expiry order for one window); an entry
    /// whose key was released or reclaimed since is skipped.
    expiries: VecDeque<(Instant, TenantKey)>,
}

struct Owner {
    id: Box<str>,
    expires: Instant,
}

impl Keys {
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.expiries.front()
            && (*at <= now || self.expiries.len() > MAX_KEYS)
        {
            let (at, key) = self.expiries.pop_front().expect("front exists");
            if self.owners.get(&key).is_some_and(|o| o.expires == at) {
                self.owners.remove(&key);
            }
        }
    }
}

impl Idempotency for MemoryIdempotency {
    fn claim<'a>(
        &'a self,
        tenant: &'a str,
        claims: &'a [Claim<'a>],
        window: Duration,
    ) -> BoxFuture<'a, Result<Vec<Option<String>>, BrokerError>> {
        let now = Instant::now();
        let mut keys = self.keys.lock().unwrap();
        keys.expire(now);
        let owners = claims
            .iter()
            .map(|c| {
                let key: TenantKey = (tenant.into(), c.key.into());
                if let Some(owner) = keys.owners.get(&key) {
                    return Some(owner.id.to_string());
                }
                let expires = now + window;
                keys.owners.insert(key.clone(), Owner { id: c.id.into(), expires });
                keys.expiries.push_back((expires, key));
                None
            })
            .collect();
        Box::pin(async move { Ok(owners) })
    }

    fn release<'a>(&'a self, tenant: &'a str, claims: &'a [Claim<'a>]) -> BoxFuture<'a, ()> {
        let mut keys = self.keys.lock().unwrap();
        for c in claims {
            let key: TenantKey = (tenant.into(), c.key.into());
            if keys.owners.get(&key).is_some_and(|o| &*o.id == c.id) {
                keys.owners.remove(&key);
            }
        }
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn the_first_claim_owns_the_key_per_tenant() {
        let store = MemoryIdempotency::default();
        let first = [Claim { key: "k", id: "1" }, Claim { key: "k", id: "2" }];
        assert_eq!(store.claim("a", &first, W).await.unwrap(), vec![None, Some("1".into())]);
        let again = [Claim { key: "k", id: "3" }];
        assert_eq!(store.claim("a", &again, W).await.unwrap(), vec![Some("1".into())]);
        assert_eq!(store.claim("b", &again, W).await.unwrap(), vec![None], "another tenant's key");
    }

    #[tokio::test]
    async fn a_released_key_can_be_claimed_again_and_only_its_owner_releases_it() {
        let store = MemoryIdempotency::default();
        store.claim("a", &[Claim { key: "k", id: "1" }], W).await.unwrap();
        store.release("a", &[Claim { key: "k", id: "2" }]).await;
        assert_eq!(store.claim("a", &[Claim { key: "k", id: "3" }], W).await.unwrap(), vec![Some("1".into())]);
        store.release("a", &[Claim { key: "k", id: "1" }]).await;
        assert_eq!(store.claim("a", &[Claim { key: "k", id: "4" }], W).await.unwrap(), vec![None]);
    }

    #[tokio::test]
    async fn keys_expire_after_their_window() {
        let store = MemoryIdempotency::default();
        store.claim("a", &[Claim { key: "k", id: "1" }], Duration::ZERO).await.unwrap();
        assert_eq!(store.claim("a", &[Claim { key: "k", id: "2" }], W).await.unwrap(), vec![None]);
        assert_eq!(store.keys.lock().unwrap().owners.len(), 1);
    }
}
