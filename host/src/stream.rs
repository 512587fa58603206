//! Stream identity and positions: the user, channel and broadcast streams of a tenant, and
//! the `(epoch, offset)` positions of their events (see docs/PROTOCOL.md), and what a
//! stream's history gives back to a client that resumes it.

use std::sync::Arc;

use bytes::Bytes;

use crate::segment::Filter;

/// The stream an event frame is addressed to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    User(&'a str),
    Channel(&'a str),
    Broadcast,
}

/// A position in a stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Position {
    pub epoch: String,
    pub offset: u64,
}

impl Position {
    /// Parses `EPOCH:OFFSET` (the `user_since` / `broadcast_since` query form).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (epoch, offset) = s.rsplit_once(':')?;
        valid_epoch(epoch).then_some(())?;
        Some(Self { epoch: epoch.to_owned(), offset: offset.parse().ok()? })
    }
}

/// A fresh epoch name: 16 hex digits, unique per call.
pub(crate) fn new_epoch() -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seed = (crate::clock::now_micros(), SEQ.fetch_add(1, Relaxed), std::process::id());
    format!("{:016x}", RandomState::new().hash_one(seed))
}

/// Epochs are short alphanumeric names (the stores make 16 hex digits).
pub(crate) fn valid_epoch(epoch: &str) -> bool {
    !epoch.is_empty() && epoch.len() <= 64 && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// One stored event of a stream: its complete client frame and the route filter it was
/// published with (replays honour it as live delivery does).
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub offset: u64,
    pub frame: Bytes,
    pub filter: Option<Arc<Filter>>,
}

/// What a resuming connection gets: the events it missed, in order, and whether they are all
/// of them (`recovered`; false when history was trimmed past the start or the epoch is
/// another one). `position` is the stream's latest, absent when the store could not be read.
#[derive(Debug, Clone)]
pub(crate) struct Replay {
    pub recovered: bool,
    pub events: Vec<Stored>,
    pub position: Option<Position>,
    /// The read cursor at the snapshot (user streams of tenants with acks; 0 otherwise).
    pub acked: u64,
}

impl Replay {
    /// The store could not be read: nothing replayed, nothing promised.
    pub(crate) fn unavailable() -> Self {
        Self { recovered: false, events: Vec::new(), position: None, acked: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: &str, offset: u64) -> Position {
        Position { epoch: epoch.into(), offset }
    }

    #[test]
    fn parses_positions() {
        assert_eq!(Position::parse("abc:7"), Some(at("abc", 7)));
        assert_eq!(Position::parse("a:b:7"), None);
        assert_eq!(Position::parse(":7"), None);
        assert_eq!(Position::parse("abc:x"), None);
    }
}
