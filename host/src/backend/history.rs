//! Stream history: every user, channel and broadcast stream of a tenant has positions
//! `(epoch, offset)`. Offsets increase by one per event with no gaps; the epoch names one
//! lifetime of the stream's history (a new one when the store lost it: a restart of the
//! in-memory store, a flushed or expired Redis key), so a client can tell a continuation
//! from a new history.
//!
//! [`History`] is what connections read: the events after a position, and the per-user
//! read cursor that acks move. Appending belongs to the broker, because appending and
//! delivering an event must be one step per stream: the memory store appends under the
//! stream's lock in the memory broker, the Redis store in one Lua script that also publishes.

use std::time::Duration;

use super::{BackendError, BoxFuture};
use crate::stream::{Position, Replay, Target};
use crate::tenant::Tenant;

/// How long a stream's position (epoch, offset, read cursor) outlives its last use beyond
/// `ttl`: a client that missed nothing still resumes with `recovered: true` after a quiet day.
pub(crate) const POSITION_GRACE: Duration = Duration::from_secs(24 * 3600);

/// A user's read cursor: the user stream's latest position and the last offset acked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub epoch: String,
    pub offset: u64,
    pub acked: u64,
}

impl Cursor {
    pub(crate) fn unread(&self) -> u64 {
        self.offset.saturating_sub(self.acked)
    }
}

/// What an ack did: the read cursor after it, and whether this ack moved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CursorMove {
    pub cursor: Cursor,
    pub moved: bool,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Start<'a> {
    /// The client's last position in the stream.
    pub since: Option<&'a Position>,
    /// Also replay everything after the user's read cursor (acks on, user stream).
    pub unacked: bool,
}

impl<'a> Start<'a> {
    /// This start, from `origin` (the stream's offset 0) when the client's position is a look
    /// that covers the stream: a read of a stream that held nothing answers a look epoch
    /// (both stores), and a client resuming from it has missed nothing since.
    pub(super) fn starting_at_origin(self, origin: Option<&'a Position>) -> Self {
        match origin {
            Some(origin) => Self { since: Some(origin), ..self },
            None => self,
        }
    }
}

/// How much history a tenant keeps per stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub size: usize,
    pub ttl: Duration,
}

impl From<crate::config::HistoryConfig> for Limits {
    fn from(c: crate::config::HistoryConfig) -> Self {
        Self { size: c.size, ttl: c.ttl }
    }
}

/// Why history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HistoryError {
    #[error("history unavailable: {0}")]
    Unavailable(#[from] BackendError),
    #[error("history unavailable: the stream has no position")]
    NoPosition,
    #[error("position {0}:{1} is not in the current history (epoch {2}, latest offset {3})")]
    StalePosition(String, u64, String, u64),
    /// The error of a read shared with other connections (see `coalesce`).
    #[error("{0}")]
    Shared(String),
}

/// Reads stream history and keeps read cursors.
///
/// Contract:
/// - `read` is one consistent snapshot: the events returned are exactly those kept after the
///   start (the client's `since`, the stream's beginning when `since` is of another epoch,
///   or the read cursor when it is earlier and `unacked` is set), in offset order, and `position` is the stream's latest at that same instant.
///   Together with a connection that joined the stream's live delivery before the read, every
///   event after the start reaches it: replayed when its offset is at most `position`, live
///   otherwise.
/// - `ack` moves the user's read cursor forward only (never past the latest offset) and
///   returns it, with whether this ack moved it: of acks racing to one offset, on any
///   node, exactly one did; a position of another epoch is refused.
pub(crate) trait History: Send + Sync + 'static {
    fn read<'a>(
        &'a self,
        tenant: &'a Tenant,
        target: Target<'a>,
        from: Start<'a>,
    ) -> BoxFuture<'a, Result<Replay, HistoryError>>;

    fn ack<'a>(
        &'a self,
        tenant: &'a Tenant,
        user: &'a str,
        position: &'a Position,
    ) -> BoxFuture<'a, Result<CursorMove, HistoryError>>;

    /// Drops every stream of a deleted tenant; returns how many. (A publish racing the
    /// deletion may leave a stream behind, which expires like any idle one.)
    fn forget<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<usize, HistoryError>>;

    /// How many streams this node keeps in memory (`None`: the store is elsewhere).
    fn streams_kept(&self) -> Option<usize> {
        None
    }

    /// The user's read cursor, from a snapshot of the user stream.
    fn cursor<'a>(&'a self, tenant: &'a Tenant, user: &'a str) -> BoxFuture<'a, Result<Cursor, HistoryError>> {
        Box::pin(async move {
            let replay = self.read(tenant, Target::User(user), Start { since: None, unacked: false }).await?;
            let Position { epoch, offset } = replay.position.ok_or(HistoryError::NoPosition)?;
            Ok(Cursor { epoch, offset, acked: replay.acked })
        })
    }
}

/// The part of a snapshot both stores compute the same way: where the replay starts and
/// whether everything after it is still kept.
///
/// `epoch`/`last`/`acked` describe the stream; `oldest` is the offset of its oldest kept event
/// (`last + 1` when none is kept).
/// A position of another epoch starts the replay at the stream's beginning: the client's
/// history is gone, and everything of this one is new to it.
pub(super) fn plan(from: Start<'_>, epoch: &str, last: u64, acked: u64, oldest: u64) -> (Option<u64>, bool) {
    let own = from.since.map(|p| match p.epoch == epoch {
        true => (p.offset <= last).then_some(p.offset),
        false => Some(0),
    });
    let mut start = own.flatten();
    if from.unacked {
        start = Some(start.map_or(acked, |s| s.min(acked)));
    }
    let position_lost = from.since.is_some_and(|p| p.epoch != epoch || p.offset > last);
    let trimmed = start.is_some_and(|s| oldest > s + 1 && s < last);
    (start, !position_lost && !trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: &str, offset: u64) -> Position {
        Position { epoch: epoch.into(), offset }
    }

    #[test]
    fn plans_where_a_replay_starts() {
        let p = at("e", 3);
        fn from(since: Option<&Position>, unacked: bool) -> Start<'_> {
            Start { since, unacked }
        }
        // Kept 3..=5 of 5: resuming after 3 misses nothing, after 1 misses offset 2.
        assert_eq!(plan(from(Some(&p), false), "e", 5, 0, 3), (Some(3), true));
        assert_eq!(plan(from(Some(&at("e", 1)), false), "e", 5, 0, 3), (Some(1), false));
        assert_eq!(plan(from(Some(&at("x", 3)), false), "e", 5, 0, 3), (Some(0), false), "another epoch: all kept");
        assert_eq!(plan(from(Some(&at("e", 9)), false), "e", 5, 0, 3), (None, false));
        assert_eq!(plan(from(None, false), "e", 5, 0, 3), (None, true));
        // With acks the earlier of the position and the cursor wins.
        assert_eq!(plan(from(Some(&p), true), "e", 5, 2, 1), (Some(2), true));
        assert_eq!(plan(from(None, true), "e", 5, 4, 3), (Some(4), true));
        assert_eq!(plan(from(Some(&at("x", 3)), true), "e", 5, 4, 3), (Some(0), false));
        // Up to date: nothing missed even when nothing is kept.
        assert_eq!(plan(from(Some(&at("e", 5)), false), "e", 5, 0, 6), (Some(5), true));
    }
}
