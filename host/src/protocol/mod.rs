//! The client protocol (docs/PROTOCOL.md): the frames clients send, the frames the host
//! builds for them (encoded once into wire bytes, `frame`), and the close codes (`close`).

pub(crate) mod close;
pub(crate) mod compress;
pub(crate) mod delta;
pub(crate) mod frame;
pub(crate) mod pusher;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::segment::Segment;
use crate::stream::{Position, Replay};

/// The protocol a connection speaks: notify's own, or Pusher's (`protocol::pusher`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Native,
    Pusher,
}

/// A frame a client sends (JSON text with a `type`).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ClientFrame {
    Subscribe {
        channel: String,
        /// Resume the channel after this position: missed events are replayed first.
        #[serde(default)]
        since: Option<Since>,
        /// Ask for delta updates on this channel (the one format: `"fossil"`).
        #[serde(default)]
        delta: Option<DeltaFormat>,
        /// A subscription token: the user's backend grants this one channel.
        #[serde(default)]
        token: Option<String>,
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
    /// Fresh credentials for the open connection, before the current ones expire.
    Refresh {
        token: String,
    },
}

/// The delta formats a subscriber can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeltaFormat {
    Fossil,
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
    pub(crate) const REFRESH_REFUSED: &str = "refresh_refused";
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
    pub attributes: &'a Segment,
    /// Unix seconds when the connection's credentials expire.
    pub expires_at: Option<u64>,
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

/// `{"epoch", "offset", "recovered"}` of a joined or resumed stream (no position when
/// history could not be read), with `acked` and `unread` where the welcome reports them.
#[derive(Serialize)]
struct StreamFrame<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    recovered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    acked: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unread: Option<u64>,
}

impl<'a> StreamFrame<'a> {
    /// With `cursor`, the user's read cursor too, when there is a position to count unread
    /// events from.
    fn of(r: &StreamState<'a>, cursor: bool) -> Self {
        let (epoch, offset) = r.position.map(|p| (&*p.epoch, p.offset)).unzip();
        let (acked, unread) = match r.position {
            Some(p) if cursor => (Some(r.acked), Some(p.offset.saturating_sub(r.acked))),
            _ => (None, None),
        };
        Self { epoch, offset, recovered: r.recovered, acked, unread }
    }
}

/// A number that goes on the wire as a JSON string (connection ids exceed what JavaScript
/// numbers hold exactly).
struct AsString(u64);

impl Serialize for AsString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

#[derive(Serialize)]
struct StreamsFrame<'a> {
    user: StreamFrame<'a>,
    broadcast: StreamFrame<'a>,
}

#[derive(Serialize)]
struct WelcomeFrame<'a> {
    r#type: &'static str,
    connection_id: AsString,
    user: &'a str,
    tenant: &'a str,
    heartbeat_interval_ms: u64,
    idle_timeout_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    streams: Option<StreamsFrame<'a>>,
    /// Unix seconds when the credentials expire: refresh before then.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    /// What the tenant's route filters see of this connection, where it has anything.
    #[serde(skip_serializing_if = "no_attributes")]
    attributes: &'a Segment,
}

fn no_attributes(segment: &&Segment) -> bool {
    segment.is_empty()
}

/// Encoded from borrowed fields, without building a JSON value first: one is sent on every
/// connect.
pub(crate) fn welcome(w: &Welcome<'_>) -> Bytes {
    let streams = w.streams.as_ref().map(|[user, broadcast]| StreamsFrame {
        user: StreamFrame::of(user, w.acks),
        broadcast: StreamFrame::of(broadcast, false),
    });
    frame::json(&WelcomeFrame {
        r#type: "welcome",
        connection_id: AsString(w.conn_id),
        user: w.user,
        tenant: w.tenant,
        heartbeat_interval_ms: u64::try_from(w.heartbeat_interval_ms).unwrap_or(u64::MAX),
        idle_timeout_ms: u64::try_from(w.idle_timeout_ms).unwrap_or(u64::MAX),
        streams,
        expires_at: w.expires_at,
        attributes: w.attributes,
    })
}

#[derive(Serialize)]
struct SubscribedFrame<'a> {
    r#type: &'static str,
    channel: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    resumed: Option<StreamFrame<'a>>,
}

pub(crate) fn subscribed(channel: &str, resumed: Option<StreamState<'_>>) -> Bytes {
    frame::json(&SubscribedFrame {
        r#type: "subscribed",
        channel,
        resumed: resumed.map(|r| StreamFrame::of(&r, false)),
    })
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

/// The host ended a subscription, for `reason`.
pub(crate) fn unsubscribed_because(channel: &str, reason: &str) -> Bytes {
    frame::json(&json!({ "type": "unsubscribed", "channel": channel, "reason": reason }))
}

/// Fresh credentials were accepted; they expire at `expires_at` (Unix seconds), if ever.
pub(crate) fn refreshed(expires_at: Option<u64>) -> Bytes {
    frame::json(&json!({ "type": "refreshed", "expires_at": expires_at }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn json(frame: &Bytes) -> serde_json::Value {
        serde_json::from_slice(frame::payload(frame)).expect("a JSON frame")
    }

    #[test]
    fn welcome_and_subscribed_frames_carry_what_the_protocol_says() {
        let user = Position { epoch: "e1".into(), offset: 41 };
        let broadcast = Position { epoch: "e1".into(), offset: 7 };
        let streams = [
            StreamState { recovered: true, position: Some(&user), acked: 40 },
            StreamState { recovered: false, position: Some(&broadcast), acked: 0 },
        ];
        let w = Welcome {
            conn_id: u64::MAX,
            user: "al\"ice",
            tenant: "demo",
            heartbeat_interval_ms: 25_000,
            idle_timeout_ms: 60_000,
            streams: Some(streams),
            acks: true,
            attributes: &Segment::empty(),
            expires_at: Some(1_900_000_000),
        };
        assert_eq!(
            json(&welcome(&w)),
            json!({"type": "welcome", "connection_id": u64::MAX.to_string(), "user": "al\"ice", "tenant": "demo",
                   "heartbeat_interval_ms": 25_000, "idle_timeout_ms": 60_000, "expires_at": 1_900_000_000,
                   "streams": {"user": {"epoch": "e1", "offset": 41, "recovered": true, "acked": 40, "unread": 1},
                               "broadcast": {"epoch": "e1", "offset": 7, "recovered": false}}})
        );
        let unread = StreamState { recovered: false, position: None, acked: 0 };
        let w = Welcome { streams: Some([unread, unread]), acks: true, ..w };
        assert_eq!(
            json(&welcome(&w))["streams"],
            json!({"user": {"recovered": false}, "broadcast": {"recovered": false}})
        );
        assert_eq!(json(&welcome(&Welcome { streams: None, ..w })).get("streams"), None);
        assert_eq!(json(&welcome(&Welcome { expires_at: None, ..w })).get("expires_at"), None);
        let segments = crate::segment::Segments::default();
        let pro = segments.intern(vec![("plan".into(), "pro".into()), ("region".into(), "eu".into())]);
        assert_eq!(
            json(&welcome(&Welcome { attributes: &pro, ..w }))["attributes"],
            json!({"plan": "pro", "region": "eu"})
        );

        assert_eq!(json(&subscribed("news", None)), json!({"type": "subscribed", "channel": "news"}));
        assert_eq!(
            json(&subscribed("news", Some(streams[0]))),
            json!({"type": "subscribed", "channel": "news", "epoch": "e1", "offset": 41, "recovered": true})
        );
    }
}
