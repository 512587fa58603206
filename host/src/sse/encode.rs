//! Server-Sent Events framing of the host's frames, and the cursor carried in event ids.
//!
//! Each frame the hub queued (a WebSocket frame, encoded once for every transport) becomes
//! one SSE `message` whose `data` is the same JSON a WebSocket client receives; pings
//! become comment lines. The `id` of a frame that moves a stream is the connection's
//! [`Cursor`]: the position of every stream it follows, so the `Last-Event-ID` a client
//! sends back resumes all of them at once.

use std::borrow::Cow;
use std::fmt::Write;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

use crate::protocol::frame;
use crate::session::Resume;
use crate::stream::Position;

/// A stream of the connection, as named in cursors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stream {
    User,
    Broadcast,
    Channel(String),
}

/// The positions of the streams a connection follows, rendered as
/// `user:EPOCH:OFFSET,broadcast:EPOCH:OFFSET,channel:NAME:EPOCH:OFFSET`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    streams: Vec<(Stream, Position)>,
}

/// Where a stream starts: the positions the client resumes from.
impl From<&Resume> for Cursor {
    fn from(resume: &Resume) -> Self {
        let mut cursor = Self::default();
        let own = [(Stream::User, &resume.user), (Stream::Broadcast, &resume.broadcast)];
        for (stream, position) in own {
            if let Some(p) = position {
                cursor.set(stream, p.clone());
            }
        }
        for (name, since) in &resume.channels {
            if let Some(p) = since {
                cursor.set(Stream::Channel(name.clone()), p.clone());
            }
        }
        cursor
    }
}

impl Cursor {
    /// Parses a rendered cursor; `None` names the first malformed entry.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let mut cursor = Self::default();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || format!("{entry:?} is not STREAM:EPOCH:OFFSET");
            let (rest, offset) = entry.rsplit_once(':').ok_or_else(bad)?;
            let (stream, epoch) = rest.rsplit_once(':').ok_or_else(bad)?;
            let position = Position::parse(&format!("{epoch}:{offset}")).ok_or_else(bad)?;
            let stream = match stream {
                "user" => Stream::User,
                "broadcast" => Stream::Broadcast,
                _ => match stream.strip_prefix("channel:") {
                    Some(name) if crate::channel::valid_name(name) => Stream::Channel(name.to_owned()),
                    _ => return Err(bad()),
                },
            };
            cursor.set(stream, position);
        }
        Ok(cursor)
    }

    pub(crate) fn get(&self, stream: &Stream) -> Option<&Position> {
        self.streams.iter().find(|(s, _)| s == stream).map(|(_, p)| p)
    }

    /// Records the position of an event the client received.
    pub(crate) fn set(&mut self, stream: Stream, position: Position) -> bool {
        match self.streams.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, p)) if *p == position => false,
            Some((_, p)) => {
                *p = position;
                true
            }
            None => {
                self.streams.push((stream, position));
                true
            }
        }
    }

    /// Records a stream's latest position from `welcome` or `subscribed`, unless the cursor
    /// already holds a position in the same epoch (the replay that follows moves it).
    fn adopt(&mut self, stream: Stream, position: Position) -> bool {
        match self.get(&stream) {
            Some(p) if p.epoch == position.epoch => false,
            _ => self.set(stream, position),
        }
    }

    fn remove(&mut self, stream: &Stream) -> bool {
        let before = self.streams.len();
        self.streams.retain(|(s, _)| s != stream);
        before != self.streams.len()
    }

    fn render(&self, out: &mut impl Write) {
        for (i, (stream, p)) in self.streams.iter().enumerate() {
            let _ = out.write_str(if i == 0 { "" } else { "," });
            let _ = match stream {
                Stream::User => out.write_str("user"),
                Stream::Broadcast => out.write_str("broadcast"),
                Stream::Channel(name) => write!(out, "channel:{name}"),
            };
            let _ = write!(out, ":{}:{}", p.epoch, p.offset);
        }
    }
}

/// The fields of a frame that matter to SSE framing; the rest (the payload) is skipped.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    user: Option<serde::de::IgnoredAny>,
    #[serde(default, borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(default)]
    broadcast: Option<bool>,
    #[serde(default, borrow)]
    epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default, borrow)]
    streams: Option<OwnStreams<'a>>,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

/// `welcome`'s positions of the user and broadcast streams.
#[derive(Deserialize)]
struct OwnStreams<'a> {
    #[serde(borrow)]
    user: StreamPosition<'a>,
    #[serde(borrow)]
    broadcast: StreamPosition<'a>,
}

#[derive(Deserialize)]
struct StreamPosition<'a> {
    #[serde(default, borrow)]
    epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    offset: Option<u64>,
}

fn position(epoch: Option<Cow<'_, str>>, offset: Option<u64>) -> Option<Position> {
    Some(Position { epoch: epoch?.into_owned(), offset: offset? })
}

/// How a frame moves the cursor: true when it changed.
fn advance(head: Head<'_>, cursor: &mut Cursor) -> bool {
    let channel = |name: Option<Cow<'_, str>>| name.map(|n| Stream::Channel(n.into_owned()));
    match &*head.kind {
        "event" => {
            let stream = if head.user.is_some() {
                Some(Stream::User)
            } else if head.broadcast == Some(true) {
                Some(Stream::Broadcast)
            } else {
                channel(head.channel)
            };
            stream.zip(position(head.epoch, head.offset)).is_some_and(|(s, p)| cursor.set(s, p))
        }
        "welcome" => head.streams.is_some_and(|s| {
            let user = position(s.user.epoch, s.user.offset).is_some_and(|p| cursor.adopt(Stream::User, p));
            let broadcast =
                position(s.broadcast.epoch, s.broadcast.offset).is_some_and(|p| cursor.adopt(Stream::Broadcast, p));
            user | broadcast
        }),
        "subscribed" => {
            channel(head.channel).zip(position(head.epoch, head.offset)).is_some_and(|(s, p)| cursor.adopt(s, p))
        }
        "unsubscribed" => channel(head.channel).is_some_and(|s| cursor.remove(&s)),
        _ => false,
    }
}

/// Appends the SSE form of one queued frame to `out`, moving `cursor`. The fields only this
/// connection sends (`retry`, its cursor as `id`) are written to `fields` and split off it;
/// the data is the frame's own bytes wherever they need no re-framing (JSON without line
/// breaks, as the host encodes it), so every stream shares the bytes encoded once.
pub(crate) fn frame(wire: &Bytes, cursor: &mut Cursor, fields: &mut BytesMut, out: &mut Vec<Bytes>) {
    if wire.first().is_some_and(|b| b & 0x0f == frame::OP_PING) {
        out.push(Bytes::from_static(b": ping\n\n"));
        return;
    }
    let json = frame::payload(wire);
    if let Ok(head) = serde_json::from_slice::<Head<'_>>(json) {
        if let Some(ms) = head.retry_after_ms {
            let _ = writeln!(fields, "retry: {}", ms.max(1));
        }
        if advance(head, cursor) {
            fields.put_slice(b"id: ");
            cursor.render(fields);
            fields.put_u8(b'\n');
        }
    }
    if json.is_empty() || json.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        data(json, fields);
        out.push(fields.split().freeze());
        return;
    }
    if !fields.is_empty() {
        out.push(fields.split().freeze());
    }
    out.push(Bytes::from_static(b"data: "));
    out.push(wire.slice_ref(json));
    out.push(Bytes::from_static(b"\n\n"));
}

/// Appends `json` as a `data` event. JSON has line breaks only as whitespace outside
/// strings: a `\n` continues the data on a new `data:` line (clients join them with `\n`),
/// a `\r` (a line break to SSE) becomes a space.
pub(crate) fn data(json: &[u8], out: &mut BytesMut) {
    out.reserve(json.len() + 16);
    out.put_slice(b"data: ");
    for (i, line) in json.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.put_slice(b"\ndata: ");
        }
        for chunk in line.split_inclusive(|b| *b == b'\r') {
            match chunk.split_last() {
                Some((b'\r', rest)) => {
                    out.put_slice(rest);
                    out.put_u8(b' ');
                }
                _ => out.put_slice(chunk),
            }
        }
    }
    out.put_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse(frames: &[Bytes], cursor: &mut Cursor) -> String {
        let (mut fields, mut out) = (BytesMut::new(), Vec::new());
        for f in frames {
            frame(f, cursor, &mut fields, &mut out);
        }
        assert!(out.iter().all(|piece| !piece.is_empty()), "no empty pieces");
        String::from_utf8(out.concat()).unwrap()
    }

    #[test]
    fn cursors_round_trip() {
        let text = "user:e1:3,broadcast:e2:0,channel:orders:eu.1:e3:17";
        let cursor = Cursor::parse(text).unwrap();
        assert_eq!(cursor.get(&Stream::Channel("orders:eu.1".into())).unwrap().offset, 17);
        let mut rendered = String::new();
        cursor.render(&mut rendered);
        assert_eq!(rendered, text);
        assert!(Cursor::parse("user:e1").is_err());
        assert!(Cursor::parse("nobody:e1:1").is_err());
        assert!(Cursor::parse("channel:a b:e1:1").is_err());
        assert_eq!(Cursor::parse("").unwrap(), Cursor::default());
    }

    #[test]
    fn events_carry_the_cursor_and_pings_are_comments() {
        let mut cursor = Cursor::default();
        let welcome = frame::text(
            br#"{"type":"welcome","user":"u","streams":{"user":{"epoch":"a","offset":2,"recovered":true},"broadcast":{"recovered":false}}}"#,
        );
        let event = frame::text(
            b"{\"type\":\"event\",\"channel\":\"news\",\"epoch\":\"c\",\"offset\":5,\"data\":{\r\n\"x\":1}}",
        );
        let reconnect = frame::text(br#"{"type":"reconnect","retry_after_ms":250}"#);
        let out = sse(&[welcome, event, frame::ping(), reconnect], &mut cursor);
        let mut events = out.split("\n\n");
        assert!(events.next().unwrap().starts_with("id: user:a:2\ndata: {\"type\":\"welcome\""));
        assert_eq!(
            events.next().unwrap(),
            "id: user:a:2,channel:news:c:5\ndata: {\"type\":\"event\",\"channel\":\"news\",\"epoch\":\"c\",\"offset\":5,\"data\":{ \ndata: \"x\":1}}"
        );
        assert_eq!(events.next().unwrap(), ": ping");
        assert_eq!(events.next().unwrap(), "retry: 250\ndata: {\"type\":\"reconnect\",\"retry_after_ms\":250}");
    }

    #[test]
    fn the_data_is_the_frames_own_bytes_and_only_the_fields_are_this_connections() {
        let wire = frame::text(br#"{"type":"event","broadcast":true,"epoch":"b","offset":1,"data":{"x":1}}"#);
        let (mut fields, mut out) = (BytesMut::new(), Vec::new());
        frame(&wire, &mut Cursor::default(), &mut fields, &mut out);
        let json = frame::payload(&wire);
        let shared = out.iter().filter(|p| p.as_ptr() == json.as_ptr() && p.len() == json.len());
        assert_eq!(shared.count(), 1, "the JSON is a view of the frame, not a copy");
        assert_eq!(out[0], "id: broadcast:b:1\n");
    }

    #[test]
    fn a_resumed_position_survives_welcome_in_the_same_epoch() {
        let mut cursor = Cursor::parse("user:a:1").unwrap();
        let welcome = frame::text(
            br#"{"type":"welcome","streams":{"user":{"epoch":"a","offset":9},"broadcast":{"epoch":"b","offset":4}}}"#,
        );
        let out = sse(&[welcome], &mut cursor);
        assert!(out.starts_with("id: user:a:1,broadcast:b:4\n"), "{out}");
    }
}
