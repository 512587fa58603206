//! permessage-deflate (RFC 7692) for server frames: a text frame compressed as one message
//! on its own (no context takeover), once, into bytes every connection that negotiated the
//! extension shares, as every other connection shares the uncompressed frame.
//!
//! Each thread keeps one compressor and resets it per message, so compressing costs no
//! allocation beyond the output and no state per connection.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};

use super::frame;

/// The LZ77 window of every compressed server message, as `server_max_window_bits`. A
/// client that asks for a smaller one gets no compression (docs/PROTOCOL.md).
pub(crate) const WINDOW_BITS: u8 = 15;
/// zlib's compression level: the smallest frames for notification-sized JSON; lower levels
/// save instructions once per event at the cost of every recipient's bytes, higher ones
/// cost more for 1% (BENCHMARKS.md, "Compression level and window").
const LEVEL: u32 = 6;
/// What a sync flush ends a message with: RFC 7692 takes it off each compressed message
/// (§7.2.1), and the receiver puts it back before inflating (§7.2.2).
pub(crate) const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

thread_local! {
    static COMPRESSOR: RefCell<Compress> =
        RefCell::new(Compress::new_with_window_bits(Compression::new(LEVEL), false, WINDOW_BITS));
}

/// `frame` (a text frame made by `frame::text`) as a compressed frame (RSV1 set), or `None`
/// when its payload is shorter than `min_bytes` or does not shrink.
pub(crate) fn deflated(frame: &[u8], min_bytes: usize) -> Option<Bytes> {
    let payload = frame::payload(frame);
    if payload.len() < min_bytes.max(1) {
        return None;
    }
    let compressed = compress(payload);
    (compressed.len() < payload.len()).then(|| frame::text_compressed(&compressed))
}

/// `data` as one raw DEFLATE message without its closing empty block.
pub(crate) fn compress(data: &[u8]) -> Vec<u8> {
    COMPRESSOR.with_borrow_mut(|c| {
        c.reset();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        loop {
            let consumed = c.total_in() as usize;
            let status = c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync);
            debug_assert!(matches!(status, Ok(Status::Ok | Status::BufError)), "deflate takes any input");
            // Done once all input is in and the flush did not fill the output.
            if c.total_in() as usize == data.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use flate2::{Decompress, FlushDecompress};

    use super::*;

    fn inflate(compressed: &[u8]) -> Vec<u8> {
        let mut input = compressed.to_vec();
        input.extend_from_slice(&TAIL);
        let mut d = Decompress::new(false);
        let mut out = Vec::with_capacity(4 << 20);
        d.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
        assert!(out.len() < out.capacity(), "the test's buffer was large enough");
        out
    }

    #[test]
    fn a_compressed_frame_inflates_to_the_payload_and_sets_rsv1() {
        let json = br#"{"type":"event","event":"order.shipped","data":{"order":"A-1","status":"shipped","status_text":"shipped"}}"#;
        let frame = deflated(&frame::text(json), 16).expect("JSON this repetitive shrinks");
        assert_eq!(frame[0], 0x80 | 0x40 | 0x1, "FIN, RSV1, text");
        assert_eq!(inflate(frame::payload(&frame)), json);
    }

    #[test]
    fn small_or_incompressible_payloads_stay_uncompressed() {
        assert!(deflated(&frame::text(br#"{"a":1}"#), 64).is_none(), "under the threshold");
        let unique = br#""abcdefghijklmnopqrstuvwxyz0123456789""#;
        assert!(deflated(&frame::text(unique), 1).is_none(), "nothing repeats: it would grow");
    }

    #[test]
    fn messages_are_independent_and_large_ones_need_more_than_one_pass() {
        let big: Vec<u8> = (0..200_000u32).flat_map(|i| format!("{{\"n\":{i}}},").into_bytes()).collect();
        let one = compress(&big);
        let two = compress(&big);
        assert!(one == two, "no context carried from one message to the next");
        assert!(inflate(&one) == big, "inflates to what was compressed");
    }
}
