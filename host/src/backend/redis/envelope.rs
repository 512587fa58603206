//! The node-to-node message of one event for one stream: the client frame, encoded once by
//! the publishing node, plus what receiving nodes need to deliver it. History in Redis
//! stores the same bytes.
//!
//! Layout: version byte `2`, publish time (µs since the Unix epoch, u64 big-endian), filter
//! length (u32 big-endian) and the route filter as JSON (empty when there is none), position
//! length (one byte) and the position as `EPOCH:OFFSET` (empty without history), then the
//! complete WebSocket frame. Everything up to the position is the *head*, which the Redis
//! history script completes. Version `3` has a flags byte after the publish time (bit 0:
//! the publisher asked for delta updates; bit 1: a Pusher connection does not get it, and
//! its socket id follows, node u32 and connection u64 big-endian); it is written only when
//! a flag is set, so nodes that know only version 2 miss only such events during a rolling
//! upgrade.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::pusher::SocketId;
use crate::segment::Filter;
use crate::stream::Position;

const VERSION: u8 = 2;
const VERSION_FLAGS: u8 = 3;
const HEAD: usize = 1 + 8 + 4;
const DELTA: u8 = 1;
const EXCEPT: u8 = 2;

/// A decoded envelope.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub published_micros: u64,
    /// The publisher asked for delta updates.
    pub delta: bool,
    /// The Pusher connection that does not get it.
    pub except: Option<SocketId>,
    pub filter: Option<Filter>,
    pub position: Option<Position>,
    pub frame: Bytes,
}

/// Why an envelope could not be decoded (another version, or not ours).
#[derive(Debug, thiserror::Error)]
pub(crate) enum EnvelopeError {
    #[error("not a notify envelope (version {0})")]
    Version(u8),
    #[error("truncated envelope")]
    Truncated,
    #[error("bad route filter: {0}")]
    Filter(#[from] serde_json::Error),
    #[error("bad position")]
    Position,
}

/// The head: version, publish time, flags (with the excepted socket id) and filter.
pub(crate) fn head(
    published_micros: u64,
    (delta, except): (bool, Option<SocketId>),
    filter: Option<&Filter>,
) -> Vec<u8> {
    let filter = filter.map(|f| serde_json::to_vec(f).expect("filters serialise")).unwrap_or_default();
    let mut out = BytesMut::with_capacity(HEAD + 1 + 12 + filter.len());
    let flags = if delta { DELTA } else { 0 } | if except.is_some() { EXCEPT } else { 0 };
    out.put_u8(if flags != 0 { VERSION_FLAGS } else { VERSION });
    out.put_u64(published_micros);
    if flags != 0 {
        out.put_u8(flags);
    }
    if let Some(socket) = except {
        out.put_u32(socket.node);
        out.put_u64(socket.conn);
    }
    out.put_u32(u32::try_from(filter.len()).expect("filter under 4 GiB"));
    out.put_slice(&filter);
    out.to_vec()
}

/// A whole envelope without a position, after `head`.
pub(crate) fn encode(head: &[u8], frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + 1 + frame.len());
    out.extend_from_slice(head);
    out.push(0);
    out.extend_from_slice(frame);
    out
}

/// Decodes an envelope; the frame is a view of `bytes`, not a copy.
pub(crate) fn decode(bytes: Bytes) -> Result<Envelope, EnvelopeError> {
    let (&version, rest) = bytes.split_first().ok_or(EnvelopeError::Truncated)?;
    let flags_len = match version {
        VERSION => 0,
        VERSION_FLAGS => 1,
        _ => return Err(EnvelopeError::Version(version)),
    };
    let head = HEAD + flags_len;
    if rest.len() < head - 1 {
        return Err(EnvelopeError::Truncated);
    }
    let published_micros = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
    let flags = if flags_len == 1 { rest[8] } else { 0 };
    let rest = &rest[8 + flags_len..];
    let (except, rest) = match flags & EXCEPT {
        0 => (None, rest),
        _ if rest.len() < 12 + 4 => return Err(EnvelopeError::Truncated),
        _ => {
            let node = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
            let conn = u64::from_be_bytes(rest[4..12].try_into().expect("8 bytes"));
            (Some(SocketId { node, conn }), &rest[12..])
        }
    };
    let head = head + if except.is_some() { 12 } else { 0 };
    let filter_len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let rest = &rest[4..];
    if rest.len() <= filter_len {
        return Err(EnvelopeError::Truncated);
    }
    let filter = if filter_len == 0 { None } else { Some(serde_json::from_slice(&rest[..filter_len])?) };
    let position_len = rest[filter_len] as usize;
    let rest = &rest[filter_len + 1..];
    if rest.len() < position_len {
        return Err(EnvelopeError::Truncated);
    }
    let position = match position_len {
        0 => None,
        _ => {
            let text = std::str::from_utf8(&rest[..position_len]).map_err(|_| EnvelopeError::Position)?;
            Some(Position::parse(text).ok_or(EnvelopeError::Position)?)
        }
    };
    let frame_at = head + filter_len + 1 + position_len;
    let delta = flags & DELTA != 0;
    Ok(Envelope { published_micros, delta, except, filter, position, frame: bytes.slice(frame_at..) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{Clause, Op};

    #[test]
    fn round_trip() {
        let filter =
            Filter { clauses: Box::new([Clause { key: "plan".into(), op: Op::In, values: Box::new(["pro".into()]) }]) };
        let bytes = encode(&head(42, (false, None), Some(&filter)), b"frame");
        let e = decode(Bytes::from(bytes.clone())).unwrap();
        assert_eq!(
            (e.published_micros, e.filter, e.position, &e.frame[..]),
            (42, Some(filter.clone()), None, &b"frame"[..])
        );
        assert!(!e.delta);
        let e = decode(Bytes::from(encode(&head(7, (false, None), None), b""))).unwrap();
        assert!(e.filter.is_none() && e.frame.is_empty());
        let delta = encode(&head(8, (true, None), None), b"frame");
        assert_eq!(delta[0], VERSION_FLAGS, "flags need version 3; without any, version 2 as before");
        let e = decode(Bytes::from(delta)).unwrap();
        assert_eq!((e.published_micros, e.delta, &e.frame[..]), (8, true, &b"frame"[..]));
        let socket = SocketId { node: 12, conn: u64::MAX };
        let except = encode(&head(9, (false, Some(socket)), Some(&filter)), b"frame");
        let e = decode(Bytes::from(except)).unwrap();
        assert_eq!((e.delta, e.except, e.filter.is_some(), &e.frame[..]), (false, Some(socket), true, &b"frame"[..]));
        assert!(matches!(decode(Bytes::from_static(&[1, 0])), Err(EnvelopeError::Version(1))));
        assert!(matches!(decode(Bytes::from(bytes[..10].to_vec())), Err(EnvelopeError::Truncated)));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // Every truncation and many single-byte corruptions of a valid envelope, and random
        // buffers: decoding answers Ok or Err, never panics, and a frame stays in bounds.
        let mut valid = head(5, (true, Some(SocketId { node: 9, conn: 3 })), None);
        valid.extend_from_slice(&[4]);
        valid.extend_from_slice(b"ab:7frame");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for cut in 0..=valid.len() {
            let _ = decode(Bytes::from(valid[..cut].to_vec()));
        }
        for _ in 0..20_000 {
            let mut bytes = valid.clone();
            let i = (next() as usize) % bytes.len();
            bytes[i] = next() as u8;
            if let Ok(e) = decode(Bytes::from(bytes.clone())) {
                assert!(e.frame.len() <= bytes.len());
            }
            let random: Vec<u8> = (0..(next() % 64) as usize).map(|_| next() as u8).collect();
            let _ = decode(Bytes::from(random));
        }
    }

    #[test]
    fn carries_the_position_the_history_script_writes() {
        // What append.lua builds: head, position length, position, frame.
        let mut bytes = head(9, (false, None), None);
        bytes.push(4);
        bytes.extend_from_slice(b"ab:7");
        bytes.extend_from_slice(b"frame");
        let e = decode(Bytes::from(bytes)).unwrap();
        assert_eq!(e.position, Some(Position { epoch: "ab".into(), offset: 7 }));
        assert_eq!(&e.frame[..], b"frame");
        let mut bad = head(9, (false, None), None);
        bad.extend_from_slice(&[3, b'a', b'b', b':']);
        assert!(matches!(decode(Bytes::from(bad)), Err(EnvelopeError::Position)));
    }
}
