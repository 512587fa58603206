//! Reading what arrives: one reader task per WebSocket connection, counting the generator's
//! events into a tally shared by every connection of the process.
//!
//! Each reader keeps a bit per expected event number, so a second copy of an event counts as
//! a duplicate and a missing one shows as `expected - received`. With `--resume`, a reader
//! the server closes reconnects as a client application would: after the `retry_after_ms`
//! the server asked for, resuming the broadcast from the last event it saw.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::connect::{Ws, open_ws_welcome};
use crate::events::{now_us, number, stamp};

/// What the connections of this process received.
#[derive(Default)]
pub(crate) struct Tally {
    /// Publish-to-receive time of every first copy of an event.
    pub(crate) latencies: Vec<u64>,
    pub(crate) duplicates: u64,
    /// Connections that received every expected event.
    pub(crate) complete: usize,
    /// Connections the server closed (or that failed) before every expected event arrived.
    pub(crate) ended: usize,
    /// Close codes the server sent, with how many connections got each (0: no close frame).
    pub(crate) closes: std::collections::BTreeMap<u16, usize>,
    /// When the last event arrived (Unix µs).
    pub(crate) last_us: u64,
    /// Bytes of the event messages received (after inflating).
    pub(crate) bytes: u64,
    /// With `--resume`: reconnections, those whose welcome said the broadcast was not
    /// recovered, attempts the server sent back to retry later (a `reconnect` frame instead
    /// of the welcome), readers that could not reconnect, and when the last welcome arrived.
    pub(crate) reconnects: u64,
    pub(crate) deferred: u64,
    pub(crate) unrecovered: u64,
    pub(crate) gave_up: u64,
    pub(crate) last_welcome_us: u64,
}

/// Where a reader reconnects (`--resume`).
#[derive(Clone)]
pub(crate) struct Resume {
    pub(crate) url: String,
    pub(crate) source: Option<IpAddr>,
    /// Other nodes (`ws://HOST:PORT/PATH`) to try in turn when `url`'s cannot be reached.
    pub(crate) fallback: Arc<[String]>,
}

impl Resume {
    /// `url` on the `n`-th node: its own (0), then each fallback's, round and round.
    fn node(&self, n: usize) -> String {
        match n % (1 + self.fallback.len()) {
            0 => self.url.clone(),
            k => {
                let query = self.url.split_once('?').map_or("", |(_, q)| q);
                format!("{}?{query}", self.fallback[k - 1])
            }
        }
    }
}

/// A lock on the tally; readers hold it only to record one event.
pub(crate) type Shared = Arc<Mutex<Tally>>;

pub(crate) fn lock(tally: &Shared) -> std::sync::MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads `ws` until it closes (for good, with `resume`), recording events numbered below
/// `events`. Pings are answered by tungstenite while reading, so an idle connection stays
/// open.
pub(crate) fn spawn_reader(
    ws: Ws,
    events: usize,
    tally: Shared,
    resume: Option<Resume>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = Reader { seen: vec![0u64; events.div_ceil(64)], events, received: 0, position: None };
        let mut ws = ws;
        let mut resume = resume;
        let close = loop {
            let (close, wait) = reader.read(&mut ws, &tally, resume.is_some()).await;
            let Some(resume) = &mut resume else { break close };
            match reconnect(resume, reader.position.as_ref(), wait, &tally).await {
                Some((again, welcome, url)) => {
                    // Later reconnects start from the node that answered.
                    resume.url = url;
                    ws = again;
                    let mut t = lock(&tally);
                    t.reconnects += 1;
                    // The welcome's broadcast stream (after the user stream) says whether
                    // everything missed was replayed.
                    let broadcast = welcome.find("\"broadcast\"").map_or("", |i| &welcome[i..]);
                    t.unrecovered += u64::from(!broadcast.contains("\"recovered\":true"));
                    t.last_welcome_us = now_us();
                }
                None => {
                    lock(&tally).gave_up += 1;
                    break close;
                }
            }
        };
        let mut t = lock(&tally);
        if reader.received < events || events == 0 {
            t.ended += 1;
        }
        *t.closes.entry(close).or_default() += 1;
    })
}

/// Reads an SSE stream's `body` until it ends, recording events numbered below `events`
/// from each message's `data`, as `spawn_reader` does from WebSocket frames.
pub(crate) fn spawn_sse_reader(
    body: hyper::body::Incoming,
    events: usize,
    tally: Shared,
) -> tokio::task::JoinHandle<()> {
    use http_body_util::BodyExt as _;
    tokio::spawn(async move {
        let mut reader = Reader { seen: vec![0u64; events.div_ceil(64)], events, received: 0, position: None };
        let (mut body, mut buf) = (body, String::new());
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(chunk) = frame.into_data() else { continue };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let message: String = buf.drain(..end + 2).collect();
                let data: Vec<&str> = message.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                reader.record(&data.join("\n"), &tally);
            }
        }
        let mut t = lock(&tally);
        if reader.received < events {
            t.ended += 1;
        }
    })
}

/// One connection's reading state, kept across reconnects.
struct Reader {
    /// A bit per event number received.
    seen: Vec<u64>,
    events: usize,
    received: usize,
    /// The broadcast's `(epoch, offset)` of the last event received.
    position: Option<(String, u64)>,
}

impl Reader {
    /// Reads until the connection ends; returns its close code and the wait the server
    /// asked for before reconnecting.
    async fn read(&mut self, ws: &mut Ws, tally: &Shared, track: bool) -> (u16, Duration) {
        let (mut close, mut wait) = (0, Duration::ZERO);
        while let Some(Ok(msg)) = ws.next().await {
            let text = match msg {
                Message::Text(text) => text,
                Message::Close(frame) => {
                    close = frame.map_or(0, |f| u16::from(f.code));
                    continue;
                }
                _ => continue,
            };
            if track {
                if text.contains("\"type\":\"reconnect\"") {
                    wait = Duration::from_millis(number(&text, "\"retry_after_ms\":").unwrap_or(0));
                } else if let Some(p) = position(&text) {
                    self.position = Some(p);
                }
            }
            self.record(&text, tally);
        }
        (close, wait)
    }

    fn record(&mut self, text: &str, tally: &Shared) {
        let Some((sent, n)) = stamp(text) else { return };
        let Ok(n) = usize::try_from(n) else { return };
        if n >= self.events {
            return;
        }
        let now = now_us();
        let (word, bit) = (n / 64, 1u64 << (n % 64));
        let mut t = lock(tally);
        if self.seen[word] & bit != 0 {
            t.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        self.received += 1;
        t.bytes += text.len() as u64;
        t.latencies.push(now.saturating_sub(sent));
        t.last_us = t.last_us.max(now);
        if self.received == self.events {
            t.complete += 1;
        }
    }
}

/// `(epoch, offset)` of a broadcast event frame.
fn position(frame: &str) -> Option<(String, u64)> {
    if !frame.contains("\"broadcast\":true") {
        return None;
    }
    let rest = &frame[frame.find("\"epoch\":\"")? + 9..];
    let epoch = &rest[..rest.find('"')?];
    Some((epoch.to_owned(), number(frame, "\"offset\":")?))
}

/// Reconnects after `wait`, resuming the broadcast after `position`; retries a refused
/// connection for up to a minute (a node restarting), moving on to the next fallback node
/// after each failure, and one sent back with a `reconnect` frame after the delay it gives.
/// Returns the connection, its first frame, and the node's URL (without the position).
async fn reconnect(
    resume: &Resume,
    position: Option<&(String, u64)>,
    wait: Duration,
    tally: &Shared,
) -> Option<(Ws, String, String)> {
    tokio::time::sleep(wait).await;
    let mut node = 0;
    for _ in 0..300 {
        let base = resume.node(node);
        let url = match position {
            Some((epoch, offset)) => format!("{base}&broadcast_since={epoch}:{offset}"),
            None => base.clone(),
        };
        match open_ws_welcome(url, resume.source).await {
            Ok((_, first)) if first.contains("\"type\":\"reconnect\"") => {
                lock(tally).deferred += 1;
                tokio::time::sleep(Duration::from_millis(number(&first, "\"retry_after_ms\":").unwrap_or(0))).await;
            }
            Ok((ws, first)) => return Some((ws, first, base)),
            Err(_) => {
                node += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    None
}
