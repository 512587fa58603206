//! Reading a client that negotiated permessage-deflate: its compressed messages (RSV1 set on
//! the first frame) are inflated back into plain frames before tungstenite reads them, so
//! tungstenite, which knows no extension, sees only what it already checks (UTF-8, sizes,
//! control frames).
//!
//! Frames without RSV1 go through as they came, unbuffered. A compressed message is held
//! until its last frame, then inflated by the thread's inflater (the client compresses each
//! message on its own: `client_no_context_takeover`), at most up to the message limit, so
//! a small frame that would inflate to gigabytes stops at the limit. The rewritten frame is
//! masked with the all-zero key, which leaves its payload as it is.

use std::cell::RefCell;
use std::io;
use std::task::{Poll, ready};

use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::ReadBuf;

use crate::protocol::compress::TAIL;

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const MASK: u8 = 0x80;

thread_local! {
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// Why a compressed message was refused; the connection closes with the code each names.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InflateError {
    /// 1009.
    #[error("a compressed message inflates beyond connections.max_message_bytes")]
    TooBig,
    /// 1007.
    #[error("a compressed message is not valid DEFLATE data")]
    Corrupt,
    /// 1002.
    #[error("{0}")]
    Protocol(&'static str),
}

impl InflateError {
    /// The error as an I/O error, the only kind a socket read can return.
    fn io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// The read side of a connection that negotiated permessage-deflate.
pub(crate) struct Inflate {
    /// Payload bytes still to come of a frame handed on unchanged.
    skip: u64,
    /// `connections.max_message_bytes`: no message inflates beyond it.
    limit: usize,
    /// What is held while a compressed message (or a frame header split across reads) is
    /// on its way; none between messages, so an idle connection holds nothing.
    busy: Option<Box<Busy>>,
}

#[derive(Default)]
struct Busy {
    /// Received bytes not handed on yet.
    input: Vec<u8>,
    /// Rewritten frames for tungstenite, from `given` on.
    output: Vec<u8>,
    given: usize,
    /// The compressed message being collected: its opcode and its payload so far.
    message: Option<(u8, Vec<u8>)>,
    /// `input` holds bytes not looked at yet (read before the socket was handed over).
    fresh: bool,
}

impl Busy {
    fn idle(&self) -> bool {
        self.input.is_empty() && self.given == self.output.len() && self.message.is_none()
    }
}

impl Inflate {
    /// `pre_read`: what the client sent before the upgrade was handed over, read first.
    pub(crate) fn new(limit: usize, pre_read: &[u8]) -> Self {
        let busy = (!pre_read.is_empty())
            .then(|| Box::new(Busy { input: pre_read.to_vec(), fresh: true, ..Default::default() }));
        Self { skip: 0, limit, busy }
    }

    /// Fills `buf` with what the client sent, compressed messages inflated; `read` reads
    /// from the wire into a buffer.
    pub(crate) fn poll_read(
        &mut self,
        buf: &mut ReadBuf<'_>,
        mut read: impl FnMut(&mut ReadBuf<'_>) -> Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        loop {
            if let Some(busy) = &mut self.busy
                && std::mem::take(&mut busy.fresh)
            {
                busy.process(self.limit).map_err(InflateError::io)?;
            }
            if let Some(busy) = &mut self.busy
                && busy.given < busy.output.len()
            {
                let n = buf.remaining().min(busy.output.len() - busy.given);
                buf.put_slice(&busy.output[busy.given..busy.given + n]);
                busy.given += n;
                if busy.idle() {
                    self.busy = None;
                }
                return Poll::Ready(Ok(()));
            }
            let start = buf.filled().len();
            ready!(read(buf))?;
            if buf.filled().len() == start {
                return Poll::Ready(Ok(()));
            }
            // Bytes from `kept` on moved into `busy`.
            let kept = match &mut self.busy {
                None => {
                    let passed = self.pass(&buf.filled()[start..]);
                    if start + passed == buf.filled().len() {
                        return Poll::Ready(Ok(()));
                    }
                    let busy = self.busy.insert(Box::default());
                    busy.input.extend_from_slice(&buf.filled()[start + passed..]);
                    start + passed
                }
                Some(busy) => {
                    busy.input.extend_from_slice(&buf.filled()[start..]);
                    start
                }
            };
            buf.set_filled(kept);
            let busy = self.busy.as_mut().expect("just set");
            busy.process(self.limit).map_err(InflateError::io)?;
            if busy.idle() {
                self.busy = None;
            }
            if kept > start {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// How many leading bytes of `bytes` are plain frames (or parts of them) that go through
    /// unchanged; stops at a compressed frame or a header cut short.
    fn pass(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        loop {
            let n = usize::try_from(self.skip).unwrap_or(usize::MAX).min(bytes.len() - at);
            self.skip -= n as u64;
            at += n;
            if at == bytes.len() {
                return at;
            }
            match Header::parse(&bytes[at..]) {
                Some(h) if !h.rsv1 => {
                    at += h.len;
                    self.skip = h.payload;
                }
                _ => return at,
            }
        }
    }
}

impl Busy {
    /// Moves every complete frame of `input` to `output`, collecting and inflating compressed
    /// messages.
    fn process(&mut self, limit: usize) -> Result<(), InflateError> {
        let mut input = std::mem::take(&mut self.input);
        let mut at = 0;
        while let Some(h) = Header::parse(&input[at..]) {
            if h.payload > limit as u64 {
                return Err(InflateError::TooBig);
            }
            let end = at + h.len + h.payload as usize;
            if end > input.len() {
                break;
            }
            self.take(&h, &input[at..end], limit)?;
            at = end;
        }
        input.drain(..at);
        self.input = input;
        Ok(())
    }

    /// Handles one complete frame.
    fn take(&mut self, h: &Header, frame: &[u8], limit: usize) -> Result<(), InflateError> {
        let control = h.opcode & 0x8 != 0;
        match (&mut self.message, h.rsv1) {
            (_, true) if control || h.opcode == 0 => {
                return Err(InflateError::Protocol("RSV1 set on a control or continuation frame"));
            }
            (Some(_), _) if !control && h.opcode != 0 => {
                return Err(InflateError::Protocol("a new message began inside a fragmented one"));
            }
            (None, true) => self.message = Some((h.opcode, unmasked(h, frame))),
            (Some((_, data)), false) if h.opcode == 0 => {
                data.extend_from_slice(&unmasked(h, frame));
                if data.len() > limit {
                    return Err(InflateError::TooBig);
                }
            }
            _ => {
                if self.given == self.output.len() {
                    self.output.clear();
                    self.given = 0;
                }
                self.output.extend_from_slice(frame);
                return Ok(());
            }
        }
        if h.fin && !control {
            let (opcode, data) = self.message.take().expect("collecting");
            let plain = inflate(&data, limit)?;
            write_frame(&mut self.output, opcode, &plain);
        }
        Ok(())
    }
}

/// A client frame's header.
struct Header {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    /// The header's length, mask key included.
    len: usize,
    mask: Option<[u8; 4]>,
    payload: u64,
}

impl Header {
    /// The header at the start of `bytes`, if all of it is there.
    fn parse(bytes: &[u8]) -> Option<Self> {
        let (&b0, &b1) = (bytes.first()?, bytes.get(1)?);
        let (payload, mut len) = match b1 & 0x7f {
            126 => (u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)), 4),
            127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 10),
            n => (u64::from(n), 2),
        };
        let mask = if b1 & MASK != 0 {
            let key = bytes.get(len..len + 4)?.try_into().ok()?;
            len += 4;
            Some(key)
        } else {
            None
        };
        Some(Self { fin: b0 & FIN != 0, rsv1: b0 & RSV1 != 0, opcode: b0 & 0x0f, len, mask, payload })
    }
}

/// The payload of `frame`, unmasked.
fn unmasked(h: &Header, frame: &[u8]) -> Vec<u8> {
    let mut payload = frame[h.len..].to_vec();
    if let Some(key) = h.mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    payload
}

/// Inflates one message, refusing it as soon as it passes `limit` bytes.
fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    INFLATER.with_borrow_mut(|d| {
        d.reset(false);
        let mut out = Vec::with_capacity((data.len() * 4).clamp(256, limit + 1));
        for input in [data, &TAIL] {
            let start = d.total_in();
            loop {
                let consumed = (d.total_in() - start) as usize;
                let status = d
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                if out.len() > limit {
                    return Err(InflateError::TooBig);
                }
                let all_in = (d.total_in() - start) as usize == input.len();
                if status == Status::StreamEnd || (all_in && out.len() < out.capacity()) {
                    break;
                }
                if out.len() == out.capacity() {
                    out.reserve((out.capacity()).min(limit + 1 - out.len()).max(1));
                } else if status == Status::BufError {
                    return Err(InflateError::Corrupt);
                }
            }
        }
        Ok(out)
    })
}

/// Appends a final frame of `opcode` carrying `payload`, masked with the all-zero key.
fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(FIN | opcode);
    match payload.len() {
        n if n < 126 => out.push(MASK | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(MASK | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(MASK | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::compress::compress;

    /// A masked client frame.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(MASK | n as u8),
            n => {
                out.push(MASK | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    /// Feeds `wire` to an inflater `chunk` bytes per read; what tungstenite would get.
    fn read_all(wire: &[u8], chunk: usize, limit: usize) -> Result<Vec<u8>, io::Error> {
        read_after(&[], wire, chunk, limit)
    }

    /// [`read_all`] after `pre_read`, bytes read before the socket was handed over.
    fn read_after(pre_read: &[u8], wire: &[u8], chunk: usize, limit: usize) -> Result<Vec<u8>, io::Error> {
        let mut inflate = Inflate::new(limit, pre_read);
        let mut chunks = wire.chunks(chunk);
        let mut got = Vec::new();
        let mut storage = vec![0u8; 64];
        loop {
            let mut buf = ReadBuf::new(&mut storage);
            let poll = inflate.poll_read(&mut buf, |b| {
                if let Some(c) = chunks.next() {
                    let n = c.len().min(b.remaining());
                    assert_eq!(n, c.len(), "chunks fit the buffer");
                    b.put_slice(c);
                }
                Poll::Ready(Ok(()))
            });
            match poll {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    assert!(inflate.busy.is_none(), "nothing held once all was read");
                    return Ok(got);
                }
                Poll::Ready(Ok(())) => got.extend_from_slice(buf.filled()),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => unreachable!(),
            }
        }
    }

    fn kind(e: io::Error) -> String {
        e.into_inner().unwrap().downcast::<InflateError>().unwrap().to_string()
    }

    #[test]
    fn plain_frames_go_through_unchanged_in_any_split() {
        let mut wire = client_frame(FIN | 0x1, br#"{"type":"ping"}"#);
        wire.extend(client_frame(FIN | 0xA, b""));
        wire.extend(client_frame(FIN | 0x1, &[b'x'; 300]));
        for chunk in [1, 2, 7, 64] {
            assert_eq!(read_all(&wire, chunk, 1 << 16).unwrap(), wire, "chunk {chunk}");
        }
    }

    #[test]
    fn a_compressed_message_becomes_one_plain_frame_between_the_others() {
        let text = br#"{"type":"subscribe","channel":"news","channel_again":"news"}"#;
        let compressed = compress(text);
        let mut wire = client_frame(FIN | 0x1, b"before");
        // Fragmented: RSV1 on the first frame only, a ping between the fragments.
        let (a, b) = compressed.split_at(compressed.len() / 2);
        wire.extend(client_frame(RSV1 | 0x1, a));
        wire.extend(client_frame(FIN | 0x9, b"hi"));
        wire.extend(client_frame(FIN, b));
        wire.extend(client_frame(FIN | 0x1, b"after"));
        let mut expected = client_frame(FIN | 0x1, b"before");
        expected.extend(client_frame(FIN | 0x9, b"hi"));
        let mut inflated = Vec::new();
        write_frame(&mut inflated, 0x1, text);
        expected.extend(&inflated);
        expected.extend(client_frame(FIN | 0x1, b"after"));
        for chunk in [1, 3, 64] {
            assert_eq!(read_all(&wire, chunk, 1 << 16).unwrap(), expected, "chunk {chunk}");
        }
        // Part of it read before the socket was handed over: inflated all the same.
        for split in [3, 20, wire.len() / 2] {
            assert_eq!(read_after(&wire[..split], &wire[split..], 7, 1 << 16).unwrap(), expected, "split {split}");
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_bad_frames_are_refused() {
        let bomb = compress(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 20_000, "a small frame: {}", bomb.len());
        let wire = client_frame(FIN | RSV1 | 0x1, &bomb);
        let e = read_all(&wire, 64, 1 << 16).unwrap_err();
        assert_eq!(kind(e), InflateError::TooBig.to_string());

        let corrupt = client_frame(FIN | RSV1 | 0x1, &[0xff; 40]);
        assert_eq!(kind(read_all(&corrupt, 64, 1 << 16).unwrap_err()), InflateError::Corrupt.to_string());

        let rsv1_on_ping = client_frame(FIN | RSV1 | 0x9, b"x");
        assert!(kind(read_all(&rsv1_on_ping, 64, 1 << 16).unwrap_err()).contains("control"));
    }
}
