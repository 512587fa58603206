//! The Pusher Channels protocol, version 7 (docs/PUSHER.md): the frames a Pusher client
//! sends, the frames notify sends it, an event's Pusher frame made once from its native one,
//! the close codes Pusher clients act on, and the HMAC-SHA256 signatures Pusher's channel
//! authorization and request signing use.
//!
//! Pusher's frames are `{"event", "channel"?, "data"}`; the service sends `data` as a JSON
//! string (the payload encoded once more) on events, the connection's establishment and
//! subscriptions, and as an object on errors. Clients decode both.

use std::borrow::Cow;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::Sha256;

use super::frame;

/// The protocol versions served; pusher-js 7 and 8 speak 7.
pub(crate) const VERSIONS: std::ops::RangeInclusive<u32> = 5..=7;
/// Seconds of silence after which a client pings (`activity_timeout`), as Pusher sends it.
pub(crate) const ACTIVITY_TIMEOUT_SECS: u64 = 120;

/// Close codes Pusher clients act on: 4000-4099 do not reconnect, 4100-4199 reconnect after
/// a back-off, 4200-4299 reconnect at once.
pub(crate) mod close {
    /// No tenant has this key (`App key ... not in this cluster`).
    pub(crate) const UNKNOWN_APP: u16 = 4001;
    /// The tenant was deleted (Pusher: the app is disabled).
    pub(crate) const APP_DISABLED: u16 = 4003;
    /// The tenant is at a connection quota.
    pub(crate) const OVER_QUOTA: u16 = 4004;
    /// The `protocol` query parameter names a version not served.
    pub(crate) const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// No `protocol` query parameter.
    pub(crate) const NO_PROTOCOL: u16 = 4008;
    /// Not allowed: a refused origin, or a backend closed the connection.
    pub(crate) const UNAUTHORIZED: u16 = 4009;
    /// Reconnect after a back-off: the client fell behind or the node cannot serve it now.
    pub(crate) const OVER_CAPACITY: u16 = 4100;
    /// Reconnect now (a node shutting down, or one that may have missed events).
    pub(crate) const RECONNECT: u16 = 4200;
    /// The client was silent past the idle timeout.
    pub(crate) const NO_PONG: u16 = 4201;
    /// A client event over the connection's rate (an error; the connection stays open).
    pub(crate) const CLIENT_EVENT_RATE: u16 = 4301;
}

/// The Pusher close code of a native one (docs/PROTOCOL.md) with the same meaning for the
/// client; codes below 4000 (a broken protocol, a message too big) are Pusher's too.
pub(crate) fn close_code(native: u16) -> u16 {
    use super::close as n;
    match native {
        n::GOING_AWAY | n::SERVICE_RESTART => close::RECONNECT,
        n::TRY_AGAIN_LATER | n::SLOW_CLIENT => close::OVER_CAPACITY,
        n::IDLE_TIMEOUT => close::NO_PONG,
        n::TENANT_DELETED => close::APP_DISABLED,
        n::DISCONNECTED | n::CREDENTIALS_EXPIRED => close::UNAUTHORIZED,
        other => other,
    }
}

/// A Pusher connection's socket id, `NODE.CONN`: a number drawn when the process started,
/// so ids differ across nodes and restarts, and the connection's number on its node.
/// Channel signatures are made for it, so one is good for one connection only; an event
/// published with it (`socket_id`) reaches every subscriber but that connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketId {
    pub node: u32,
    pub conn: u64,
}

impl SocketId {
    /// The socket id of this node's connection `conn`.
    pub(crate) fn of(conn: u64) -> Self {
        Self { node: this_node(), conn }
    }

    /// Parses `NODE.CONN`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (node, conn) = text.split_once('.')?;
        Some(Self { node: node.parse().ok()?, conn: conn.parse().ok()? })
    }

    /// Whether it is this node's connection `conn`.
    pub(crate) fn is(&self, conn: u64) -> bool {
        self.conn == conn && self.node == this_node()
    }
}

impl std::fmt::Display for SocketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.node, self.conn)
    }
}

/// This process's part of its socket ids.
fn this_node() -> u32 {
    static NODE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *NODE.get_or_init(|| {
        let mut bytes = [0; 4];
        // A node whose draw failed still numbers its own connections apart.
        let _ = getrandom::fill(&mut bytes);
        u32::from_le_bytes(bytes) % 1_000_000_000
    })
}

/// A frame a Pusher client sends.
#[derive(Debug)]
pub(crate) enum ClientFrame {
    Ping,
    Subscribe {
        channel: String,
        auth: Option<String>,
        channel_data: Option<String>,
    },
    Unsubscribe {
        channel: String,
    },
    /// Signing in as the user `user_data` names, with the signature of the app's backend.
    Signin {
        auth: String,
        user_data: String,
    },
    /// A client event (`client-*`) for the other subscribers of a channel.
    ClientEvent {
        event: String,
        channel: Option<String>,
        data: Box<RawValue>,
    },
    /// An event the protocol has but this node does not act on.
    Other,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SubscribeData {
    channel: String,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    channel_data: Option<String>,
}

#[derive(Deserialize)]
struct SigninData {
    auth: String,
    user_data: String,
}

#[derive(Deserialize)]
struct UnsubscribeData {
    channel: String,
}

/// Parses a Pusher client frame, or explains what is wrong with it.
pub(crate) fn parse(text: &str) -> Result<ClientFrame, serde_json::Error> {
    let message: Message<'_> = serde_json::from_str(text)?;
    let data = || message.data.map_or("null", RawValue::get);
    Ok(match &*message.event {
        "pusher:ping" => ClientFrame::Ping,
        "pusher:subscribe" => {
            let SubscribeData { channel, auth, channel_data } = serde_json::from_str(data())?;
            ClientFrame::Subscribe { channel, auth, channel_data }
        }
        "pusher:unsubscribe" => {
            let UnsubscribeData { channel } = serde_json::from_str(data())?;
            ClientFrame::Unsubscribe { channel }
        }
        "pusher:signin" => {
            let SigninData { auth, user_data } = serde_json::from_str(data())?;
            ClientFrame::Signin { auth, user_data }
        }
        client if client.starts_with("client-") => ClientFrame::ClientEvent {
            event: client.to_owned(),
            channel: message.channel,
            data: RawValue::from_string(data().to_owned())?,
        },
        _ => ClientFrame::Other,
    })
}

/// `{"event", "channel"?, "data"}` with `data` as the JSON string of `data`.
fn with_string_data(event: &str, channel: Option<&str>, data: &Value) -> Bytes {
    let mut frame = json!({ "event": event, "data": data.to_string() });
    if let Some(channel) = channel {
        frame["channel"] = json!(channel);
    }
    frame::json(&frame)
}

/// The first frame of a connection: its socket id and how long it may stay silent.
pub(crate) fn connection_established(socket_id: &str) -> Bytes {
    let data = json!({ "socket_id": socket_id, "activity_timeout": ACTIVITY_TIMEOUT_SECS });
    with_string_data("pusher:connection_established", None, &data)
}

pub(crate) fn pong() -> Bytes {
    with_string_data("pusher:pong", None, &json!({}))
}

/// A subscription took; `data` is `{}` or, on a presence channel, its members.
pub(crate) fn subscription_succeeded(channel: &str, data: &Value) -> Bytes {
    with_string_data("pusher_internal:subscription_succeeded", Some(channel), data)
}

/// A cache channel had no event to replay to a new subscriber.
pub(crate) fn cache_miss(channel: &str) -> Bytes {
    frame::json(&json!({ "event": "pusher:cache_miss", "channel": channel }))
}

/// Whether `channel` is a cache channel: its last event is replayed to each new subscriber.
pub(crate) fn is_cache(channel: &str) -> bool {
    ["cache-", "private-cache-", "presence-cache-", "private-encrypted-cache-"].iter().any(|p| channel.starts_with(p))
}

/// A signin took: the `user_data` it signed in with.
pub(crate) fn signin_success(user_data: &str) -> Bytes {
    with_string_data("pusher:signin_success", None, &json!({ "user_data": user_data }))
}

/// The channel a signed-in user's server-to-user events travel on.
pub(crate) fn user_channel(user: &str) -> String {
    format!("{USER_CHANNEL}{user}")
}

/// Server-to-user channels' names start with this.
pub(crate) const USER_CHANNEL: &str = "#server-to-user-";

/// A subscription was refused: `kind` is `AuthError` for a missing or wrong signature.
pub(crate) fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> Bytes {
    let data = json!({ "type": kind, "error": error, "status": status });
    frame::json(&json!({ "event": "pusher:subscription_error", "channel": channel, "data": data }))
}

/// An error about the connection; with a code in 4000-4299 the connection closes next.
pub(crate) fn error(code: Option<u16>, message: &str) -> Bytes {
    frame::json(&json!({ "event": "pusher:error", "data": { "code": code, "message": message } }))
}

/// What a Pusher event frame takes from a native event frame.
#[derive(Deserialize)]
struct NativeEvent<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Serialize)]
struct PusherEvent<'a> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    data: Cow<'a, RawValue>,
}

/// The Pusher frame of a native event frame (`event::Event::encode_for`): its name, its
/// channel (none for the broadcast), its sender's `user_id` (presence client events), and
/// its data as a JSON string; data published through
/// the Pusher API, a string already, is kept as it is. `None` for a frame that is not an event.
pub(crate) fn event_from(native: &[u8]) -> Option<Bytes> {
    let e: NativeEvent<'_> = serde_json::from_slice(frame::payload(native)).ok()?;
    let raw = e.data.get();
    let data = if raw.starts_with('"') {
        Cow::Borrowed(e.data)
    } else {
        let quoted = serde_json::to_string(raw).expect("strings serialise");
        Cow::Owned(RawValue::from_string(quoted).expect("a JSON string"))
    };
    let (event, channel, user_id) = (&e.event, e.channel.as_deref(), e.user_id.as_deref());
    Some(frame::json(&PusherEvent { event, channel, user_id, data }))
}

/// Pusher's signature of `text`: HMAC-SHA256 keyed by the secret, in lower-case hex.
pub(crate) fn sign(secret: &str, text: &str) -> String {
    sign_bytes(secret, text.as_bytes())
}

/// [`sign`] of bytes (a webhook's body).
pub(crate) fn sign_bytes(secret: &str, bytes: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(bytes);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(frame: &Bytes) -> Value {
        serde_json::from_slice(frame::payload(frame)).expect("a JSON frame")
    }

    #[test]
    fn events_carry_their_data_as_a_json_string() {
        let native =
            frame::text(br#"{"type":"event","id":"1","event":"order","ts":1,"channel":"c-1","data":{"id":7}}"#);
        assert_eq!(
            json_of(&event_from(&native).unwrap()),
            json!({"event": "order", "channel": "c-1", "data": "{\"id\":7}"})
        );
        let native = frame::text(
            br#"{"type":"event","id":"1","event":"client-x","ts":1,"channel":"presence-a","user_id":"7","data":{}}"#,
        );
        assert_eq!(
            json_of(&event_from(&native).unwrap()),
            json!({"event": "client-x", "channel": "presence-a", "user_id": "7", "data": "{}"})
        );
        let native = frame::text(br#"{"type":"event","id":"1","event":"e","ts":1,"broadcast":true,"data":"a \"b\""}"#);
        assert_eq!(json_of(&event_from(&native).unwrap()), json!({"event": "e", "data": "a \"b\""}));
        assert_eq!(event_from(&frame::text(br#"{"type":"pong"}"#)), None);
    }

    #[test]
    fn client_frames_parse_as_pusher_js_sends_them() {
        assert!(matches!(parse(r#"{"event":"pusher:ping","data":{}}"#).unwrap(), ClientFrame::Ping));
        assert!(matches!(
            parse(r#"{"event":"pusher:subscribe","data":{"auth":"k:s","channel":"private-a"}}"#).unwrap(),
            ClientFrame::Subscribe { channel, auth: Some(auth), channel_data: None } if channel == "private-a" && auth == "k:s"
        ));
        assert!(matches!(
            parse(r#"{"event":"pusher:unsubscribe","data":{"channel":"a"}}"#).unwrap(),
            ClientFrame::Unsubscribe { channel } if channel == "a"
        ));
        let ClientFrame::ClientEvent { event, channel, data } =
            parse(r#"{"event":"client-typing","channel":"private-a","data":{"who":"ann"}}"#).unwrap()
        else {
            panic!("not a client event")
        };
        assert_eq!((&*event, channel.as_deref(), data.get()), ("client-typing", Some("private-a"), r#"{"who":"ann"}"#));
        assert!(parse(r#"{"event":"pusher:subscribe","data":{}}"#).is_err());
        assert!(parse("[]").is_err());
    }

    /// The worked example of Pusher's channel authorization documentation.
    #[test]
    fn signs_as_pusher_documents() {
        let signature = sign("7ad3773142a6692b25b8", "1234.1234:private-foobar");
        assert_eq!(signature, "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4");
    }
}
