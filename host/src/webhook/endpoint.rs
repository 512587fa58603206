//! One webhook endpoint: its bounded queue of notices, and the task that sends them in
//! batches, in order, retrying a failed batch with exponential backoff and jitter until
//! `webhooks.retry_for` has passed, then dead-lettering it. While a batch is retried, new
//! notices wait behind it; when the queue is full, the oldest are dead-lettered.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Uri;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use super::dead::{DeadLetter, DeadSlot};
use super::notice::{self, Notice};
use super::post::Poster;
use crate::config::{PusherCredentials, WebhookFormat};
use crate::config::{WebhookBatch, WebhooksConfig};
use crate::metrics::Histogram;

/// What an endpoint did, for `/metrics`.
#[derive(Default)]
pub(crate) struct EndpointMetrics {
    /// Notices delivered (in requests answered 2xx).
    pub sent: AtomicU64,
    /// Requests that failed (no answer, or not 2xx).
    pub failed: AtomicU64,
    /// Requests sent again after a failure.
    pub retried: AtomicU64,
    /// Notices given up on: retried for too long, refused address, or pushed out of a full queue.
    pub dead_lettered: AtomicU64,
    /// From a notice happening to the request that delivered it being answered.
    pub latency: Histogram,
}

/// An endpoint as the control-plane store keeps it (and as the configuration file's are
/// made into): what it wants, where, and the secrets it signs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredWebhook {
    /// `we_` and 64 random bits in hex; a configured endpoint's is its index in the file.
    pub id: String,
    pub url: String,
    /// Empty: the default event types.
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub batch: WebhookBatch,
    /// The current secret first; rotated-out ones sign too until they expire.
    pub secrets: Vec<StoredSecret>,
    /// Seconds since the Unix epoch (0 for configured endpoints).
    #[serde(default)]
    pub created_at: u64,
    /// Pusher's format is signed with the tenant's Pusher app, not `secrets`.
    #[serde(default, skip_serializing_if = "WebhookFormat::is_standard")]
    pub format: WebhookFormat,
}

/// A signing secret (`whsec_...`), and when a rotated-out one stops signing (ms since the
/// Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredSecret {
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl StoredWebhook {
    /// The `index`th endpoint of a tenant's configuration.
    pub(crate) fn configured(index: usize, config: &crate::config::WebhookEndpoint) -> Self {
        Self {
            id: index.to_string(),
            url: config.url.clone(),
            events: config.events.clone(),
            batch: config.batch,
            secrets: match config.format {
                WebhookFormat::Standard => vec![StoredSecret { secret: config.secret.clone(), expires_at: None }],
                WebhookFormat::Pusher => Vec::new(),
            },
            created_at: 0,
            format: config.format,
        }
    }

    /// The kinds it wants, as [`super::Kind::bit`]s.
    pub(crate) fn kinds(&self) -> u32 {
        match self.events.is_empty() {
            true => super::Kind::defaults(self.format),
            false => super::Kind::bits(self.events.iter().map(String::as_str)),
        }
    }
}

/// Why and since when an endpoint is paused (kept in the control-plane store: every node
/// pauses it, and it stays paused across restarts until resumed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookPause {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub reason: String,
}

/// A node's request to pause an endpoint of a tenant, for the control plane to record.
#[derive(Debug)]
pub(crate) struct PauseRequest {
    pub tenant: Arc<str>,
    pub endpoint: Arc<str>,
    pub pause: WebhookPause,
}

/// What can change while an endpoint runs.
struct Settings {
    spec: StoredWebhook,
    url: Uri,
    /// The current secret's signer first; rotated-out ones with when they stop signing.
    signers: Vec<(standardwebhooks::Webhook, Option<u64>)>,
    /// The tenant's Pusher app, for the Pusher format.
    pusher: Option<PusherCredentials>,
    batch: WebhookBatch,
}

impl Settings {
    fn of(spec: &StoredWebhook, pusher: Option<&PusherCredentials>) -> Self {
        let signers = spec.secrets.iter().filter_map(|s| {
            // Secrets are checked before they are stored; one that is not valid signs nothing.
            Some((standardwebhooks::Webhook::new(&s.secret).ok()?, s.expires_at))
        });
        Self {
            spec: spec.clone(),
            url: spec.url.parse().unwrap_or_default(),
            signers: signers.collect(),
            pusher: pusher.filter(|_| spec.format == WebhookFormat::Pusher).cloned(),
            batch: spec.batch,
        }
    }

    /// The request's body and headers for `batch` (Standard Webhooks' `id`, or Pusher's).
    fn request(&self, tenant: &str, id: &str, batch: &[Notice]) -> Option<(Bytes, Vec<(&'static str, String)>)> {
        if self.spec.format == WebhookFormat::Pusher {
            let PusherCredentials { key, secret, .. } = self.pusher.as_ref()?;
            let body = notice::pusher_body(batch);
            let signature = crate::protocol::pusher::sign_bytes(secret, &body);
            return Some((Bytes::from(body), vec![("x-pusher-key", key.clone()), ("x-pusher-signature", signature)]));
        }
        let body = Bytes::from(notice::body(tenant, batch));
        let timestamp = notice::unix_seconds();
        let headers = vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", self.sign(id, timestamp, &body)),
        ];
        Some((body, headers))
    }

    /// `webhook-signature`: one `v1,...` per secret still signing, separated by spaces (the
    /// receiver accepts the request if any verifies).
    fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let now = crate::clock::now_millis();
        let live = self.signers.iter().filter(|(_, expires)| expires.is_none_or(|at| at > now));
        let signatures = live.filter_map(|(signer, _)| signer.sign(id, timestamp, body).ok());
        signatures.collect::<Vec<_>>().join(" ")
    }
}

/// Where endpoints send their requests to be paused; unbounded, but each endpoint sends at
/// most one per failed request, and those are spaced by the backoff.
pub(crate) type Pauses = mpsc::UnboundedSender<PauseRequest>;

/// An endpoint of one tenant.
pub(crate) struct Endpoint {
    pub tenant: Arc<str>,
    pub id: Arc<str>,
    /// Replaced whole when the endpoint is changed; read once per batch and per attempt.
    settings: RwLock<Arc<Settings>>,
    /// The kinds it wants, as [`super::Kind::bit`]s; read for every notice.
    pub kinds: AtomicU32,
    /// Notices waiting to be sent, oldest first; at most `capacity` (the rest are
    /// dead-lettered). Locked only to push or take, never across an await.
    queue: Mutex<VecDeque<Notice>>,
    capacity: usize,
    /// Wakes the endpoint's task when a notice is queued or the endpoint is removed.
    wake: Notify,
    /// Set once its task was handed out to run.
    started: AtomicBool,
    /// Set when the endpoint was deleted: its task ends after the batch in hand.
    removed: AtomicBool,
    /// Set while the control-plane state pauses it; read once per batch and per attempt.
    paused: RwLock<Option<WebhookPause>>,
    /// Milliseconds since the Unix epoch of the first failure since the last success (0:
    /// the last request succeeded).
    failing_since_ms: AtomicU64,
    dead: DeadSlot,
    pub metrics: EndpointMetrics,
}

impl Endpoint {
    /// `pusher`: the tenant's Pusher app, which signs the Pusher format.
    pub(crate) fn new(
        tenant: Arc<str>,
        spec: &StoredWebhook,
        pusher: Option<&PusherCredentials>,
        capacity: usize,
        dead: DeadSlot,
    ) -> Self {
        Self {
            tenant,
            id: spec.id.as_str().into(),
            settings: RwLock::new(Arc::new(Settings::of(spec, pusher))),
            kinds: AtomicU32::new(spec.kinds()),
            queue: Mutex::new(VecDeque::new()),
            capacity,
            wake: Notify::new(),
            started: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            paused: RwLock::new(None),
            failing_since_ms: AtomicU64::new(0),
            dead,
            metrics: EndpointMetrics::default(),
        }
    }

    /// Takes `spec`'s settings (URL, events, batching, secrets, the tenant's Pusher app) from
    /// the next batch on.
    pub(crate) fn update(&self, spec: &StoredWebhook, pusher: Option<&PusherCredentials>) {
        *self.settings.write().expect("webhook settings lock") = Arc::new(Settings::of(spec, pusher));
        self.kinds.store(spec.kinds(), Relaxed);
    }

    fn settings(&self) -> Arc<Settings> {
        self.settings.read().expect("webhook settings lock").clone()
    }

    /// What it was made or last changed with.
    pub(crate) fn spec(&self) -> StoredWebhook {
        self.settings().spec.clone()
    }

    pub(crate) fn url(&self) -> String {
        self.settings().url.to_string()
    }

    pub(crate) fn wants(&self, bit: u32) -> bool {
        self.kinds.load(Relaxed) & bit != 0
    }

    /// Pauses or resumes it as the control-plane state says; a resumed endpoint starts
    /// counting failures afresh.
    pub(crate) fn set_pause(&self, pause: Option<&WebhookPause>) {
        let mut paused = self.paused.write().expect("webhook pause lock");
        if paused.is_some() && pause.is_none() {
            self.failing_since_ms.store(0, Relaxed);
        }
        *paused = pause.cloned();
    }

    pub(crate) fn pause(&self) -> Option<WebhookPause> {
        self.paused.read().expect("webhook pause lock").clone()
    }

    /// True the first time: the caller runs its task.
    pub(crate) fn start(&self) -> bool {
        !self.started.swap(true, Relaxed)
    }

    /// Ends its task after the batch in hand; what is still queued is let go.
    pub(crate) fn remove(&self) {
        self.removed.store(true, Relaxed);
        self.wake.notify_one();
    }

    /// Queues `notice`; a full queue dead-letters its oldest first.
    pub(crate) fn push(&self, notice: Notice) {
        let pushed_out = {
            let mut queue = self.queue.lock().expect("webhook queue lock");
            let oldest = (queue.len() >= self.capacity).then(|| queue.pop_front()).flatten();
            queue.push_back(notice);
            oldest
        };
        if let Some(oldest) = pushed_out {
            self.dead_letter(vec![oldest], None, "the endpoint's queue was full".into());
        }
        self.wake.notify_one();
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().expect("webhook queue lock").len()
    }

    /// Sends the endpoint's batches for as long as the node runs, or until it is removed;
    /// a paused endpoint's batches go to the dead letters unsent.
    pub(crate) async fn run(self: Arc<Self>, poster: Arc<Poster>, config: WebhooksConfig, pauses: Pauses) {
        while let Some(batch) = self.next_batch().await {
            match self.pause() {
                Some(p) => self.dead_letter(batch, None, format!("the endpoint is paused: {}", p.reason)),
                None => self.deliver(batch, &poster, &config, &pauses).await,
            }
        }
        let left: Vec<Notice> = self.queue.lock().expect("webhook queue lock").drain(..).collect();
        left.into_iter().for_each(|mut n| n.settled());
    }

    /// Waits for a notice, then up to `batch.max_wait` for more, up to `batch.max_events`;
    /// none once the endpoint is removed.
    async fn next_batch(&self) -> Option<Vec<Notice>> {
        let removed = || self.removed.load(Relaxed);
        while self.queued() == 0 && !removed() {
            self.wake.notified().await;
        }
        let batch = self.settings().batch;
        let deadline = tokio::time::Instant::now() + batch.max_wait;
        while self.queued() < batch.max_events && !removed() {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        if removed() {
            return None;
        }
        let mut queue = self.queue.lock().expect("webhook queue lock");
        let n = queue.len().min(batch.max_events);
        Some(queue.drain(..n).collect())
    }

    /// Sends one batch until it is answered 2xx, or dead-letters it.
    async fn deliver(&self, mut batch: Vec<Notice>, poster: &Poster, config: &WebhooksConfig, pauses: &Pauses) {
        let id = notice::random_id("msg_");
        let started = Instant::now();
        let mut backoff = config.initial_backoff;
        loop {
            let settings = self.settings();
            let Some((body, headers)) = settings.request(&self.tenant, &id, &batch) else {
                return self.dead_letter(batch, Some(id), "the tenant has no Pusher app to sign with".into());
            };
            let headers: Vec<(&str, String)> = headers.into_iter().collect();
            let failure = match poster.post(&settings.url, &headers, body).await {
                Ok(()) => return self.delivered(&mut batch),
                Err(e) => e,
            };
            self.metrics.failed.fetch_add(1, Relaxed);
            self.failing(config, pauses, &failure.to_string());
            if let Some(p) = self.pause() {
                return self.dead_letter(batch, Some(id), format!("the endpoint is paused: {}", p.reason));
            }
            tracing::debug!(tenant = %self.tenant, url = %settings.url, error = %failure, "webhook request failed");
            if failure.permanent() || started.elapsed() + backoff > config.retry_for {
                return self.dead_letter(batch, Some(id), failure.to_string());
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(config.max_backoff);
            self.metrics.retried.fetch_add(1, Relaxed);
        }
    }

    /// Notes a failure; once every request failed for `pause_after`, asks for the endpoint
    /// to be paused (again at every later failure, until the pause is recorded).
    fn failing(&self, config: &WebhooksConfig, pauses: &Pauses, error: &str) {
        let now = crate::clock::now_millis();
        let since = match self.failing_since_ms.compare_exchange(0, now, Relaxed, Relaxed) {
            Ok(_) => now,
            Err(since) => since,
        };
        if now.saturating_sub(since) < config.pause_after.as_millis() as u64 {
            return;
        }
        let failing_for = humantime::format_duration(Duration::from_millis(now.saturating_sub(since)));
        let reason = format!("every request failed for {failing_for}, the last: {error}");
        tracing::warn!(tenant = %self.tenant, endpoint = %self.id, %reason, "pausing a webhook endpoint");
        let pause = WebhookPause { at_ms: now, reason };
        let _ = pauses.send(PauseRequest { tenant: self.tenant.clone(), endpoint: self.id.clone(), pause });
    }

    fn delivered(&self, batch: &mut [Notice]) {
        self.failing_since_ms.store(0, Relaxed);
        self.metrics.sent.fetch_add(batch.len() as u64, Relaxed);
        let now = crate::clock::now_millis();
        for notice in batch {
            self.metrics.latency.observe(Duration::from_millis(now.saturating_sub(notice.at_ms)));
            notice.settled();
        }
    }

    /// Keeps `notices` in the tenant's dead letters: done with, as far as whoever waits for
    /// them to settle is concerned (a replay is the operator's call).
    fn dead_letter(&self, mut notices: Vec<Notice>, id: Option<String>, reason: String) {
        self.metrics.dead_lettered.fetch_add(notices.len() as u64, Relaxed);
        notices.iter_mut().for_each(Notice::settled);
        let url = self.url();
        tracing::warn!(tenant = %self.tenant, %url, %reason, notices = notices.len(), "webhook batch dead-lettered");
        let id = id.unwrap_or_else(|| notice::random_id("msg_"));
        let store = self.dead.read().expect("dead letters slot lock").clone();
        store.add(
            &self.tenant,
            DeadLetter {
                id,
                endpoint: self.id.to_string(),
                url,
                reason,
                failed_at_ms: crate::clock::now_millis(),
                notices,
            },
        );
    }
}

/// A wait between half of `backoff` and all of it, so endpoints that failed together do not
/// retry together.
fn jitter(backoff: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    backoff / 2 + backoff.mul_f64(f64::from(byte[0]) / 510.0)
}
