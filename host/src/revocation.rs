//! Revoked credentials: per tenant and user, tokens issued before a time, and tokens by id
//! (`jti`), are refused until the revocation lapses (`REVOCATION_TTL` after it was made). Every node keeps the set in
//! memory (filled at start from the control-plane store and by disconnect commands), so a
//! handshake checks it without a round trip.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

/// How long a revocation holds: tokens meant to be revocable must expire sooner.
pub(crate) const REVOCATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// The most token ids one user's revocation holds: past that, revoke by time instead.
pub(crate) const MAX_REVOKED_IDS: usize = 1000;

/// One user's revocation: tokens issued before `before` (0: none by time), and tokens whose
/// `jti` is in `ids`, are refused until `until` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Revoked {
    pub before: u64,
    pub until: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
}

impl Revoked {
    /// Both revocations in one: the later time, the later lapse, every id (up to
    /// [`MAX_REVOKED_IDS`], the newest kept; an id past that still lapses with its time).
    pub(crate) fn merge(&mut self, other: Revoked) {
        self.before = self.before.max(other.before);
        self.until = self.until.max(other.until);
        for id in other.ids {
            if !self.ids.contains(&id) {
                self.ids.push(id);
            }
        }
        let excess = self.ids.len().saturating_sub(MAX_REVOKED_IDS);
        self.ids.drain(..excess);
    }

    /// Whether this refuses a token issued at `issued_at` with id `token_id`, at `now`.
    pub(crate) fn refuses(&self, issued_at: Option<u64>, token_id: Option<&str>, now: u64) -> bool {
        let by_time = self.before > 0 && issued_at.is_none_or(|iat| iat < self.before);
        let by_id = token_id.is_some_and(|id| self.ids.iter().any(|r| r == id));
        now < self.until && (by_time || by_id)
    }
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
    /// Records a revocation, merged with the user's earlier one ([`Revoked::merge`]).
    pub(crate) fn revoke(&self, tenant: &str, user: &str, revoked: Revoked) {
        let mut map = self.by_tenant.write().expect("revocations lock");
        match map.entry(tenant.into()).or_default().entry(user.into()) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(revoked),
            std::collections::hash_map::Entry::Vacant(e) => drop(e.insert(revoked)),
        }
    }

    /// Whether credentials of `user` issued at `issued_at` with id `token_id` are revoked now
    /// (credentials without an issue time are, while a revocation by time holds).
    pub(crate) fn refuses(
        &self,
        tenant: &str,
        user: &str,
        issued_at: Option<u64>,
        token_id: Option<&str>,
        now: u64,
    ) -> bool {
        let map = self.by_tenant.read().expect("revocations lock");
        let revoked = map.get(tenant).and_then(|users| users.get(user));
        revoked.is_some_and(|r| r.refuses(issued_at, token_id, now))
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
        assert!(!r.refuses("t", "u", Some(5), None, 10));
        r.revoke("t", "u", Revoked { before: 100, until: 200, ids: vec![] });
        r.revoke("t", "u", Revoked { before: 50, until: 150, ids: vec![] });
        assert!(r.refuses("t", "u", Some(99), None, 120));
        assert!(r.refuses("t", "u", None, None, 120), "no issue time: refused");
        assert!(!r.refuses("t", "u", Some(100), None, 120));
        assert!(!r.refuses("t", "other", Some(1), None, 120));
        assert!(!r.refuses("other", "u", Some(1), None, 120));
        assert!(!r.refuses("t", "u", Some(1), None, 200), "lapsed");
        r.prune(200);
        assert!(!r.refuses("t", "u", None, None, 0));
    }

    #[test]
    fn token_ids_are_refused_beside_times_and_merge() {
        let r = Revocations::default();
        r.revoke("t", "u", Revoked { before: 0, until: 200, ids: vec!["a".into()] });
        assert!(r.refuses("t", "u", Some(150), Some("a"), 120));
        assert!(!r.refuses("t", "u", Some(150), Some("b"), 120));
        assert!(!r.refuses("t", "u", None, None, 120), "no revocation by time: tokens without iat pass");
        r.revoke("t", "u", Revoked { before: 100, until: 300, ids: vec!["b".into(), "a".into()] });
        assert!(r.refuses("t", "u", Some(150), Some("a"), 250), "the ids merged, the later lapse kept");
        assert!(r.refuses("t", "u", Some(150), Some("b"), 250));
        assert!(r.refuses("t", "u", Some(99), Some("c"), 250));
        assert!(!r.refuses("t", "u", Some(150), Some("c"), 250));
        let mut many = Revoked { before: 0, until: 1, ids: vec![] };
        many.merge(Revoked { before: 0, until: 1, ids: (0..MAX_REVOKED_IDS + 5).map(|i| i.to_string()).collect() });
        assert_eq!(many.ids.len(), MAX_REVOKED_IDS);
        assert_eq!(many.ids[0], "5", "the oldest ids go first");
    }
}
