//! The generator's side of permessage-deflate (`--deflate true`): the server's compressed
//! messages (RSV1 on their first frame, each compressed on its own) are inflated into plain
//! frames before tungstenite, which knows no extension, reads them.
//!
//! A load generator, not a library: every read goes through a buffer, and a message may be
//! as large as the server sends.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use flate2::{Decompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const RSV1: u8 = 0x40;

/// A socket whose reads inflate compressed server messages when `on`.
pub(crate) struct Inflating<S> {
    inner: S,
    /// Set once the upgrade is done: what comes after are frames.
    pub(crate) on: bool,
    input: Vec<u8>,
    output: Vec<u8>,
    given: usize,
    /// The compressed message being collected: its opcode and payload so far.
    message: Option<(u8, Vec<u8>)>,
    inflater: Option<Box<Decompress>>,
}

impl<S> Inflating<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, on: false, input: Vec::new(), output: Vec::new(), given: 0, message: None, inflater: None }
    }

    /// Moves every complete frame of `input` to `output`, inflating compressed messages.
    fn process(&mut self) -> io::Result<()> {
        let mut at = 0;
        while let Some((first, header, len)) = header(&self.input[at..]) {
            let end = at + header + len;
            if end > self.input.len() {
                break;
            }
            let (fin, opcode) = (first & 0x80 != 0, first & 0x0f);
            let payload = &self.input[at + header..end];
            let frame = &self.input[at..end];
            match (&mut self.message, first & RSV1 != 0) {
                (None, true) => self.message = Some((opcode, payload.to_vec())),
                (Some((_, data)), false) if opcode == 0 => data.extend_from_slice(payload),
                _ => self.output.extend_from_slice(frame),
            }
            if fin
                && opcode & 0x8 == 0
                && let Some((opcode, data)) = self.message.take()
            {
                let plain = inflate(self.inflater.get_or_insert_with(|| Box::new(Decompress::new(false))), &data)?;
                write_frame(&mut self.output, opcode, &plain);
            }
            at = end;
        }
        self.input.drain(..at);
        Ok(())
    }
}

/// A server frame's header at the start of `bytes`: (first byte, header length, payload
/// length), if all of it is there.
fn header(bytes: &[u8]) -> Option<(u8, usize, usize)> {
    let (&first, &b1) = (bytes.first()?, bytes.get(1)?);
    match b1 & 0x7f {
        126 => Some((first, 4, u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize)),
        127 => Some((first, 10, u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize)),
        n => Some((first, 2, n as usize)),
    }
}

fn inflate(d: &mut Decompress, data: &[u8]) -> io::Result<Vec<u8>> {
    d.reset(false);
    let input = [data, &[0, 0, 0xff, 0xff]].concat();
    let mut out = Vec::with_capacity(data.len() * 4 + 64);
    loop {
        let consumed = d.total_in() as usize;
        d.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync).map_err(io::Error::other)?;
        if d.total_in() as usize == input.len() && out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(out.capacity());
    }
}

/// Appends an unmasked final frame of `opcode` carrying `payload`.
fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.on {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        loop {
            if this.given < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.given);
                buf.put_slice(&this.output[this.given..this.given + n]);
                this.given += n;
                if this.given == this.output.len() {
                    this.output.clear();
                    this.given = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.input.extend_from_slice(read.filled());
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inflating<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
