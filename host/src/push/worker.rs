//! The loop every node runs: take the escalations that are due (each goes to one node),
//! drop those whose event the user has read, put off those in the user's quiet hours, drop
//! those over the user's hourly cap, send the others to each of the user's devices, remove
//! the devices their provider says are gone, and keep what was sent so that it can be
//! withdrawn when the user reads it.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering::Relaxed;

use super::apns::ApnsError;
use super::fcm::{Answer, FcmError};
use super::job::{Job, Kind};
use super::vapid::VapidError;
use super::web::{Message, SendError};
use super::{Pusher, ece};
use crate::alert::PushWhen;
use crate::backend::devices::Sent;
use crate::backend::escalations::Escalation;
use crate::backend::history::{History, HistoryError, Start};
use crate::device::{Device, Platform};
use crate::drain::Drain;
use crate::metrics::PushFailure;
use crate::stream::{Position, Target};
use crate::tenant::{Tenant, Tenants};
use crate::webhook::{Kind as WebhookKind, Notice};

/// How often the store is asked for due escalations.
const POLL: Duration = Duration::from_millis(200);
/// Escalations taken at once.
const BATCH: usize = 64;
/// How long an escalation of a tenant whose lane is full waits before it is tried again.
const BUSY: u64 = 50;
/// How soon the store is asked again when lanes were full.
const BUSY_POLL: Duration = Duration::from_millis(20);

/// The node's push loop, until the node drains.
pub(crate) async fn run(pusher: Arc<Pusher>, tenants: Arc<Tenants>, history: Arc<dyn History>, drain: Drain) {
    // Long enough for a push to wait its turn in its tenant's lane and go to every device of
    // its user; a node that dies holding one hands it to another after this.
    let lease = pusher.config.timeout * (super::QUEUED_PER_SENDING as u32 + 2) + Duration::from_secs(10);
    let mut pause = POLL;
    loop {
        tokio::select! {
            () = drain.started() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = POLL;
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
            let mut put_back = 0;
            for escalation in due {
                put_back += usize::from(!dispatch(&pusher, &tenants, &history, escalation).await);
            }
            if put_back * 2 > taken {
                // Lanes are full: look again once some pushes went, leaving the rest due.
                pause = BUSY_POLL;
                break;
            }
            if taken < BATCH {
                break;
            }
        }
    }
}

/// Starts sending one due escalation, or puts it back when its tenant's lane is full;
/// whether it started.
async fn dispatch(pusher: &Arc<Pusher>, tenants: &Tenants, history: &Arc<dyn History>, e: Escalation) -> bool {
    let job: Job = match serde_json::from_str(&e.body) {
        Ok(job) => job,
        Err(err) => {
            tracing::warn!(error = %err, "a pending push could not be read; dropped");
            finish(pusher, e.id).await;
            return true;
        }
    };
    let Some(tenant) = tenants.get(&job.tenant) else {
        finish(pusher, e.id).await;
        return true;
    };
    let Some((queued, sending)) = pusher.lane(&tenant.id) else {
        put_back(pusher, e, crate::clock::now_millis() + BUSY).await;
        return false;
    };
    let (pusher, history) = (pusher.clone(), history.clone());
    tokio::spawn(async move {
        let _queued = queued;
        let Ok(_sending) = sending.acquire_owned().await else { return };
        match deliver(&pusher, &*history, &tenant, &job).await {
            Ok(Outcome::Done) => finish(&pusher, e.id).await,
            Ok(Outcome::Later(due)) => put_back(&pusher, e, due).await,
            // Due again when its lease ends.
            Err(Retry) => {}
        }
    });
    true
}

async fn put_back(pusher: &Pusher, e: Escalation, due: u64) {
    let later = Escalation { due, ..e };
    if let Err(err) = pusher.escalations.schedule(std::slice::from_ref(&later), usize::MAX).await {
        tracing::warn!(error = %err, "a pending push could not be put back; it is retried after its lease");
    }
}

async fn finish(pusher: &Pusher, id: String) {
    if let Err(e) = pusher.escalations.finish(&[id]).await {
        tracing::warn!(error = %e, "a sent push stays pending; it may be sent again");
    }
}

/// What became of a due job that was handled.
enum Outcome {
    Done,
    /// Due again then (Unix ms): the user's quiet hours.
    Later(u64),
}

/// A store could not be read: the escalation is due again when its lease ends.
struct Retry;

/// Sends `job` to each device of its user, unless it waited for a read the user made, falls
/// in the user's quiet hours or is over their hourly cap.
async fn deliver(pusher: &Pusher, history: &dyn History, tenant: &Tenant, job: &Job) -> Result<Outcome, Retry> {
    let metrics = &tenant.metrics.push;
    let store_failed = |e: &dyn std::fmt::Display| {
        tracing::warn!(tenant = %tenant.id, error = %e, "a push waits for its store");
        metrics.failed(PushFailure::Store, 1);
        Retry
    };
    if job.kind == Kind::Withdraw {
        let devices = pusher.devices.list(&tenant.id, &job.user).await.map_err(|e| store_failed(&e))?;
        if send_all(pusher, tenant, job, &devices).await > 0 {
            metrics.withdrawn.fetch_add(1, Relaxed);
        }
        return Ok(Outcome::Done);
    }
    let place = match tenant.config.history.acks {
        true => Some(place(history, tenant, job).await.map_err(|e| store_failed(&e))?),
        false => None,
    };
    if job.when == PushWhen::UnreadAfter && matches!(place, Some(Place::Read)) {
        metrics.cancelled.fetch_add(1, Relaxed);
        return Ok(Outcome::Done);
    }
    let preferences = pusher.devices.preferences(&tenant.id, &job.user).await.map_err(|e| store_failed(&e))?;
    let now = crate::clock::now_millis();
    if let Some(until) = preferences.quiet_until(now) {
        metrics.deferred.fetch_add(1, Relaxed);
        return Ok(Outcome::Later(until));
    }
    let max = preferences.max_per_hour.unwrap_or(tenant.config.push.max_per_hour);
    if max > 0 && !pusher.devices.count_push(&tenant.id, &job.user, now, max).await.map_err(|e| store_failed(&e))? {
        metrics.failed(PushFailure::Capped, 1);
        return Ok(Outcome::Done);
    }
    let devices = pusher.devices.list(&tenant.id, &job.user).await.map_err(|e| store_failed(&e))?;
    if send_all(pusher, tenant, job, &devices).await > 0
        && let Some(Place::Unread(Some(position))) = place
    {
        remember(pusher, tenant, job, position, now).await;
    }
    Ok(Outcome::Done)
}

/// Sends the job's payload to each device; how many took it.
async fn send_all(pusher: &Pusher, tenant: &Tenant, job: &Job, devices: &[Device]) -> usize {
    let payload = job.payload(ece::MAX_PAYLOAD);
    let mut taken = 0;
    for device in devices {
        taken += usize::from(send(pusher, tenant, job, device, &payload).await);
    }
    taken
}

/// Keeps a sent push until the user reads its event, to withdraw it then.
async fn remember(pusher: &Pusher, tenant: &Tenant, job: &Job, at: Position, now: u64) {
    let sent = Sent { epoch: at.epoch, offset: at.offset, id: job.id.clone(), tag: job.alert.collapse_key.clone() };
    let until = now + job.alert.ttl.unwrap_or(tenant.config.push.ttl).as_millis() as u64;
    if let Err(e) = pusher.devices.record_sent(&tenant.id, &job.user, &sent, until).await {
        tracing::warn!(tenant = %tenant.id, error = %e, "a sent push could not be kept: it is not withdrawn when read");
    }
}

/// Where the job's event stands in the user's stream.
enum Place {
    /// At or before the read cursor.
    Read,
    /// After it (its position, when the store kept it), or trimmed away: unknown, so unread.
    Unread(Option<Position>),
}

/// Reads the user stream after the read cursor for the job's event.
async fn place(history: &dyn History, tenant: &Tenant, job: &Job) -> Result<Place, HistoryError> {
    let replay = history.read(tenant, Target::User(&job.user), Start { since: None, unacked: true }).await?;
    let needle = format!(r#"{{"type":"event","id":{}"#, serde_json::to_string(&job.id).expect("a string"));
    let found = replay.events.iter().find(|s| s.frame.windows(needle.len()).any(|w| w == needle.as_bytes()));
    let epoch = replay.position.map(|p| p.epoch);
    Ok(match (found, epoch) {
        (Some(stored), Some(epoch)) => Place::Unread(Some(Position { epoch, offset: stored.offset })),
        (None, _) if replay.recovered => Place::Read,
        _ => Place::Unread(None),
    })
}

/// Sends one message to one device; counts what happened, removes a device that is gone.
/// Whether the provider took it.
async fn send(pusher: &Pusher, tenant: &Tenant, job: &Job, device: &Device, payload: &[u8]) -> bool {
    let metrics = &tenant.metrics.push;
    let outcome = match device.platform {
        Platform::Web => send_web(pusher, tenant, job, device, payload).await,
        Platform::Fcm => send_fcm(pusher, tenant, job, device).await,
        Platform::Apns => send_apns(pusher, tenant, job, device).await,
    };
    match outcome {
        Ok(Status::Sent) => {
            metrics.sent(device.platform as usize);
            return true;
        }
        Ok(Status::Gone) => {
            match pusher.devices.remove(&tenant.id, &job.user, &device.id).await {
                Ok(_) => {
                    metrics.devices_removed.fetch_add(1, Relaxed);
                }
                Err(e) => tracing::warn!(tenant = %tenant.id, error = %e, "a gone device could not be removed"),
            }
            tell(pusher, tenant, job, device, "gone");
        }
        Err(why) => {
            tracing::debug!(tenant = %tenant.id, device = %device.id, reason = why.as_str(), "push failed");
            metrics.failed(why, 1);
            tell(pusher, tenant, job, device, why.as_str());
        }
    }
    false
}

/// Tells the tenant's webhooks that `job` did not reach `device`, and why (`gone`: the
/// device was removed).
fn tell(pusher: &Pusher, tenant: &Tenant, job: &Job, device: &Device, reason: &str) {
    let data = serde_json::json!({
        "user": job.user, "event_id": job.id, "kind": job.kind, "device": device.id,
        "platform": device.platform, "reason": reason, "device_removed": reason == "gone",
    });
    pusher.webhooks.emit(&tenant.id, Notice::new(WebhookKind::PushFailed, data));
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
    let message = Message {
        endpoint: &subscription.endpoint,
        p256dh: &subscription.keys.p256dh,
        auth: &subscription.keys.auth,
        payload,
        ttl: job.alert.ttl.unwrap_or(rule.ttl).as_secs().min(u64::from(u32::MAX)) as u32,
        urgency: job.alert.urgency.map(|u| u.as_str()),
        topic: job.alert.collapse_key.as_deref(),
    };
    match pusher.web.send(&credentials.vapid_private_key, &credentials.contact, &message).await {
        Ok(200..=299) => Ok(Status::Sent),
        Ok(404 | 410) => Ok(Status::Gone),
        Ok(429 | 500..=599) => Err(PushFailure::Unavailable),
        Ok(_) => Err(PushFailure::Rejected),
        Err(SendError::Timeout(_)) => Err(PushFailure::Timeout),
        Err(SendError::Dial(_) | SendError::Http(_)) => Err(PushFailure::Network),
        Err(SendError::Vapid(VapidError::Key)) => Err(PushFailure::NoCredentials),
        Err(SendError::Base64(_) | SendError::Endpoint | SendError::Encrypt(_) | SendError::Vapid(_)) => {
            Err(PushFailure::Invalid)
        }
    }
}

async fn send_fcm(pusher: &Pusher, tenant: &Tenant, job: &Job, device: &Device) -> Result<Status, PushFailure> {
    let rule = &tenant.config.push;
    let credentials = rule.fcm.as_ref().ok_or(PushFailure::NoCredentials)?;
    let token = device.token.as_deref().ok_or(PushFailure::Invalid)?;
    let ttl = job.alert.ttl.unwrap_or(rule.ttl);
    match pusher.fcm.send(credentials, job, token, ttl).await {
        Ok(Answer::Sent) => Ok(Status::Sent),
        Ok(Answer::Gone) => Ok(Status::Gone),
        Ok(Answer::Refused(429 | 500..=599)) => Err(PushFailure::Unavailable),
        Ok(Answer::Refused(_)) => Err(PushFailure::Rejected),
        Err(FcmError::Timeout(_)) => Err(PushFailure::Timeout),
        Err(FcmError::Call(_)) => Err(PushFailure::Network),
        Err(FcmError::Token(status)) => {
            tracing::warn!(tenant = %tenant.id, status, "FCM's token endpoint refused the service account");
            Err(PushFailure::NoCredentials)
        }
        Err(e @ (FcmError::Account(_) | FcmError::TokenAnswer(_))) => {
            tracing::warn!(tenant = %tenant.id, error = %e, "FCM credentials cannot be used");
            Err(PushFailure::NoCredentials)
        }
    }
}

async fn send_apns(pusher: &Pusher, tenant: &Tenant, job: &Job, device: &Device) -> Result<Status, PushFailure> {
    use super::apns::Answer;
    let rule = &tenant.config.push;
    let credentials = rule.apns.as_ref().ok_or(PushFailure::NoCredentials)?;
    let token = device.token.as_deref().ok_or(PushFailure::Invalid)?;
    let ttl = job.alert.ttl.unwrap_or(rule.ttl);
    match pusher.apns.send(credentials, job, token, ttl).await {
        Ok(Answer::Sent) => Ok(Status::Sent),
        Ok(Answer::Gone) => Ok(Status::Gone),
        Ok(Answer::Refused(status @ (429 | 500..=599), reason)) => {
            tracing::debug!(tenant = %tenant.id, status, reason, "APNs asked to try later");
            Err(PushFailure::Unavailable)
        }
        Ok(Answer::Refused(status, reason)) => {
            tracing::warn!(tenant = %tenant.id, status, reason, "APNs refused a notification");
            Err(PushFailure::Rejected)
        }
        Err(ApnsError::Timeout(_)) => Err(PushFailure::Timeout),
        Err(ApnsError::Dial(_) | ApnsError::Http(_)) => Err(PushFailure::Network),
        Err(e @ ApnsError::Key(_)) => {
            tracing::warn!(tenant = %tenant.id, error = %e, "APNs credentials cannot be used");
            Err(PushFailure::NoCredentials)
        }
    }
}
