//! The client protocol (docs/PROTOCOL.md): the frames clients send, the frames the host
//! builds for them (encoded once into wire bytes, `frame`), and the close codes (`close`).

pub(crate) mod close;
pub(crate) mod frame;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::stream::{Position, Replay};

/// A frame a client sends (JSON text with a `type`).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ClientFrame {
    Subscribe {
        channel: String,
        /// Resume the channel after this position: missed events are replayed first.
        #[serde(default)]
        since: Option<Since>,
    },
    Unsubscribe {
        channel: String,
    },
    /// Marks the user's notifications up to this position of the user stream as read
    /// (tenants with `history.acks`).
    Ack {
        epoch: String,
        offset: u64,
    },
    /// Application-level keepalive for clients that cannot send WebSocket pings (browsers).
    Ping,
}

/// A stream position as clients send it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Since {
    pub epoch: String,
    pub offset: u64,
}

impl From<Since> for Position {
    fn from(s: Since) -> Self {
        Position { epoch: s.epoch, offset: s.offset }
    }
}

/// Error codes of `error` frames.
pub(crate) mod code {
    pub(crate) const BAD_FRAME: &str = "bad_frame";
    pub(crate) const INVALID_CHANNEL: &str = "invalid_channel";
    pub(crate) const FORBIDDEN_CHANNEL: &str = "forbidden_channel";
    pub(crate) const TOO_MANY_SUBSCRIPTIONS: &str = "too_many_subscriptions";
    pub(crate) const ACKS_DISABLED: &str = "acks_disabled";
    pub(crate) const STALE_POSITION: &str = "stale_position";
    pub(crate) const HISTORY_UNAVAILABLE: &str = "history_unavailable";
}

/// Parses a client text frame, or explains what is wrong with it.
pub(crate) fn parse(text: &str) -> Result<ClientFrame, serde_json::Error> {
    serde_json::from_str(text)
}

pub(crate) struct Welcome<'a> {
    pub conn_id: u64,
    pub user: &'a str,
    pub tenant: &'a str,
    pub heartbeat_interval_ms: u128,
    pub idle_timeout_ms: u128,
    /// With history: the user and broadcast streams' positions and whether resuming them
    /// recovered everything.
    pub streams: Option<[StreamState<'a>; 2]>,
    /// The tenant keeps read cursors: the user stream also reports `acked` and `unread`.
    pub acks: bool,
}

/// What a client learns of a stream it joined or resumed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamState<'a> {
    /// Whether the replay holds every event after the client's position.
    pub recovered: bool,
    /// The stream's latest position; absent when history could not be read.
    pub position: Option<&'a Position>,
    /// The user's read cursor (user streams of tenants with acks).
    pub acked: u64,
}

impl<'a> From<&'a Replay> for StreamState<'a> {
    fn from(r: &'a Replay) -> Self {
        Self { recovered: r.recovered, position: r.position.as_ref(), acked: r.acked }
    }
}

/// `{"epoch", "offset", "recovered"}` of a resumed stream (no position when history could
/// not be read).
fn stream_state(r: &StreamState<'_>) -> serde_json::Value {
    let mut v = json!({ "recovered": r.recovered });
    if let Some(p) = &r.position {
        v["epoch"] = json!(p.epoch);
        v["offset"] = json!(p.offset);
    }
    v
}

pub(crate) fn welcome(w: &Welcome<'_>) -> Bytes {
    let mut v = json!({
        "type": "welcome",
        "connection_id": w.conn_id.to_string(),
        "user": w.user,
        "tenant": w.tenant,
        "heartbeat_interval_ms": w.heartbeat_interval_ms as u64,
        "idle_timeout_ms": w.idle_timeout_ms as u64,
    });
    if let Some([user, broadcast]) = &w.streams {
        let mut user_state = stream_state(user);
        if let (true, Some(p)) = (w.acks, user.position) {
            user_state["acked"] = json!(user.acked);
            user_state["unread"] = json!(p.offset.saturating_sub(user.acked));
        }
        v["streams"] = json!({ "user": user_state, "broadcast": stream_state(broadcast) });
    }
    frame::json(&v)
}

pub(crate) fn subscribed(channel: &str, resumed: Option<StreamState<'_>>) -> Bytes {
    let mut v = json!({ "type": "subscribed", "channel": channel });
    if let Some(r) = resumed
        && let serde_json::Value::Object(state) = stream_state(&r)
    {
        v.as_object_mut().expect("an object").extend(state);
    }
    frame::json(&v)
}

/// The read cursor after an ack: the last offset acked in `epoch`, and how many are unread.
pub(crate) fn acked(epoch: &str, acked: u64, unread: u64) -> Bytes {
    frame::json(&json!({ "type": "acked", "epoch": epoch, "offset": acked, "unread": unread }))
}

/// Sent before the host closes a connection the client should resume elsewhere or again
/// (1001 draining, 1012 resync): reconnect after `retry_after_ms`, a delay in `0..=spread`
/// that differs per connection so clients do not all come back at once.
pub(crate) fn reconnect(conn_id: u64, spread: std::time::Duration, reason: &str) -> Bytes {
    use std::hash::{BuildHasher, RandomState};
    let max = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
    let after = if max == 0 { 0 } else { RandomState::new().hash_one(conn_id) % (max + 1) };
    frame::json(&json!({ "type": "reconnect", "reason": reason, "retry_after_ms": after }))
}

/// Sent before the host closes a connection whose user a backend disconnected (4005).
pub(crate) fn disconnected(reason: Option<&str>) -> Bytes {
    frame::json(&json!({ "type": "disconnected", "reason": reason }))
}

pub(crate) fn unsubscribed(channel: &str) -> Bytes {
    frame::json(&json!({ "type": "unsubscribed", "channel": channel }))
}

pub(crate) fn pong() -> Bytes {
    frame::json(&json!({ "type": "pong" }))
}

pub(crate) fn error(code: &str, message: &str, channel: Option<&str>) -> Bytes {
    let mut v = json!({ "type": "error", "code": code, "message": message });
    if let Some(c) = channel {
        v["channel"] = json!(c);
    }
    frame::json(&v)
}
