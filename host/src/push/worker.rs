//! The loop every node runs: take the escalations that are due (each goes to one node),
//! drop those whose event the user has read, send the others to each of the user's devices,
//! remove the devices their provider says are gone.

use std::sync::Arc;
use std::time::Duration;

use super::job::Job;
use super::vapid::Vapid;
use super::web::{Message, SendError};
use super::{Pusher, ece};
use crate::alert::PushWhen;
use crate::backend::escalations::Escalation;
use crate::backend::history::{History, HistoryError, Start};
use crate::device::{Device, Platform};
use crate::drain::Drain;
use crate::metrics::PushFailure;
use crate::stream::Target;
use crate::tenant::{Tenant, Tenants};

/// How often the store is asked for due escalations.
const POLL: Duration = Duration::from_millis(200);
/// Escalations taken at once.
const BATCH: usize = 64;
/// How long a tenant without a free permit waits before its escalation is tried again.
const BUSY: u64 = 500;

/// The node's push loop, until the node drains.
pub(crate) async fn run(pusher: Arc<Pusher>, tenants: Arc<Tenants>, history: Arc<dyn History>, drain: Drain) {
    // Long enough for a push to every device of a user; a node that dies holding one
    // hands it to another after this.
    let lease = pusher.config.timeout * 3 + Duration::from_secs(10);
    loop {
        tokio::select! {
            () = drain.started() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        loop {
            let now = crate::clock::now_millis();
            let due = match pusher.escalations.take(now, BATCH, lease).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "pending pushes could not be read");
                    break;
                }
            };
            let taken = due.len();
            for escalation in due {
                dispatch(&pusher, &tenants, &history, escalation).await;
            }
            if taken < BATCH {
                break;
            }
        }
    }
}

/// Starts sending one due escalation, or puts it back when its tenant has none free.
async fn dispatch(pusher: &Arc<Pusher>, tenants: &Tenants, history: &Arc<dyn History>, e: Escalation) {
    let job: Job = match serde_json::from_str(&e.body) {
        Ok(job) => job,
        Err(err) => {
            tracing::warn!(error = %err, "a pending push could not be read; dropped");
            return finish(pusher, e.id).await;
        }
    };
    let Some(tenant) = tenants.get(&job.tenant) else { return finish(pusher, e.id).await };
    let Some(permit) = pusher.permit(&tenant.id) else {
        let later = Escalation { due: crate::clock::now_millis() + BUSY, ..e };
        if let Err(err) = pusher.escalations.schedule(std::slice::from_ref(&later), usize::MAX).await {
            tracing::warn!(error = %err, "a pending push could not be put back; it is retried after its lease");
        }
        return;
    };
    let (pusher, history) = (pusher.clone(), history.clone());
    tokio::spawn(async move {
        let _permit = permit;
        if deliver(&pusher, &*history, &tenant, &job).await.is_ok() {
            finish(&pusher, e.id).await;
        }
    });
}

async fn finish(pusher: &Pusher, id: String) {
    if let Err(e) = pusher.escalations.finish(&[id]).await {
        tracing::warn!(error = %e, "a sent push stays pending; it may be sent again");
    }
}

/// The store could not be read: the escalation is due again when its lease ends.
struct Retry;

/// Sends `job` to each device of its user, unless it waited for a read the user made.
async fn deliver(pusher: &Pusher, history: &dyn History, tenant: &Tenant, job: &Job) -> Result<(), Retry> {
    let metrics = &tenant.metrics.push;
    let store_failed = |e: &dyn std::fmt::Display| {
        tracing::warn!(tenant = %tenant.id, error = %e, "a push waits for its store");
        metrics.failed(PushFailure::Store, 1);
        Retry
    };
    if job.when == PushWhen::UnreadAfter && read(history, tenant, job).await.map_err(|e| store_failed(&e))? {
        metrics.cancelled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Ok(());
    }
    let devices = pusher.devices.list(&tenant.id, &job.user).await.map_err(|e| store_failed(&e))?;
    let payload = job.payload(ece::MAX_PAYLOAD);
    for device in &devices {
        send(pusher, tenant, job, device, &payload).await;
    }
    Ok(())
}

/// Whether the user read the event: it is not among those after the read cursor, which
/// are all still kept. (Trimmed history cannot tell: then it counts as unread.)
async fn read(history: &dyn History, tenant: &Tenant, job: &Job) -> Result<bool, HistoryError> {
    let replay = history.read(tenant, Target::User(&job.user), Start { since: None, unacked: true }).await?;
    let needle = format!(r#"{{"type":"event","id":{}"#, serde_json::to_string(&job.id).expect("a string"));
    let unread = replay.events.iter().any(|s| s.frame.windows(needle.len()).any(|w| w == needle.as_bytes()));
    Ok(replay.recovered && !unread)
}

/// Sends one message to one device; counts what happened, removes a device that is gone.
async fn send(pusher: &Pusher, tenant: &Tenant, job: &Job, device: &Device, payload: &[u8]) {
    let metrics = &tenant.metrics.push;
    let outcome = match device.platform {
        Platform::Web => send_web(pusher, tenant, job, device, payload).await,
        Platform::Fcm | Platform::Apns => Err(PushFailure::NoCredentials),
    };
    match outcome {
        Ok(Status::Sent) => metrics.sent(device.platform as usize),
        Ok(Status::Gone) => match pusher.devices.remove(&tenant.id, &job.user, &device.id).await {
            Ok(_) => {
                metrics.devices_removed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(tenant = %tenant.id, error = %e, "a gone device could not be removed"),
        },
        Err(why) => {
            tracing::debug!(tenant = %tenant.id, device = %device.id, reason = why.as_str(), "push failed");
            metrics.failed(why, 1);
        }
    }
}

/// What a provider said of a message it answered.
enum Status {
    Sent,
    /// The device no longer exists (404/410 from a push service).
    Gone,
}

async fn send_web(
    pusher: &Pusher,
    tenant: &Tenant,
    job: &Job,
    device: &Device,
    payload: &[u8],
) -> Result<Status, PushFailure> {
    let rule = &tenant.config.push;
    let credentials = rule.web.as_ref().ok_or(PushFailure::NoCredentials)?;
    let subscription = device.subscription.as_ref().ok_or(PushFailure::Invalid)?;
    let vapid = Vapid::from_private(&credentials.vapid_private_key).map_err(|_| PushFailure::NoCredentials)?;
    let message = Message {
        endpoint: &subscription.endpoint,
        p256dh: &subscription.keys.p256dh,
        auth: &subscription.keys.auth,
        payload,
        ttl: job.alert.ttl.unwrap_or(rule.ttl).as_secs().min(u64::from(u32::MAX)) as u32,
        urgency: job.alert.urgency.map(|u| u.as_str()),
        topic: job.alert.collapse_key.as_deref(),
    };
    match pusher.web.send(&vapid, &credentials.contact, &message).await {
        Ok(200..=299) => Ok(Status::Sent),
        Ok(404 | 410) => Ok(Status::Gone),
        Ok(429 | 500..=599) => Err(PushFailure::Unavailable),
        Ok(_) => Err(PushFailure::Rejected),
        Err(SendError::Timeout(_)) => Err(PushFailure::Timeout),
        Err(SendError::Dial(_) | SendError::Http(_)) => Err(PushFailure::Network),
        Err(SendError::Base64(_) | SendError::Endpoint | SendError::Encrypt(_) | SendError::Vapid(_)) => {
            Err(PushFailure::Invalid)
        }
    }
}
