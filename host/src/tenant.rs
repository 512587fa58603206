//! Tenants: their keys (kept only as SHA-256 digests, compared in constant time),
//! authenticator, policies and metrics, looked up by id or publish key in a registry that
//! changes at runtime (tenants created and deleted through the admin API).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::Authenticator;
use crate::config::TenantLimits;
use crate::config::{Config, TenantConfig};
use crate::metrics::TenantMetrics;
use crate::quota::Quota;
use crate::segment::Segments;

/// The SHA-256 digest of a secret key: what the host keeps and compares instead of the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KeyDigest([u8; 32]);

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyDigest({})", self.fingerprint())
    }
}

impl KeyDigest {
    pub(crate) fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether `presented` is the key, in time independent of where they differ.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        bool::from(Self::of(presented).0.ct_eq(&self.0))
    }

    /// The first 8 bytes of the digest in hex: enough to tell keys apart, useless to guess one.
    pub(crate) fn fingerprint(&self) -> String {
        hex(&self.0[..8])
    }

    pub(crate) fn to_hex(self) -> String {
        hex(&self.0)
    }

    pub(crate) fn from_hex(hex: &str) -> Option<Self> {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<_>>()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

/// One secret key, as its digest, and when it stops working (ms since the Unix epoch; a
/// rotated-out key works until the end of its overlap window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    pub digest: KeyDigest,
    pub expires_at: Option<u64>,
}

impl Key {
    pub(crate) fn new(digest: KeyDigest) -> Self {
        Self { digest, expires_at: None }
    }

    fn live(&self, now_ms: u64) -> bool {
        self.expires_at.is_none_or(|t| now_ms < t)
    }
}

/// Bytes as lowercase hex: digests, fingerprints, generated keys.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A tenant's secret keys, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Keys {
    pub publish: Vec<Key>,
    pub management: Vec<Key>,
}

impl Keys {
    /// Whether `presented` is one of the live management keys (each compared in constant time).
    pub(crate) fn manages(&self, presented: &str) -> bool {
        let now = crate::clock::now_millis();
        self.management.iter().filter(|k| k.live(now)).fold(false, |any, k| any | k.digest.matches(presented))
    }
}

/// Where a tenant is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `config.toml`: applied at start, read-only through the API.
    Config,
    /// Created through the admin API; kept in the control-plane store.
    Api { created_at: u64 },
}

/// One tenant, shared by every connection and publish request of it.
pub(crate) struct Tenant {
    pub id: Arc<str>,
    /// Dense index, used in hub keys instead of the id string; never reused.
    pub index: u32,
    /// Settings. Its `publish_key` and `management_key` are not used after start: the
    /// registry keeps the keys' digests.
    pub config: TenantConfig,
    pub source: Source,
    /// Which version of its settings this is: 0 at creation, one more per change.
    pub revision: u64,
    /// Its quotas on this node (`[limits]` with the tenant's overrides) and their state.
    pub quota: Arc<Quota>,
    pub auth: Authenticator,
    pub metrics: Arc<TenantMetrics>,
    /// Interned subscriber attribute sets of this tenant's connections.
    pub segments: Arc<Segments>,
}

impl Tenant {
    /// Whether a browser `Origin` header value may connect to this tenant.
    pub(crate) fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let allowed = &self.config.allowed_origins;
        if allowed.is_empty() {
            return true;
        }
        let Some(origin) = origin else { return false };
        allowed.iter().any(|a| origin_matches(a, origin))
    }
}

fn origin_matches(allowed: &str, origin: &str) -> bool {
    if allowed.eq_ignore_ascii_case(origin) {
        return true;
    }
    // `https://*.example.com` matches `https://a.example.com` but not `https://example.com`.
    let Some((scheme, host)) = allowed.split_once("://*.") else {
        return false;
    };
    let Some(rest) = origin.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) else {
        return false;
    };
    rest.len() > host.len() + 1 && rest.to_ascii_lowercase().ends_with(&format!(".{}", host.to_ascii_lowercase()))
}

/// Every tenant of the node. Readers clone an `Arc` of the current registry; a change
/// builds a new one and swaps it in.
pub(crate) struct Tenants {
    /// Held only to clone or swap the `Arc`, never across a lookup or an await.
    current: RwLock<Arc<Registry>>,
    next_index: AtomicU32,
    /// `[limits]`: every tenant's quotas unless it overrides them.
    defaults: TenantLimits,
}

#[derive(Default, Clone)]
struct Registry {
    by_id: HashMap<Arc<str>, Entry>,
    /// Every publish key of every tenant, with when it stops working.
    by_key: HashMap<KeyDigest, (Arc<Tenant>, Option<u64>)>,
}

#[derive(Clone)]
struct Entry {
    tenant: Arc<Tenant>,
    keys: Keys,
}

/// Why a tenant could not be added.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TenantError {
    #[error("tenant {0:?} already exists")]
    Exists(String),
    #[error("the publish key is already used by another tenant")]
    KeyInUse,
}

impl Tenants {
    pub(crate) fn from_config(config: &Config) -> Self {
        let tenants = Self { current: RwLock::default(), next_index: AtomicU32::new(0), defaults: config.limits };
        for (id, tc) in &config.tenants {
            let keys = Keys {
                publish: vec![Key::new(KeyDigest::of(&tc.publish_key))],
                management: tc.management_key.as_deref().map(|k| Key::new(KeyDigest::of(k))).into_iter().collect(),
            };
            tenants.add(id, tc.clone(), keys, Source::Config).expect("config validation makes ids and keys unique");
        }
        tenants
    }

    fn snapshot(&self) -> Arc<Registry> {
        self.current.read().expect("tenants lock").clone()
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Tenant>> {
        self.snapshot().by_id.get(id).map(|e| e.tenant.clone())
    }

    /// The tenant whose live publish key is `key`.
    pub(crate) fn by_publish_key(&self, key: &str) -> Option<Arc<Tenant>> {
        let registry = self.snapshot();
        let (tenant, expires_at) = registry.by_key.get(&KeyDigest::of(key))?;
        expires_at.is_none_or(|t| crate::clock::now_millis() < t).then(|| tenant.clone())
    }

    /// A tenant's keys.
    pub(crate) fn keys(&self, id: &str) -> Option<Keys> {
        self.snapshot().by_id.get(id).map(|e| e.keys.clone())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.snapshot().by_id.is_empty()
    }

    /// The tenant whose Pusher app `matches` (app ids and keys are unique across tenants),
    /// with that app; no list of every tenant is made.
    pub(crate) fn with_pusher(
        &self,
        matches: impl Fn(&crate::config::PusherCredentials) -> bool,
    ) -> Option<(Arc<Tenant>, crate::config::PusherCredentials)> {
        let snapshot = self.snapshot();
        let tenants = snapshot.by_id.values().map(|e| &e.tenant);
        tenants
            .into_iter()
            .find_map(|t| t.config.pusher.as_ref().filter(|p| matches(p)).map(|p| (t.clone(), p.clone())))
    }

    pub(crate) fn all(&self) -> Vec<Arc<Tenant>> {
        self.snapshot().by_id.values().map(|e| e.tenant.clone()).collect()
    }

    /// Replaces a tenant's keys (a rotation): old keys not in `keys` stop working at once.
    pub(crate) fn set_keys(&self, id: &str, keys: Keys) -> Result<(), TenantError> {
        let mut current = self.current.write().expect("tenants lock");
        let Some(entry) = current.by_id.get(id) else { return Ok(()) };
        let tenant = entry.tenant.clone();
        if keys.publish.iter().any(|k| current.by_key.get(&k.digest).is_some_and(|(t, _)| t.id != tenant.id)) {
            return Err(TenantError::KeyInUse);
        }
        let mut next = Registry::clone(&current);
        for old in &entry.keys.publish {
            next.by_key.remove(&old.digest);
        }
        for k in &keys.publish {
            next.by_key.insert(k.digest, (tenant.clone(), k.expires_at));
        }
        next.by_id.insert(tenant.id.clone(), Entry { tenant, keys });
        *current = Arc::new(next);
        Ok(())
    }

    /// Adds a tenant under a new index.
    pub(crate) fn add(
        &self,
        id: &str,
        config: TenantConfig,
        keys: Keys,
        source: Source,
    ) -> Result<Arc<Tenant>, TenantError> {
        let mut current = self.current.write().expect("tenants lock");
        if current.by_id.contains_key(id) {
            return Err(TenantError::Exists(id.to_owned()));
        }
        if keys.publish.iter().any(|k| current.by_key.contains_key(&k.digest)) {
            return Err(TenantError::KeyInUse);
        }
        let tenant = Arc::new(Tenant {
            id: Arc::from(id),
            index: self.next_index.fetch_add(1, Relaxed),
            auth: Authenticator::new(&config.auth, None),
            quota: Arc::new(Quota::new(self.defaults.with(&config.limits))),
            config,
            source,
            revision: 0,
            metrics: Arc::default(),
            segments: Arc::default(),
        });
        let mut next = Registry::clone(&current);
        for k in &keys.publish {
            next.by_key.insert(k.digest, (tenant.clone(), k.expires_at));
        }
        next.by_id.insert(tenant.id.clone(), Entry { tenant: tenant.clone(), keys });
        *current = Arc::new(next);
        Ok(tenant)
    }

    /// Gives a tenant new settings (`revision`): new connections and publishes see them,
    /// while its index, counters, interned segments and quota state carry over; open
    /// connections keep the settings they started with. The quota's limits change in place.
    pub(crate) fn reconfigure(&self, id: &str, config: TenantConfig, revision: u64) -> Option<Arc<Tenant>> {
        let mut current = self.current.write().expect("tenants lock");
        let old = current.by_id.get(id)?.clone();
        let t = &old.tenant;
        let tenant = Arc::new(Tenant {
            id: t.id.clone(),
            index: t.index,
            auth: Authenticator::new(&config.auth, Some(&t.auth)),
            source: t.source,
            revision,
            quota: t.quota.clone(),
            metrics: t.metrics.clone(),
            segments: t.segments.clone(),
            config,
        });
        tenant.quota.set_limits(self.defaults.with(&tenant.config.limits));
        let mut next = Registry::clone(&current);
        for k in &old.keys.publish {
            next.by_key.insert(k.digest, (tenant.clone(), k.expires_at));
        }
        next.by_id.insert(tenant.id.clone(), Entry { tenant: tenant.clone(), keys: old.keys });
        *current = Arc::new(next);
        Some(tenant)
    }

    /// Removes a tenant: its keys stop working at once.
    pub(crate) fn remove(&self, id: &str) -> Option<Arc<Tenant>> {
        let mut current = self.current.write().expect("tenants lock");
        let entry = current.by_id.get(id)?.clone();
        let mut next = Registry::clone(&current);
        next.by_id.remove(id);
        for k in &entry.keys.publish {
            next.by_key.remove(&k.digest);
        }
        *current = Arc::new(next);
        Some(entry.tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(origin_matches("https://app.example.com", "https://app.example.com"));
        assert!(origin_matches("https://*.example.com", "https://a.example.com"));
        assert!(!origin_matches("https://*.example.com", "https://example.com"));
        assert!(!origin_matches("https://*.example.com", "http://a.example.com"));
        assert!(!origin_matches("https://*.example.com", "https://a.evilexample.com"));
    }

    #[test]
    fn keys_match_only_themselves() {
        let d = KeyDigest::of("a-long-publish-key");
        assert!(d.matches("a-long-publish-key"));
        assert!(!d.matches("a-long-publish-kez"));
        assert!(!d.matches(""));
        assert_eq!(KeyDigest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(d.fingerprint().len(), 16);
        assert!(!format!("{d:?}").contains(&d.to_hex()), "debug output shows only the fingerprint");
    }

    #[test]
    fn the_registry_adds_and_removes_at_runtime() {
        let config = Config::from_toml("[tenants.a]\npublish_key = \"a-key-123\"\n", "test", []).unwrap();
        let tenants = Tenants::from_config(&config);
        let a = tenants.get("a").unwrap();
        assert!(Arc::ptr_eq(&tenants.by_publish_key("a-key-123").unwrap(), &a));
        let keys = |k: &str| Keys { publish: vec![Key::new(KeyDigest::of(k))], management: Vec::new() };
        let b = tenants.add("b", a.config.clone(), keys("b-key-123"), Source::Api { created_at: 1 }).unwrap();
        assert_ne!(a.index, b.index);
        let again = tenants.add("b", a.config.clone(), keys("b-key-456"), Source::Config);
        assert!(matches!(again, Err(TenantError::Exists(_))));
        let reuse = keys("a-key-123");
        assert!(matches!(tenants.add("c", a.config.clone(), reuse, Source::Config), Err(TenantError::KeyInUse)));
        assert_eq!(tenants.all().len(), 2);
        // A rotation with overlap: the old key works until it expires, the new one at once.
        let expired = Key { digest: KeyDigest::of("b-key-123"), expires_at: Some(1) };
        let rotated = Keys { publish: vec![Key::new(KeyDigest::of("b-key-new")), expired], management: Vec::new() };
        tenants.set_keys("b", rotated).unwrap();
        assert!(tenants.by_publish_key("b-key-new").is_some());
        assert!(tenants.by_publish_key("b-key-123").is_none(), "past its expiry");
        assert!(matches!(tenants.set_keys("b", keys("a-key-123")), Err(TenantError::KeyInUse)));
        assert!(tenants.remove("b").is_some());
        assert!(tenants.by_publish_key("b-key-new").is_none() && tenants.get("b").is_none());
        assert!(tenants.remove("b").is_none());
    }
}
