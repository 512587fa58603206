//! Push to devices that are not connected. An event to users is scheduled per user when
//! published (`schedule`: at once for `always`, after the delay for `unread_after`) in the
//! escalation store, which every node polls (`worker`): a due push whose event the user has
//! read by then is dropped, any other goes to each of the user's devices. Web Push is built
//! from its parts: the message encrypted for one subscription (`ece`, RFC 8291), the VAPID
//! identification (`vapid`, RFC 8292), the request to the push service (`web`). `fcm` sends
//! through Firebase Cloud Messaging, `apns` through Apple's service over HTTP/2. `job` is a pending push as stored and the payload a
//! device gets.

mod apns;
pub(crate) mod ece;
mod fcm;
pub(crate) mod job;
pub(crate) mod vapid;
pub(crate) mod web;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::alert::PushWhen;
use crate::backend::escalations::Escalation;
use crate::backend::{Devices, Escalations};
use crate::config::PushServiceConfig;
use crate::event::Event;
use crate::metrics::PushFailure;
use crate::tenant::Tenant;
use crate::webhook::Webhooks;
use job::Job;

pub(crate) use worker::run;

/// The node's push state: the stores, the senders, the limits.
pub(crate) struct Pusher {
    pub(crate) devices: Arc<dyn Devices>,
    pub(crate) escalations: Arc<dyn Escalations>,
    config: PushServiceConfig,
    /// Told of each push that reached no device (`push.failed`).
    webhooks: Arc<Webhooks>,
    web: web::WebPush,
    fcm: fcm::Fcm,
    apns: apns::Apns,
    /// Each tenant's lane: a provider that hangs holds its own tenant's pushes only.
    lanes: Mutex<HashMap<Arc<str>, Lane>>,
}

impl Pusher {
    pub(crate) fn new(
        devices: Arc<dyn Devices>,
        escalations: Arc<dyn Escalations>,
        config: PushServiceConfig,
        webhooks: Arc<Webhooks>,
    ) -> Self {
        let web = web::WebPush::new(config.allow_private, config.timeout);
        let fcm = fcm::Fcm::new(config.timeout, web.tls.clone());
        let apns = apns::Apns::new(config.timeout);
        Self { devices, escalations, config, webhooks, web, fcm, apns, lanes: Mutex::default() }
    }

    /// Schedules a push of each of `events` that goes to users, by the publish body's `push`
    /// or the tenant's rule. The events are delivered already: a store that cannot take them
    /// loses their pushes (counted), not the events.
    pub(crate) async fn schedule(&self, tenant: &Tenant, events: &[Event]) {
        let now = crate::clock::now_millis();
        let rule = &tenant.config.push;
        let mut jobs = Vec::new();
        for event in events.iter().filter(|e| !e.users.is_empty()) {
            let alert = event.alert.as_deref();
            let when = alert.and_then(|a| a.when).unwrap_or(rule.when);
            let due = match when {
                PushWhen::Never => continue,
                PushWhen::UnreadAfter if !tenant.config.history.acks => {
                    tenant.metrics.push.failed(PushFailure::NoReadCursors, event.users.len() as u64);
                    continue;
                }
                PushWhen::Always => now,
                PushWhen::UnreadAfter => now + alert.and_then(|a| a.delay).unwrap_or(rule.delay).as_millis() as u64,
            };
            for user in &event.users {
                let job = Job::new(&tenant.id, user, event, when);
                let body = serde_json::to_string(&job).expect("a job serializes");
                jobs.push(Escalation { id: job.key(), due, body });
            }
        }
        if jobs.is_empty() {
            return;
        }
        let metrics = &tenant.metrics.push;
        match self.escalations.schedule(&jobs, self.config.max_pending).await {
            Ok(taken) => {
                metrics.scheduled.fetch_add(taken as u64, Relaxed);
                metrics.failed(PushFailure::Full, (jobs.len() - taken) as u64);
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant.id, error = %e, "pushes not scheduled");
                metrics.failed(PushFailure::Store, jobs.len() as u64);
            }
        }
    }

    /// Withdraws the pushes the user read now that their read cursor is at `acked` of
    /// `epoch`: each goes to the user's devices as a withdrawal (with the push's collapse
    /// key), so a service worker can close its notification.
    pub(crate) async fn withdraw_read(&self, tenant: &Tenant, user: &str, epoch: &str, acked: u64) {
        let read = match self.devices.take_read(&tenant.id, user, epoch, acked).await {
            Ok(read) if read.is_empty() => return,
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(tenant = %tenant.id, error = %e, "read pushes could not be looked up; not withdrawn");
                return;
            }
        };
        let now = crate::clock::now_millis();
        let jobs: Vec<Escalation> = read
            .into_iter()
            .map(|sent| {
                let job = Job::withdrawal(&tenant.id, user, &sent.id, sent.tag);
                Escalation { id: job.key(), due: now, body: serde_json::to_string(&job).expect("a job serializes") }
            })
            .collect();
        if let Err(e) = self.escalations.schedule(&jobs, self.config.max_pending).await {
            tracing::warn!(tenant = %tenant.id, error = %e, "withdrawals not scheduled");
        }
    }

    /// Whether the tenant can push to any device (so acks may have pushes to withdraw).
    pub(crate) fn configured(tenant: &Tenant) -> bool {
        let push = &tenant.config.push;
        push.web.is_some() || push.fcm.is_some() || push.apns.is_some()
    }

    /// A place in `tenant`'s lane, if it has one free, and the permits its pushes are sent
    /// under.
    fn lane(&self, tenant: &Arc<str>) -> Option<(OwnedSemaphorePermit, Arc<Semaphore>)> {
        let mut lanes = self.lanes.lock().expect("push lanes lock");
        let concurrency = self.config.concurrency;
        let lane = lanes.entry(tenant.clone()).or_insert_with(|| Lane {
            queued: Arc::new(Semaphore::new(concurrency * QUEUED_PER_SENDING)),
            sending: Arc::new(Semaphore::new(concurrency)),
        });
        Some((lane.queued.clone().try_acquire_owned().ok()?, lane.sending.clone()))
    }
}

/// Pushes of one tenant taken from the store on this node.
struct Lane {
    /// Pushes waiting to be sent or being sent (`push.concurrency` times
    /// [`QUEUED_PER_SENDING`]); a push beyond goes back to the store for a moment.
    queued: Arc<Semaphore>,
    /// Pushes being sent (`push.concurrency`).
    sending: Arc<Semaphore>,
}

/// How many pushes of a tenant wait for each one being sent.
const QUEUED_PER_SENDING: usize = 8;
