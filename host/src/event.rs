//! Events as they travel from ingest through the broker to hubs, and their one-time encoding
//! into client frames.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::alert::Alert;
use crate::protocol::frame;
use crate::protocol::pusher::SocketId;
use crate::segment::Filter;
use crate::stream::{Position, Target};

/// Most users plus channels one event may name.
pub(crate) const MAX_TARGETS: usize = 1000;
/// Longest event name.
pub(crate) const MAX_EVENT_NAME: usize = 128;
/// Most attributes on one event or one identity.
pub(crate) const MAX_ATTRIBUTES: usize = 32;
/// Longest attribute key.
pub(crate) const MAX_ATTRIBUTE_KEY: usize = 64;
/// Longest attribute value.
pub(crate) const MAX_ATTRIBUTE_VALUE: usize = 256;

/// Checks attribute pairs against the limits; returns the offending index and why.
pub(crate) fn check_attributes<'a>(
    pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
) -> Result<(), (usize, String)> {
    if pairs.len() > MAX_ATTRIBUTES {
        return Err((MAX_ATTRIBUTES, format!("at most {MAX_ATTRIBUTES} attributes")));
    }
    for (i, (k, v)) in pairs.enumerate() {
        if k.is_empty() || k.len() > MAX_ATTRIBUTE_KEY || v.len() > MAX_ATTRIBUTE_VALUE {
            return Err((
                i,
                format!("keys are 1-{MAX_ATTRIBUTE_KEY} bytes, values at most {MAX_ATTRIBUTE_VALUE} bytes"),
            ));
        }
    }
    Ok(())
}

/// One published event after validation.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub id: String,
    /// The event name (`event` in publish bodies and client frames).
    pub name: String,
    /// The payload, kept as the publisher's JSON text so it is never re-parsed.
    pub data: Box<RawValue>,
    /// Milliseconds since the Unix epoch when the host accepted the event.
    pub ts: u64,
    pub users: Vec<String>,
    pub channels: Vec<String>,
    pub broadcast: bool,
    /// Event attributes from the publish body, visible to plugins.
    pub attributes: Vec<(String, String)>,
    /// Set by a route plugin: only subscribers whose segment passes receive the event.
    pub filter: Option<Arc<Filter>>,
    /// When the publish request arrived, for the publish-to-enqueue histogram.
    pub received_at: Instant,
    /// The publisher's `idempotency_key`: of the events with one key within
    /// `server.idempotency_window`, only the first is delivered.
    pub idempotency_key: Option<Box<str>>,
    /// The publisher's `delta`: channel subscribers who asked for delta updates and hold the
    /// channel's previous event get this one as the difference from it.
    pub delta: bool,
    /// The publisher's `socket_id` (Pusher API): that Pusher connection does not get it.
    pub except: Option<SocketId>,
    /// The member that sent it, for a client event on a presence channel (Pusher's
    /// `user_id`); it is in the frame.
    pub sender: Option<Box<str>>,
    /// The publisher's `push`: what a push to the users' devices shows and when it goes.
    pub alert: Option<Box<Alert>>,
}

impl Event {
    /// An event named `name` (its id too) to `users` and `channels`, with `{}` as data, for
    /// tests and fuzz targets.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn sample(name: &str, users: &[&str], channels: &[&str]) -> Self {
        let data = RawValue::from_string("{}".into()).expect("JSON");
        Self {
            ts: 0,
            users: users.iter().map(|u| u.to_string()).collect(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            ..Self::on_channel(name.into(), name, "", data, None)
        }
    }

    /// An event the host itself publishes to one channel (a Pusher presence channel's
    /// `pusher_internal:member_added`), with `data` as given, which `except` does not get.
    pub(crate) fn on_channel(
        id: String,
        name: &str,
        channel: &str,
        data: Box<RawValue>,
        except: Option<SocketId>,
    ) -> Self {
        Self {
            id,
            name: name.into(),
            data,
            ts: crate::clock::now_millis(),
            users: Vec::new(),
            channels: vec![channel.into()],
            broadcast: false,
            attributes: Vec::new(),
            filter: None,
            received_at: Instant::now(),
            idempotency_key: None,
            delta: false,
            except,
            sender: None,
            alert: None,
        }
    }

    /// Every stream the event addresses: its users, its channels, then the broadcast.
    pub(crate) fn targets(&self) -> impl Iterator<Item = Target<'_>> {
        let users = self.users.iter().map(|u| Target::User(u));
        let channels = self.channels.iter().map(|c| Target::Channel(c));
        users.chain(channels).chain(self.broadcast.then_some(Target::Broadcast))
    }

    /// Encodes the complete WebSocket frame for one target stream. The result is shared by
    /// every connection of that stream.
    pub(crate) fn encode_for(&self, target: Target<'_>, position: Option<&Position>) -> Bytes {
        let (mut json, after) = self.json_parts(target);
        if let Some(p) = position {
            json.push_str(r#","epoch":"#);
            push_json_str(&mut json, &p.epoch);
            let _ = write!(json, r#","offset":{}"#, p.offset);
        }
        json.push_str(&after);
        frame::text(json.as_bytes())
    }

    /// The event's JSON for one target stream, in two parts: the position (`,"epoch":..,
    /// "offset":..`) goes between them.
    pub(crate) fn json_parts(&self, target: Target<'_>) -> (String, String) {
        let mut json = String::with_capacity(128 + self.id.len() + self.name.len() + self.data.get().len());
        json.push_str(r#"{"type":"event","id":"#);
        push_json_str(&mut json, &self.id);
        json.push_str(r#","event":"#);
        push_json_str(&mut json, &self.name);
        let _ = write!(json, r#","ts":{}"#, self.ts);
        match target {
            Target::User(u) => {
                json.push_str(r#","user":"#);
                push_json_str(&mut json, u);
            }
            Target::Channel(c) => {
                json.push_str(r#","channel":"#);
                push_json_str(&mut json, c);
            }
            Target::Broadcast => json.push_str(r#","broadcast":true"#),
        }
        if let Some(sender) = &self.sender {
            json.push_str(r#","user_id":"#);
            push_json_str(&mut json, sender);
        }
        let mut after = String::with_capacity(10 + self.data.get().len());
        after.push_str(r#","data":"#);
        after.push_str(self.data.get());
        after.push('}');
        (json, after)
    }
}

fn push_json_str(out: &mut String, s: &str) {
    // Serialising a &str into a String cannot fail.
    out.push_str(&serde_json::to_string(s).expect("string serialises"));
}
