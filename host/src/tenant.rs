//! Tenants: their keys, authenticator, policies and metrics, looked up by id or publish key.

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::config::{Config, TenantConfig};
use crate::metrics::TenantMetrics;
use crate::segment::Segments;

/// One tenant, shared by every connection and publish request of it.
pub(crate) struct Tenant {
    pub id: Arc<str>,
    /// Dense index, used in hub keys instead of the id string.
    pub index: u32,
    pub config: TenantConfig,
    pub auth: Authenticator,
    pub metrics: TenantMetrics,
    /// Interned subscriber attribute sets of this tenant's connections.
    pub segments: Segments,
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

/// Every configured tenant.
pub(crate) struct Tenants {
    by_id: HashMap<Arc<str>, Arc<Tenant>>,
    by_key: HashMap<String, Arc<Tenant>>,
}

impl Tenants {
    pub(crate) fn from_config(config: &Config) -> Self {
        let mut by_id = HashMap::new();
        let mut by_key = HashMap::new();
        for (index, (id, tc)) in config.tenants.iter().enumerate() {
            let tenant = Arc::new(Tenant {
                id: Arc::from(id.as_str()),
                index: u32::try_from(index).expect("fewer than 2^32 tenants"),
                config: tc.clone(),
                auth: Authenticator::new(&tc.auth),
                metrics: TenantMetrics::default(),
                segments: Segments::default(),
            });
            by_key.insert(tc.publish_key.clone(), tenant.clone());
            by_id.insert(tenant.id.clone(), tenant);
        }
        Self { by_id, by_key }
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.by_id.get(id)
    }

    /// The tenant whose publish key is `key`.
    pub(crate) fn by_publish_key(&self, key: &str) -> Option<&Arc<Tenant>> {
        self.by_key.get(key)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> + Clone {
        self.by_id.values()
    }
}

#[cfg(test)]
mod tests {
    use super::origin_matches;

    #[test]
    fn origins() {
        assert!(origin_matches("https://app.example.com", "https://app.example.com"));
        assert!(origin_matches("https://*.example.com", "https://a.example.com"));
        assert!(!origin_matches("https://*.example.com", "https://example.com"));
        assert!(!origin_matches("https://*.example.com", "http://a.example.com"));
        assert!(!origin_matches("https://*.example.com", "https://a.evilexample.com"));
    }
}
