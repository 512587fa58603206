//! The node-to-node message of one event for one stream: the client frame, encoded once by
//! the publishing node, plus what receiving nodes need to deliver it.
//!
//! Layout: version byte `1`, publish time (µs since the Unix epoch, u64 big-endian), filter
//! length (u32 big-endian) and the route filter as JSON (empty when there is none), then the
//! complete WebSocket frame.

use bytes::{BufMut, Bytes, BytesMut};

use crate::segment::Filter;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 4;

/// A decoded envelope.
#[derive(Debug)]
pub struct Envelope {
    pub published_micros: u64,
    pub filter: Option<Filter>,
    pub frame: Bytes,
}

/// Why an envelope could not be decoded (another version, or not ours).
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a notify envelope (version {0})")]
    Version(u8),
    #[error("truncated envelope")]
    Truncated,
    #[error("bad route filter: {0}")]
    Filter(#[from] serde_json::Error),
}

pub fn encode(published_micros: u64, filter: Option<&Filter>, frame: &[u8]) -> Vec<u8> {
    let filter = filter.map(|f| serde_json::to_vec(f).expect("filters serialise")).unwrap_or_default();
    let mut out = BytesMut::with_capacity(HEADER + filter.len() + frame.len());
    out.put_u8(VERSION);
    out.put_u64(published_micros);
    out.put_u32(u32::try_from(filter.len()).expect("filter under 4 GiB"));
    out.put_slice(&filter);
    out.put_slice(frame);
    out.to_vec()
}

/// Decodes an envelope; the frame is a view of `bytes`, not a copy.
pub fn decode(bytes: Bytes) -> Result<Envelope, EnvelopeError> {
    let (&version, rest) = bytes.split_first().ok_or(EnvelopeError::Truncated)?;
    if version != VERSION {
        return Err(EnvelopeError::Version(version));
    }
    if rest.len() < HEADER - 1 {
        return Err(EnvelopeError::Truncated);
    }
    let published_micros = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
    let filter_len = u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
    if rest.len() - 12 < filter_len {
        return Err(EnvelopeError::Truncated);
    }
    let filter = if filter_len == 0 { None } else { Some(serde_json::from_slice(&rest[12..12 + filter_len])?) };
    Ok(Envelope { published_micros, filter, frame: bytes.slice(HEADER + filter_len..) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{Clause, Op};

    #[test]
    fn round_trip() {
        let filter =
            Filter { clauses: Box::new([Clause { key: "plan".into(), op: Op::In, values: Box::new(["pro".into()]) }]) };
        let bytes = encode(42, Some(&filter), b"frame");
        let e = decode(Bytes::from(bytes.clone())).unwrap();
        assert_eq!((e.published_micros, e.filter, &e.frame[..]), (42, Some(filter), &b"frame"[..]));
        let e = decode(Bytes::from(encode(7, None, b""))).unwrap();
        assert!(e.filter.is_none() && e.frame.is_empty());
        assert!(matches!(decode(Bytes::from_static(&[2, 0])), Err(EnvelopeError::Version(2))));
        assert!(matches!(decode(Bytes::from(bytes[..10].to_vec())), Err(EnvelopeError::Truncated)));
    }
}
