//! Reading what arrives: one reader task per WebSocket connection, counting the generator's
//! events into a tally shared by every connection of the process.
//!
//! Each reader keeps a bit per expected event number, so a second copy of an event counts as
//! a duplicate and a missing one shows as `expected - received`.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::connect::Ws;
use crate::events::{now_us, stamp};

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
}

/// A lock on the tally; readers hold it only to record one event.
pub(crate) type Shared = Arc<Mutex<Tally>>;

pub(crate) fn lock(tally: &Shared) -> std::sync::MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads `ws` until it closes, recording events numbered below `events`. Pings are answered
/// by tungstenite while reading, so an idle connection stays open.
pub(crate) fn spawn_reader(mut ws: Ws, events: usize, tally: Shared) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = vec![0u64; events.div_ceil(64)];
        let mut received = 0;
        let mut close = 0;
        while let Some(Ok(msg)) = ws.next().await {
            let text = match msg {
                Message::Text(text) => text,
                Message::Close(frame) => {
                    close = frame.map_or(0, |f| u16::from(f.code));
                    continue;
                }
                _ => continue,
            };
            let Some((sent, n)) = stamp(&text) else { continue };
            let Ok(n) = usize::try_from(n) else { continue };
            if n >= events {
                continue;
            }
            let now = now_us();
            let (word, bit) = (n / 64, 1u64 << (n % 64));
            let mut t = lock(&tally);
            if seen[word] & bit != 0 {
                t.duplicates += 1;
                continue;
            }
            seen[word] |= bit;
            received += 1;
            t.latencies.push(now.saturating_sub(sent));
            t.last_us = t.last_us.max(now);
            if received == events {
                t.complete += 1;
            }
        }
        let mut t = lock(&tally);
        if received < events || events == 0 {
            t.ended += 1;
        }
        *t.closes.entry(close).or_default() += 1;
    })
}
