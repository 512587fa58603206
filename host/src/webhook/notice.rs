//! What a webhook tells: the event types, one notice of something that happened, and the
//! JSON body of a batch of them (docs/WEBHOOKS.md).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{WEBHOOK_EVENTS, WEBHOOK_EVENTS_OPT_IN, WEBHOOK_EVENTS_PUSHER, WebhookFormat};

/// The types of webhook events (named as in [`WEBHOOK_EVENTS`] when stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "&str", try_from = "String")]
pub(crate) enum Kind {
    /// A user's first connection anywhere opened.
    UserOnline,
    /// A user's last connection closed, and none opened within the presence debounce.
    UserOffline,
    /// A channel's first subscriber anywhere subscribed.
    ChannelOccupied,
    /// A channel's last subscriber left, and none subscribed within the presence debounce.
    ChannelVacated,
    /// A user's read cursor moved forward.
    EventAcked,
    /// Ingest through Redis refused an event (malformed, over a quota) and wrote it to the
    /// dead-letter stream.
    EventDeadLettered,
    /// A plugin's breaker opened: its calls are skipped until it closes.
    PluginDisabled,
    /// A plugin's breaker closed again.
    PluginEnabled,
    /// A push did not reach a device (or found it gone).
    PushFailed,
    /// A connection subscribed to a channel.
    SubscriptionAdded,
    /// A connection's subscription to a channel ended.
    SubscriptionRemoved,
    /// A node's sum of the connects it refused in a period, by reason.
    ConnectionRefused,
    /// A user joined a Pusher presence channel with its first connection there.
    MemberAdded,
    /// A user's last connection in a Pusher presence channel left it.
    MemberRemoved,
    /// A Pusher client sent a client event.
    ClientEvent,
    /// A subscriber of a Pusher cache channel found no event to replay.
    CacheMiss,
}

// Every kind is named by its place in the configuration's list of event types.
const _: () = assert!(Kind::CacheMiss as usize + 1 == WEBHOOK_EVENTS.len());

impl Kind {
    pub(crate) const ALL: [Kind; WEBHOOK_EVENTS.len()] = [
        Kind::UserOnline,
        Kind::UserOffline,
        Kind::ChannelOccupied,
        Kind::ChannelVacated,
        Kind::EventAcked,
        Kind::EventDeadLettered,
        Kind::PluginDisabled,
        Kind::PluginEnabled,
        Kind::PushFailed,
        Kind::SubscriptionAdded,
        Kind::SubscriptionRemoved,
        Kind::ConnectionRefused,
        Kind::MemberAdded,
        Kind::MemberRemoved,
        Kind::ClientEvent,
        Kind::CacheMiss,
    ];

    /// The kinds an endpoint that lists none gets: all but the opt-in ones (for the Pusher
    /// format, those Pusher sends).
    pub(crate) fn defaults(format: WebhookFormat) -> u32 {
        match format {
            WebhookFormat::Standard => Self::bits(WEBHOOK_EVENTS) & !Self::bits(WEBHOOK_EVENTS_OPT_IN.iter().copied()),
            WebhookFormat::Pusher => Self::bits(WEBHOOK_EVENTS_PUSHER),
        }
    }

    /// Pusher's name for this kind, if Pusher's webhooks have it.
    fn pusher_name(self) -> Option<&'static str> {
        Some(match self {
            Kind::ChannelOccupied => "channel_occupied",
            Kind::ChannelVacated => "channel_vacated",
            Kind::MemberAdded => "member_added",
            Kind::MemberRemoved => "member_removed",
            Kind::ClientEvent => "client_event",
            Kind::CacheMiss => "cache_miss",
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        WEBHOOK_EVENTS[self as usize]
    }

    /// The set of `names` (event types), as [`Kind::bit`]s.
    pub(crate) fn bits<'a>(names: impl IntoIterator<Item = &'a str>) -> u32 {
        names.into_iter().filter_map(|n| WEBHOOK_EVENTS.iter().position(|e| *e == n)).map(|i| 1 << i).sum()
    }

    /// The kind named `name`.
    pub(crate) fn named(name: &str) -> Option<Self> {
        let i = WEBHOOK_EVENTS.iter().position(|e| *e == name)?;
        Some(Self::ALL[i])
    }

    /// The names of the kinds in `bits`.
    pub(crate) fn names(bits: u32) -> Vec<String> {
        (WEBHOOK_EVENTS.iter().enumerate()).filter(|(i, _)| bits & (1 << i) != 0).map(|(_, n)| n.to_string()).collect()
    }

    /// The bit of this kind in a set of kinds.
    pub(crate) fn bit(self) -> u32 {
        1 << self as u32
    }
}

impl From<Kind> for &'static str {
    fn from(kind: Kind) -> Self {
        kind.name()
    }
}

impl TryFrom<String> for Kind {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Kind::named(&name).ok_or_else(|| format!("{name:?} is not a webhook event type"))
    }
}

/// One thing that happened, for the tenant's endpoints that want its kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Notice {
    /// Stable across retries: receivers deduplicate by it.
    pub id: String,
    pub kind: Kind,
    /// Milliseconds since the Unix epoch when it happened.
    pub at_ms: u64,
    pub data: Value,
    /// Told once every endpoint it went to is done with it, if someone waits for that.
    #[serde(skip)]
    pub settle: Option<Arc<Settle>>,
}

impl Notice {
    pub(crate) fn new(kind: Kind, data: Value) -> Self {
        Self::recorded(random_id("evt_"), kind, crate::clock::now_millis(), data)
    }

    /// A notice of something recorded elsewhere with its own `id` and time.
    pub(crate) fn recorded(id: String, kind: Kind, at_ms: u64, data: Value) -> Self {
        Self { id, kind, at_ms, data, settle: None }
    }

    /// Tells its [`Settle`] that one endpoint is done with it (delivered or dead-lettered).
    pub(crate) fn settled(&mut self) {
        if let Some(settle) = self.settle.take() {
            settle.one_done();
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({"id": self.id, "type": self.kind.name(), "timestamp": rfc3339(self.at_ms), "data": self.data})
    }
}

/// What to do once every endpoint a notice went to is done with it: a Redis stream entry is
/// acknowledged only then, so a node that dies with it queued leaves it to another node.
pub(crate) struct Settle {
    /// Endpoints not done yet.
    remaining: AtomicUsize,
    then: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Settle {
    pub(crate) fn new(endpoints: usize, then: Box<dyn FnOnce() + Send>) -> Arc<Self> {
        let settle = Arc::new(Self { remaining: AtomicUsize::new(endpoints), then: Mutex::new(Some(then)) });
        if endpoints == 0 {
            settle.run();
        }
        settle
    }

    fn one_done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.run();
        }
    }

    fn run(&self) {
        if let Some(then) = self.then.lock().expect("settle lock").take() {
            then();
        }
    }
}

impl std::fmt::Debug for Settle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settle").field("remaining", &self.remaining).finish_non_exhaustive()
    }
}

/// How much of a refused event's body an `event.dead_lettered` notice carries.
const DEAD_LETTERED_BODY: usize = 4096;

/// The `event.dead_lettered` notice of an event refused by `source` (`http`, `ingest`,
/// `publish`): its stream entry and id if it has them, why, and its body as sent (the first
/// 4 KiB) if it is known.
pub(crate) fn dead_lettered(
    source: &str,
    entry: Option<&str>,
    id: Option<&str>,
    reason: &str,
    body: Option<&[u8]>,
) -> Notice {
    let text = body.map(|b| String::from_utf8_lossy(&b[..b.len().min(DEAD_LETTERED_BODY)]).into_owned());
    let truncated = body.is_some_and(|b| b.len() > DEAD_LETTERED_BODY);
    let data =
        json!({"source": source, "entry": entry, "id": id, "reason": reason, "event": text, "truncated": truncated});
    Notice::new(Kind::EventDeadLettered, data)
}

/// The body of one request: `{"type":"notify.batch","timestamp":..,"data":{"tenant":..,"events":[..]}}`.
pub(crate) fn body(tenant: &str, notices: &[Notice]) -> Vec<u8> {
    let events: Vec<Value> = notices.iter().map(Notice::json).collect();
    let body = json!({"type": "notify.batch", "timestamp": rfc3339(crate::clock::now_millis()),
                      "data": {"tenant": tenant, "events": events}});
    serde_json::to_vec(&body).expect("JSON values serialise")
}

/// The body of one request in Pusher's format: `{"time_ms":..,"events":[{"name":..,
/// "channel":.., ...}]}`, each event its notice's data under Pusher's name (kinds Pusher
/// has no name for are left out).
pub(crate) fn pusher_body(notices: &[Notice]) -> Vec<u8> {
    let events: Vec<Value> = notices
        .iter()
        .filter_map(|n| {
            let mut event = json!({ "name": n.kind.pusher_name()? });
            if let (Some(fields), Some(out)) = (n.data.as_object(), event.as_object_mut()) {
                out.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Some(event)
        })
        .collect();
    let body =
        json!({ "time_ms": notices.first().map_or_else(crate::clock::now_millis, |n| n.at_ms), "events": events });
    serde_json::to_vec(&body).expect("JSON values serialise")
}

/// `prefix` and 128 random bits in hex.
pub(crate) fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    // Without randomness, the time and a counter still make ids unique on this node.
    if getrandom::fill(&mut bytes).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&crate::clock::now_micros().to_be_bytes());
        bytes[8..].copy_from_slice(&n.to_be_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Seconds since the Unix epoch, for `webhook-timestamp`.
pub(crate) fn unix_seconds() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_names_its_tenant_and_each_event_its_id_type_and_time() {
        let notice = Notice {
            id: "evt_1".into(),
            kind: Kind::UserOffline,
            at_ms: 1_796_613_633_910,
            data: json!({"user": "ann"}),
            settle: None,
        };
        let body: Value = serde_json::from_slice(&body("demo", &[notice])).unwrap();
        assert_eq!(body["type"], "notify.batch");
        assert_eq!(body["data"]["tenant"], "demo");
        assert_eq!(
            body["data"]["events"][0],
            json!({"id": "evt_1", "type": "user.offline", "timestamp": "2026-12-07T03:20:33.910Z", "data": {"user": "ann"}})
        );
        assert_ne!(random_id("x_"), random_id("x_"));
        assert_eq!(Kind::ALL.map(Kind::name), WEBHOOK_EVENTS, "each kind named by its place");
        assert_eq!(
            Kind::bits(["user.offline", "event.acked", "user.away"]),
            Kind::UserOffline.bit() | Kind::EventAcked.bit()
        );
    }
}
