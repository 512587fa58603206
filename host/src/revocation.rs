//! Revoked credentials: per tenant and user, tokens issued before a time are refused until
//! the revocation lapses (`REVOCATION_TTL` after it was made). Every node keeps the set in
//! memory (filled at start from the control-plane store and by disconnect commands), so a
//! handshake checks it without a round trip.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

/// How long a revocation holds: tokens meant to be revocable must expire sooner.
pub(crate) const REVOCATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// One revocation: tokens issued before `before` are refused until `until` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Revoked {
    pub before: u64,
    pub until: u64,
}

/// A revocation of one user's tokens, as the control-plane store keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Revocation {
    pub tenant: String,
    pub user: String,
    pub revoked: Revoked,
}

/// One tenant's revocations by user.
type ByUser = HashMap<Box<str>, Revoked>;

/// The live revocations by (tenant, user).
#[derive(Default)]
pub(crate) struct Revocations {
    /// By tenant, then user. Read on every handshake (an empty map is one uncontended
    /// read, and a lookup allocates nothing); written by commands.
    by_tenant: RwLock<HashMap<Box<str>, ByUser>>,
}

impl Revocations {
    /// Records a revocation; of two for the same user the later `before` wins.
    pub(crate) fn revoke(&self, tenant: &str, user: &str, revoked: Revoked) {
        let mut map = self.by_tenant.write().expect("revocations lock");
        let entry = map.entry(tenant.into()).or_default().entry(user.into()).or_insert(revoked);
        if revoked.before >= entry.before {
            *entry = revoked;
        }
    }

    /// Whether credentials of `user` issued at `issued_at` are revoked now (credentials
    /// without an issue time are, while a revocation holds).
    pub(crate) fn refuses(&self, tenant: &str, user: &str, issued_at: Option<u64>, now: u64) -> bool {
        let map = self.by_tenant.read().expect("revocations lock");
        let revoked = map.get(tenant).and_then(|users| users.get(user));
        revoked.is_some_and(|r| now < r.until && issued_at.is_none_or(|iat| iat < r.before))
    }

    /// Forgets lapsed revocations.
    pub(crate) fn prune(&self, now: u64) {
        let mut map = self.by_tenant.write().expect("revocations lock");
        map.values_mut().for_each(|users| users.retain(|_, r| now < r.until));
        map.retain(|_, users| !users.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_issued_before_are_refused_until_the_revocation_lapses() {
        let r = Revocations::default();
        assert!(!r.refuses("t", "u", Some(5), 10));
        r.revoke("t", "u", Revoked { before: 100, until: 200 });
        r.revoke("t", "u", Revoked { before: 50, until: 150 });
        assert!(r.refuses("t", "u", Some(99), 120));
        assert!(r.refuses("t", "u", None, 120), "no issue time: refused");
        assert!(!r.refuses("t", "u", Some(100), 120));
        assert!(!r.refuses("t", "other", Some(1), 120));
        assert!(!r.refuses("other", "u", Some(1), 120));
        assert!(!r.refuses("t", "u", Some(1), 200), "lapsed");
        r.prune(200);
        assert!(!r.refuses("t", "u", None, 0));
    }
}
