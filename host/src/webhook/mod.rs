//! Outbound webhooks (docs/WEBHOOKS.md): what happened on the real-time side told to each
//! tenant's endpoints, signed per Standard Webhooks, batched, retried with backoff, and
//! dead-lettered when an endpoint keeps failing.
//!
//! [`Webhooks`] holds the node's endpoints by tenant; [`Webhooks::emit`] hands a notice to
//! each endpoint of its tenant that wants its kind, without waiting. Each endpoint keeps a
//! bounded queue and one task that sends its batches in order (`endpoint`), so a slow
//! endpoint delays only itself; requests go out through `post` (plain or TLS, addresses
//! checked against `webhooks.allow_private`); batches given up on wait in the tenant's
//! dead letters (`dead`).

mod dead;
mod endpoint;
mod notice;
mod post;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

pub(crate) use dead::{DeadLetter, DeadLetters};
pub(crate) use endpoint::{Endpoint, EndpointMetrics};
pub(crate) use notice::{Kind, Notice};
use post::Poster;

use crate::config::{Config, WebhookEndpoint, WebhooksConfig};

/// A tenant's endpoints and dead letters.
struct TenantHooks {
    endpoints: Vec<Arc<Endpoint>>,
    dead: Arc<DeadLetters>,
}

/// The node's webhook endpoints, by tenant (those of the configuration file).
pub(crate) struct Webhooks {
    tenants: HashMap<Arc<str>, TenantHooks>,
    poster: Arc<Poster>,
    config: WebhooksConfig,
}

impl Webhooks {
    pub(crate) fn new(config: &Config) -> Self {
        let tenants = config
            .tenants
            .iter()
            .filter(|(_, t)| !t.webhooks.is_empty())
            .map(|(id, t)| {
                let id: Arc<str> = id.as_str().into();
                let dead = Arc::new(DeadLetters::new(config.webhooks.dead_letters));
                let endpoints = t
                    .webhooks
                    .iter()
                    .map(|e| Arc::new(Endpoint::new(id.clone(), e, config.webhooks.queue, dead.clone())))
                    .collect();
                (id, TenantHooks { endpoints, dead })
            })
            .collect();
        Self { tenants, poster: Arc::new(Poster::new(&config.webhooks)), config: config.webhooks.clone() }
    }

    /// Whether any endpoint of `tenant` wants notices of `kind`.
    pub(crate) fn wants(&self, tenant: &str, kind: Kind) -> bool {
        let probe = Notice { id: String::new(), kind, at_ms: 0, data: serde_json::Value::Null };
        self.tenants.get(tenant).is_some_and(|t| t.endpoints.iter().any(|e| e.wants(&probe)))
    }

    /// Queues `notice` for every endpoint of `tenant` that wants its kind.
    pub(crate) fn emit(&self, tenant: &str, notice: Notice) {
        let Some(hooks) = self.tenants.get(tenant) else { return };
        for endpoint in hooks.endpoints.iter().filter(|e| e.wants(&notice)) {
            endpoint.push(notice.clone());
        }
    }

    /// The endpoints' sending tasks, for the node to run.
    pub(crate) fn tasks(&self) -> impl Iterator<Item = impl Future<Output = ()> + Send + 'static> + '_ {
        let endpoints = self.tenants.values().flat_map(|t| t.endpoints.iter());
        endpoints.map(|e| e.clone().run(self.poster.clone(), self.config.clone()))
    }

    /// Every endpoint with its tenant and its index among the tenant's endpoints.
    pub(crate) fn endpoints(&self) -> impl Iterator<Item = (usize, &Arc<Endpoint>)> {
        self.tenants.values().flat_map(|t| t.endpoints.iter().enumerate())
    }

    /// `tenant`'s dead letters, if it has endpoints.
    pub(crate) fn dead_letters(&self, tenant: &str) -> Option<&DeadLetters> {
        self.tenants.get(tenant).map(|t| &*t.dead)
    }

    /// Sends dead letter `id` of `tenant` again, through the endpoint it failed at; false
    /// when there is no such letter (or its endpoint is gone).
    pub(crate) fn replay(&self, tenant: &str, id: &str) -> bool {
        let Some(hooks) = self.tenants.get(tenant) else { return false };
        let Some(letter) = hooks.dead.take(id) else { return false };
        let Some(endpoint) = hooks.endpoints.iter().find(|e| e.url.to_string() == letter.url) else { return false };
        for notice in letter.notices {
            endpoint.push(notice);
        }
        true
    }
}

/// Checks an endpoint's settings; an error names the field and says why.
pub(crate) fn check_endpoint(e: &WebhookEndpoint) -> Result<(), (&'static str, String)> {
    let url: hyper::Uri = e.url.parse().map_err(|err| ("url", format!("not a URL: {err}")))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none_or(str::is_empty) {
        return Err(("url", "must be http://HOST[:PORT]/... or https://...".into()));
    }
    let secret = e.secret.strip_prefix("whsec_").ok_or(("secret", "must start with whsec_".to_string()))?;
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, secret)
        .map_err(|err| ("secret", format!("whsec_ must be followed by base64: {err}")))?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(("secret", format!("must hold 24 to 64 bytes, not {}", bytes.len())));
    }
    if let Some(unknown) = e.events.iter().find(|name| Kind::named(name).is_none()) {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        return Err(("events", format!("{unknown:?} is not an event type ({})", known.join(", "))));
    }
    if !(1..=1000).contains(&e.batch.max_events) {
        return Err(("batch.max_events", "must be 1 to 1000".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebhookBatch;

    fn endpoint(url: &str, secret: &str, events: &[&str]) -> WebhookEndpoint {
        let events = events.iter().map(|e| e.to_string()).collect();
        WebhookEndpoint { url: url.into(), secret: secret.into(), events, batch: WebhookBatch::default() }
    }

    #[test]
    fn endpoints_are_checked_field_by_field() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert_eq!(check_endpoint(&endpoint("https://example.com/hooks", secret, &["user.online"])), Ok(()));
        let field = |e: WebhookEndpoint| check_endpoint(&e).unwrap_err().0;
        assert_eq!(field(endpoint("ftp://example.com", secret, &[])), "url");
        assert_eq!(field(endpoint("https://", secret, &[])), "url");
        assert_eq!(field(endpoint("https://example.com", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &[])), "secret");
        assert_eq!(field(endpoint("https://example.com", "whsec_c2hvcnQ=", &[])), "secret");
        assert_eq!(field(endpoint("https://example.com", secret, &["user.away"])), "events");
    }
}
