//! Outbound webhooks (docs/WEBHOOKS.md): what happened on the real-time side told to each
//! tenant's endpoints, signed per Standard Webhooks, batched, retried with backoff, and
//! dead-lettered when an endpoint keeps failing.
//!
//! [`Webhooks`] holds the node's endpoints by tenant; [`Webhooks::emit`] hands a notice to
//! each endpoint of its tenant that wants its kind, without waiting. Each endpoint keeps a
//! bounded queue and one task that sends its batches in order (`endpoint`), so a slow
//! endpoint delays only itself; requests go out through `post` (through `outbound`, addresses
//! checked against `webhooks.allow_private`); batches given up on wait in the tenant's
//! dead letters (`dead`).

mod dead;
mod endpoint;
mod notice;
mod post;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub(crate) use dead::{DeadLetter, DeadLetters};
use endpoint::{Endpoint, EndpointMetrics};
use notice::Settle;
pub(crate) use notice::{Kind, Notice};
use post::Poster;

use crate::config::{Config, WebhooksConfig};
use crate::metrics::header;

/// One counter of an endpoint's metrics.
type Counter = fn(&EndpointMetrics) -> &AtomicU64;

/// A tenant's endpoints and dead letters.
struct TenantHooks {
    endpoints: Vec<Arc<Endpoint>>,
    /// The kinds any of them wants, as [`Kind::bit`]s.
    kinds: u32,
    dead: Arc<DeadLetters>,
}

/// The node's webhook endpoints, by tenant (those of the configuration file).
pub(crate) struct Webhooks {
    tenants: HashMap<Arc<str>, TenantHooks>,
    poster: Arc<Poster>,
    config: WebhooksConfig,
}

impl Webhooks {
    /// The endpoints of the tenants in `config`; requests over TLS use `crypto`.
    pub(crate) fn new(config: &Config, crypto: rustls::crypto::CryptoProvider) -> Self {
        let tenants = config
            .tenants
            .iter()
            .filter(|(_, t)| !t.webhooks.is_empty())
            .map(|(id, t)| {
                let id: Arc<str> = id.as_str().into();
                let dead = Arc::new(DeadLetters::new(config.webhooks.dead_letters));
                let endpoints: Vec<Arc<Endpoint>> = (t.webhooks.iter().enumerate())
                    .map(|(i, e)| Arc::new(Endpoint::new(id.clone(), i, e, config.webhooks.queue, dead.clone())))
                    .collect();
                let kinds = endpoints.iter().fold(0, |kinds, e| kinds | e.kinds);
                (id, TenantHooks { endpoints, kinds, dead })
            })
            .collect();
        Self { tenants, poster: Arc::new(Poster::new(&config.webhooks, crypto)), config: config.webhooks.clone() }
    }

    /// Whether any endpoint of `tenant` wants notices of any of `kinds` ([`Kind::bit`]s).
    pub(crate) fn wants(&self, tenant: &str, kinds: u32) -> bool {
        self.tenants.get(tenant).is_some_and(|t| t.kinds & kinds != 0)
    }

    /// Queues `notice` for every endpoint of `tenant` that wants its kind.
    pub(crate) fn emit(&self, tenant: &str, notice: Notice) {
        self.emit_then(tenant, notice, Box::new(|| {}));
    }

    /// Queues `notice` like [`Webhooks::emit`]; `then` runs once every endpoint it went to
    /// has delivered or dead-lettered it (at once if none wants it).
    pub(crate) fn emit_then(&self, tenant: &str, mut notice: Notice, then: Box<dyn FnOnce() + Send>) {
        let bit = notice.kind.bit();
        let endpoints: Vec<&Arc<Endpoint>> = match self.tenants.get(tenant) {
            Some(hooks) => hooks.endpoints.iter().filter(|e| e.kinds & bit != 0).collect(),
            None => Vec::new(),
        };
        notice.settle = Some(Settle::new(endpoints.len(), then));
        for endpoint in endpoints {
            endpoint.push(notice.clone());
        }
    }

    /// The tenants with an endpoint that wants any of `kinds` ([`Kind::bit`]s).
    pub(crate) fn tenants_wanting(&self, kinds: u32) -> impl Iterator<Item = &str> {
        self.tenants.iter().filter(move |(_, t)| t.kinds & kinds != 0).map(|(id, _)| &**id)
    }

    /// The endpoints' sending tasks, for the node to run.
    pub(crate) fn tasks(&self) -> impl Iterator<Item = impl Future<Output = ()> + Send + 'static> + '_ {
        let endpoints = self.tenants.values().flat_map(|t| t.endpoints.iter());
        endpoints.map(|e| e.clone().run(self.poster.clone(), self.config.clone()))
    }

    /// Each endpoint's counters, labelled by tenant and the endpoint's index in its
    /// tenant's list.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        let endpoints: Vec<&Endpoint> = self.tenants.values().flat_map(|t| t.endpoints.iter().map(|e| &**e)).collect();
        if endpoints.is_empty() {
            return;
        }
        let labels = |e: &Endpoint| format!("tenant=\"{}\",endpoint=\"{}\"", e.tenant, e.index);
        let counters: [(&str, &str, Counter); 4] = [
            ("notify_webhook_events_sent_total", "Webhook events delivered (in requests answered 2xx).", |m| &m.sent),
            ("notify_webhook_requests_failed_total", "Webhook requests that failed (no answer, or not 2xx).", |m| {
                &m.failed
            }),
            ("notify_webhook_requests_retried_total", "Webhook requests sent again after a failure.", |m| &m.retried),
            (
                "notify_webhook_events_dead_lettered_total",
                "Webhook events given up on (retried too long, refused address, queue full).",
                |m| &m.dead_lettered,
            ),
        ];
        for (name, help, counter) in counters {
            header(out, name, "counter", help);
            for e in &endpoints {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(e), counter(&e.metrics).load(Relaxed));
            }
        }
        let name = "notify_webhook_queued";
        header(out, name, "gauge", "Webhook events waiting to be sent.");
        for e in &endpoints {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(e), e.queued());
        }
        let name = "notify_webhook_latency_seconds";
        header(
            out,
            name,
            "histogram",
            "From a webhook event happening to the request that delivered it being answered.",
        );
        for e in &endpoints {
            e.metrics.latency.render(out, name, &labels(e));
        }
    }

    /// `tenant`'s dead letters, if it has endpoints.
    pub(crate) fn dead_letters(&self, tenant: &str) -> Option<&DeadLetters> {
        self.tenants.get(tenant).map(|t| &*t.dead)
    }

    /// Sends dead letter `id` of `tenant` again, through the endpoint it failed at; false
    /// when there is no such letter.
    pub(crate) fn replay(&self, tenant: &str, id: &str) -> bool {
        let Some(hooks) = self.tenants.get(tenant) else { return false };
        let Some(letter) = hooks.dead.take(id) else { return false };
        let endpoint = &hooks.endpoints[letter.endpoint];
        for notice in letter.notices {
            endpoint.push(notice);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_wants_the_kinds_any_of_its_endpoints_wants() {
        let toml = |events: &str| {
            format!(
                "[tenants.a]\npublish_key = \"a-key-123\"\nwebhooks = [\
                 {{ url = \"https://a.example\", secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", events = [{events}] }},\
                 {{ url = \"https://b.example\", secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", events = [\"event.acked\"] }}]\n"
            )
        };
        #[allow(deprecated)]
        let crypto = || rustls::crypto::ring::default_provider();
        let hooks = Webhooks::new(&Config::from_toml(&toml("\"user.online\""), "test", []).unwrap(), crypto());
        assert!(hooks.wants("a", Kind::UserOnline.bit()) && hooks.wants("a", Kind::EventAcked.bit()));
        assert!(!hooks.wants("a", Kind::UserOffline.bit()) && !hooks.wants("b", Kind::UserOnline.bit()));
        let every = Webhooks::new(&Config::from_toml(&toml(""), "test", []).unwrap(), crypto());
        let (on, opt_in): (Vec<&Kind>, Vec<&Kind>) = Kind::ALL.iter().partition(|k| every.wants("a", k.bit()));
        assert_eq!(
            opt_in,
            [&Kind::SubscriptionAdded, &Kind::SubscriptionRemoved],
            "no events listed: the default types"
        );
        assert_eq!(on.len(), Kind::ALL.len() - 2);
    }
}
