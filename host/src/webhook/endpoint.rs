//! One webhook endpoint: its bounded queue of notices, and the task that sends them in
//! batches, in order, retrying a failed batch with exponential backoff and jitter until
//! `webhooks.retry_for` has passed, then dead-lettering it. While a batch is retried, new
//! notices wait behind it; when the queue is full, the oldest are dead-lettered.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Uri;
use tokio::sync::Notify;

use super::dead::{DeadLetter, DeadLetters};
use super::notice::{self, Notice};
use super::post::Poster;
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

/// An endpoint of one tenant.
pub(crate) struct Endpoint {
    pub tenant: Arc<str>,
    /// Its place in the tenant's `webhooks`.
    pub index: usize,
    pub url: Uri,
    signer: standardwebhooks::Webhook,
    /// The kinds it wants, as [`super::Kind::bit`]s.
    pub kinds: u32,
    batch: WebhookBatch,
    /// Notices waiting to be sent, oldest first; at most `capacity` (the rest are
    /// dead-lettered). Locked only to push or take, never across an await.
    queue: Mutex<VecDeque<Notice>>,
    capacity: usize,
    /// Wakes the endpoint's task when a notice is queued.
    wake: Notify,
    dead: Arc<DeadLetters>,
    pub metrics: EndpointMetrics,
}

impl Endpoint {
    pub(crate) fn new(
        tenant: Arc<str>,
        index: usize,
        config: &crate::config::WebhookEndpoint,
        capacity: usize,
        dead: Arc<DeadLetters>,
    ) -> Self {
        let kinds = match config.events.is_empty() {
            true => super::Kind::defaults(),
            false => super::Kind::bits(config.events.iter().map(String::as_str)),
        };
        Self {
            tenant,
            index,
            url: config.url.parse().expect("checked with the config"),
            signer: standardwebhooks::Webhook::new(&config.secret).expect("checked with the config"),
            kinds,
            batch: config.batch,
            queue: Mutex::new(VecDeque::new()),
            capacity,
            wake: Notify::new(),
            dead,
            metrics: EndpointMetrics::default(),
        }
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

    /// Sends the endpoint's batches for as long as the node runs.
    pub(crate) async fn run(self: Arc<Self>, poster: Arc<Poster>, config: WebhooksConfig) {
        loop {
            let batch = self.next_batch().await;
            self.deliver(batch, &poster, &config).await;
        }
    }

    /// Waits for a notice, then up to `batch.max_wait` for more, up to `batch.max_events`.
    async fn next_batch(&self) -> Vec<Notice> {
        while self.queued() == 0 {
            self.wake.notified().await;
        }
        let deadline = tokio::time::Instant::now() + self.batch.max_wait;
        while self.queued() < self.batch.max_events {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let mut queue = self.queue.lock().expect("webhook queue lock");
        let n = queue.len().min(self.batch.max_events);
        queue.drain(..n).collect()
    }

    /// Sends one batch until it is answered 2xx, or dead-letters it.
    async fn deliver(&self, mut batch: Vec<Notice>, poster: &Poster, config: &WebhooksConfig) {
        let id = notice::random_id("msg_");
        let body = Bytes::from(notice::body(&self.tenant, &batch));
        let started = Instant::now();
        let mut backoff = config.initial_backoff;
        loop {
            let timestamp = notice::unix_seconds();
            let signature = self.signer.sign(&id, timestamp, &body).expect("the body is JSON text");
            let headers = [
                ("webhook-id", id.clone()),
                ("webhook-timestamp", timestamp.to_string()),
                ("webhook-signature", signature),
            ];
            let failure = match poster.post(&self.url, &headers, body.clone()).await {
                Ok(()) => return self.delivered(&mut batch),
                Err(e) => e,
            };
            self.metrics.failed.fetch_add(1, Relaxed);
            tracing::debug!(tenant = %self.tenant, url = %self.url, error = %failure, "webhook request failed");
            if failure.permanent() || started.elapsed() + backoff > config.retry_for {
                return self.dead_letter(batch, Some(id), failure.to_string());
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(config.max_backoff);
            self.metrics.retried.fetch_add(1, Relaxed);
        }
    }

    fn delivered(&self, batch: &mut [Notice]) {
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
        tracing::warn!(tenant = %self.tenant, url = %self.url, %reason, notices = notices.len(), "webhook batch dead-lettered");
        let id = id.unwrap_or_else(|| notice::random_id("msg_"));
        self.dead.add(DeadLetter {
            id,
            endpoint: self.index,
            url: self.url.to_string(),
            reason,
            failed_at_ms: crate::clock::now_millis(),
            notices,
        });
    }
}

/// A wait between half of `backoff` and all of it, so endpoints that failed together do not
/// retry together.
fn jitter(backoff: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    backoff / 2 + backoff.mul_f64(f64::from(byte[0]) / 510.0)
}
