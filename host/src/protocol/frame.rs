//! Server-to-client WebSocket frames encoded once into wire bytes (RFC 6455 §5.2): the header
//! and payload of an unmasked final frame, ready to be written to any number of sockets.

use bytes::{BufMut, Bytes, BytesMut};

const OP_TEXT: u8 = 0x1;
pub(crate) const OP_PING: u8 = 0x9;
const FIN: u8 = 0x80;
/// Marks a message compressed with permessage-deflate (RFC 7692 §6).
const RSV1: u8 = 0x40;

fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut out = BytesMut::with_capacity(len + 10);
    out.put_u8(FIN | opcode);
    if len < 126 {
        out.put_u8(len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(len16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
    out.put_slice(payload);
    out.freeze()
}

/// A complete text frame carrying `json`.
pub(crate) fn text(json: &[u8]) -> Bytes {
    encode(OP_TEXT, json)
}

/// A complete text frame carrying `compressed`, a permessage-deflate message.
pub(crate) fn text_compressed(compressed: &[u8]) -> Bytes {
    encode(RSV1 | OP_TEXT, compressed)
}

/// A complete text frame carrying `value` serialised as JSON.
pub(crate) fn json(value: &impl serde::Serialize) -> Bytes {
    let mut payload = Vec::with_capacity(128);
    serde_json::to_writer(&mut payload, value).expect("frames serialise");
    text(&payload)
}

/// The payload of a frame made by [`text`] (its JSON).
pub(crate) fn payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return &[],
    };
    frame.get(header..).unwrap_or_default()
}

/// An empty ping frame.
pub(crate) fn ping() -> Bytes {
    Bytes::from_static(&[FIN | OP_PING, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths() {
        assert_eq!(&text(b"hi")[..], &[0x81, 2, b'h', b'i']);
        let f = text(&[b'a'; 200]);
        assert_eq!(&f[..4], &[0x81, 126, 0, 200]);
        assert_eq!(f.len(), 204);
        let f = text(&vec![b'a'; 70_000]);
        assert_eq!(&f[..2], &[0x81, 127]);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 70_000);
        for n in [2, 200, 70_000] {
            let json = vec![b'a'; n];
            assert_eq!(payload(&text(&json)), &json[..]);
        }
    }
}
