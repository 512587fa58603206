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
mod refusals;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

pub(crate) use dead::{DeadLetter, DeadLetterError, DeadLetterStore};
use dead::{DeadSlot, MemoryDeadLetters};
pub(crate) use endpoint::{Endpoint, PauseRequest, StoredSecret, StoredWebhook, WebhookPause};
use endpoint::{EndpointMetrics, Pauses};
use notice::Settle;
pub(crate) use notice::{Kind, Notice, dead_lettered};
use post::Poster;
pub(crate) use refusals::sum_up_refusals;

use crate::config::{Config, PusherCredentials, WebhooksConfig};
use tokio::sync::mpsc;

use crate::metrics::header;

/// One counter of an endpoint's metrics.
type Counter = fn(&EndpointMetrics) -> &AtomicU64;

/// A tenant's endpoints.
struct TenantHooks {
    endpoints: Vec<Arc<Endpoint>>,
}

impl TenantHooks {
    /// The kinds any of its endpoints wants, as [`Kind::bit`]s.
    fn kinds(&self) -> u32 {
        self.endpoints.iter().fold(0, |kinds, e| kinds | e.kinds.load(Relaxed))
    }
}

/// Tenants by id.
type ByTenant = HashMap<Arc<str>, Arc<TenantHooks>>;

/// The node's webhook endpoints, by tenant: the configuration file's, and those created
/// through the admin API (kept in the control-plane store, so every node has them).
pub(crate) struct Webhooks {
    /// Replaced whole when endpoints are added, changed or removed (rare); read for every
    /// notice and held only to clone the map's `Arc`.
    tenants: RwLock<Arc<ByTenant>>,
    /// The configuration file's endpoints by tenant, kept through every change.
    configured: BTreeMap<String, Vec<StoredWebhook>>,
    poster: Arc<Poster>,
    config: WebhooksConfig,
    /// Endpoints ask to be paused here; the control plane takes the receiver.
    pauses: Pauses,
    pause_requests: Mutex<Option<mpsc::UnboundedReceiver<PauseRequest>>>,
    /// Where every endpoint's dead letters go.
    dead: DeadSlot,
}

/// Paused endpoints by tenant and endpoint id.
pub(crate) type PausedEndpoints = BTreeMap<String, BTreeMap<String, WebhookPause>>;

impl Webhooks {
    /// The endpoints of the tenants in `config`; requests over TLS use `crypto`.
    pub(crate) fn new(config: &Config, crypto: rustls::crypto::CryptoProvider) -> Self {
        let configured = (config.tenants.iter())
            .filter(|(_, t)| !t.webhooks.is_empty())
            .map(|(id, t)| {
                (id.clone(), t.webhooks.iter().enumerate().map(|(i, e)| StoredWebhook::configured(i, e)).collect())
            })
            .collect();
        let (pauses, pause_requests) = mpsc::unbounded_channel();
        let hooks = Self {
            tenants: RwLock::default(),
            configured,
            poster: Arc::new(Poster::new(&config.webhooks, crypto)),
            config: config.webhooks.clone(),
            pauses,
            pause_requests: Mutex::new(Some(pause_requests)),
            dead: Arc::new(RwLock::new(Arc::new(MemoryDeadLetters::new(config.webhooks.dead_letters)))),
        };
        hooks.sync(&BTreeMap::new(), &BTreeMap::new(), |t| Some(config.tenants.get(t).and_then(|t| t.pusher.clone())));
        hooks
    }

    fn snapshot(&self) -> Arc<ByTenant> {
        self.tenants.read().expect("webhooks lock").clone()
    }

    fn tenant(&self, tenant: &str) -> Option<Arc<TenantHooks>> {
        self.snapshot().get(tenant).cloned()
    }

    /// The requests of endpoints to be paused, for the control plane to record (once).
    pub(crate) fn pause_requests(&self) -> Option<mpsc::UnboundedReceiver<PauseRequest>> {
        self.pause_requests.lock().expect("pause requests lock").take()
    }

    /// Makes the endpoints the configuration's and `stored`'s (by tenant) of the tenants
    /// that `exists`: new ones are made (their tasks handed out by [`Webhooks::tasks`]),
    /// changed ones take their new settings, and those gone are removed (their tasks end);
    /// each is paused if `paused` says so. Returns the tenants whose wanted kinds changed:
    /// id, kinds before, kinds now.
    pub(crate) fn sync(
        &self,
        stored: &BTreeMap<String, Vec<StoredWebhook>>,
        paused: &PausedEndpoints,
        tenant_app: impl Fn(&str) -> Option<Option<PusherCredentials>>,
    ) -> Vec<(Arc<str>, u32, u32)> {
        let current = self.snapshot();
        let before: HashMap<Arc<str>, u32> = current.iter().map(|(id, t)| (id.clone(), t.kinds())).collect();
        let mut next = ByTenant::new();
        let ids = self.configured.keys().chain(stored.keys());
        for id in ids.collect::<std::collections::BTreeSet<_>>() {
            let Some(app) = tenant_app(id) else { continue };
            let specs = self.configured.get(id).into_iter().chain(stored.get(id)).flatten();
            let old = current.get(id.as_str());
            let tenant: Arc<str> = id.as_str().into();
            let endpoints = specs.map(|spec| match old.and_then(|o| o.endpoints.iter().find(|e| *e.id == spec.id)) {
                Some(e) => {
                    e.update(spec, app.as_ref());
                    e.clone()
                }
                None => {
                    let (capacity, dead) = (self.config.queue, self.dead.clone());
                    Arc::new(Endpoint::new(tenant.clone(), spec, app.as_ref(), capacity, dead))
                }
            });
            let endpoints: Vec<Arc<Endpoint>> = endpoints.collect();
            for e in &endpoints {
                e.set_pause(paused.get(id).and_then(|p| p.get(&*e.id)));
            }
            next.insert(tenant.clone(), Arc::new(TenantHooks { endpoints }));
        }
        let kept = |e: &Endpoint| next.get(&e.tenant).is_some_and(|t| t.endpoints.iter().any(|n| n.id == e.id));
        current.values().flat_map(|t| &t.endpoints).filter(|e| !kept(e)).for_each(|e| e.remove());
        let now: HashMap<Arc<str>, u32> = next.iter().map(|(id, t)| (id.clone(), t.kinds())).collect();
        *self.tenants.write().expect("webhooks lock") = Arc::new(next);
        let tenants: std::collections::BTreeSet<&Arc<str>> = before.keys().chain(now.keys()).collect();
        let kinds = |map: &HashMap<Arc<str>, u32>, id: &Arc<str>| map.get(id).copied().unwrap_or(0);
        let changed = tenants.into_iter().map(|id| (id.clone(), kinds(&before, id), kinds(&now, id)));
        changed.filter(|(_, was, is)| was != is).collect()
    }

    /// Whether any endpoint of `tenant` wants notices of any of `kinds` ([`Kind::bit`]s).
    pub(crate) fn wants(&self, tenant: &str, kinds: u32) -> bool {
        // Asked at every connect and subscription: read in place, no clone of the map's `Arc`.
        let tenants = self.tenants.read().expect("webhooks lock");
        tenants.get(tenant).is_some_and(|t| t.kinds() & kinds != 0)
    }

    /// Queues `notice` for every endpoint of `tenant` that wants its kind.
    pub(crate) fn emit(&self, tenant: &str, notice: Notice) {
        self.emit_then(tenant, notice, Box::new(|| {}));
    }

    /// Queues `notice` like [`Webhooks::emit`]; `then` runs once every endpoint it went to
    /// has delivered or dead-lettered it (at once if none wants it).
    pub(crate) fn emit_then(&self, tenant: &str, mut notice: Notice, then: Box<dyn FnOnce() + Send>) {
        let bit = notice.kind.bit();
        let hooks = self.tenant(tenant);
        let endpoints: Vec<&Arc<Endpoint>> = match &hooks {
            Some(hooks) => hooks.endpoints.iter().filter(|e| e.wants(bit)).collect(),
            None => Vec::new(),
        };
        notice.settle = Some(Settle::new(endpoints.len(), then));
        for endpoint in endpoints {
            endpoint.push(notice.clone());
        }
    }

    /// The tenants with an endpoint that wants any of `kinds` ([`Kind::bit`]s).
    pub(crate) fn tenants_wanting(&self, kinds: u32) -> Vec<Arc<str>> {
        let snapshot = self.snapshot();
        snapshot.iter().filter(|(_, t)| t.kinds() & kinds != 0).map(|(id, _)| id.clone()).collect()
    }

    /// The sending tasks of endpoints whose task has not been handed out yet, for the node
    /// to run.
    pub(crate) fn tasks(&self) -> Vec<impl Future<Output = ()> + Send + 'static> {
        let snapshot = self.snapshot();
        let endpoints = snapshot.values().flat_map(|t| t.endpoints.iter()).filter(|e| e.start());
        endpoints.map(|e| e.clone().run(self.poster.clone(), self.config.clone(), self.pauses.clone())).collect()
    }

    /// `tenant`'s endpoints: id, URL and the event types each wants, its metrics.
    pub(crate) fn endpoints(&self, tenant: &str) -> Vec<Arc<Endpoint>> {
        self.tenant(tenant).map(|t| t.endpoints.clone()).unwrap_or_default()
    }

    /// Each endpoint's counters, labelled by tenant and the endpoint's index in its
    /// tenant's list.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        let snapshot = self.snapshot();
        let endpoints: Vec<&Endpoint> = snapshot.values().flat_map(|t| t.endpoints.iter().map(|e| &**e)).collect();
        if endpoints.is_empty() {
            return;
        }
        let labels = |e: &Endpoint| format!("tenant=\"{}\",endpoint=\"{}\"", e.tenant, e.id);
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
        let name = "notify_webhook_paused";
        header(out, name, "gauge", "1 while the endpoint is paused after failing for webhooks.pause_after.");
        for e in &endpoints {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(e), u8::from(e.pause().is_some()));
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

    /// Dead letters kept per tenant (`webhooks.dead_letters`).
    pub(crate) fn dead_letter_capacity(&self) -> usize {
        self.config.dead_letters
    }

    /// Keeps dead letters in `store` from now on (the backends' shared one).
    pub(crate) fn keep_dead_letters_in(&self, store: Arc<dyn DeadLetterStore>) {
        *self.dead.write().expect("dead letters slot lock") = store;
    }

    fn dead_store(&self) -> Arc<dyn DeadLetterStore> {
        self.dead.read().expect("dead letters slot lock").clone()
    }

    /// `tenant`'s dead letters, oldest first.
    pub(crate) async fn dead_letters(&self, tenant: &str) -> Result<Vec<DeadLetter>, DeadLetterError> {
        self.dead_store().list(tenant).await
    }

    /// Sends dead letter `id` of `tenant` again, through the endpoint it failed at; false
    /// when there is no such letter (or its endpoint is gone: the letter stays).
    pub(crate) async fn replay(&self, tenant: &str, id: &str) -> Result<bool, DeadLetterError> {
        let store = self.dead_store();
        let Some(hooks) = self.tenant(tenant) else { return Ok(false) };
        let listed = store.list(tenant).await?;
        let Some(letter) = listed.iter().find(|l| l.id == id) else { return Ok(false) };
        let Some(endpoint) = hooks.endpoints.iter().find(|e| *e.id == *letter.endpoint) else { return Ok(false) };
        let Some(letter) = store.take(tenant, id).await? else { return Ok(false) };
        for notice in letter.notices {
            endpoint.push(notice);
        }
        Ok(true)
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
        let hooks =
            Webhooks::new(&Config::from_toml(&toml("\"user.online\""), "test", []).unwrap(), crate::outbound::crypto());
        assert!(hooks.wants("a", Kind::UserOnline.bit()) && hooks.wants("a", Kind::EventAcked.bit()));
        assert!(!hooks.wants("a", Kind::UserOffline.bit()) && !hooks.wants("b", Kind::UserOnline.bit()));
        let every = Webhooks::new(&Config::from_toml(&toml(""), "test", []).unwrap(), crate::outbound::crypto());
        let (on, opt_in): (Vec<&Kind>, Vec<&Kind>) = Kind::ALL.iter().partition(|k| every.wants("a", k.bit()));
        let opt_ins = [Kind::SubscriptionAdded, Kind::SubscriptionRemoved, Kind::ConnectionRefused, Kind::MemberAdded];
        let pusher_kinds = [Kind::MemberRemoved, Kind::ClientEvent, Kind::CacheMiss];
        let expected: Vec<&Kind> = opt_ins.iter().chain(&pusher_kinds).collect();
        assert_eq!(opt_in, expected, "no events listed: the default types");
        assert_eq!(on.len(), Kind::ALL.len() - 7);

        let pusher = "[tenants.a]\npublish_key = \"a-key-123\"\n\
                      pusher = { app_id = \"1\", key = \"k\", secret = \"0123456789abcdef\" }\n\
                      webhooks = [{ url = \"https://a.example\", format = \"pusher\" }]\n";
        let pusher = Webhooks::new(&Config::from_toml(pusher, "test", []).unwrap(), crate::outbound::crypto());
        let wanted: Vec<&str> = Kind::ALL.iter().filter(|k| pusher.wants("a", k.bit())).map(|k| k.name()).collect();
        assert_eq!(wanted, crate::config::WEBHOOK_EVENTS_PUSHER, "a pusher endpoint: the types Pusher sends");
    }
}
