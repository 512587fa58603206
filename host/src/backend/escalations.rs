//! Pushes waiting for their time: an event to a user that goes to the user's devices at
//! once (`always`) or when its delay ends unread (`unread_after`). Kept where history is
//! kept, so in cluster mode the timer outlives the node that set it and any node sends it.

use std::time::Duration;

use super::{BackendError, BoxFuture};

/// One push waiting for its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Escalation {
    /// Unique per event and user.
    pub id: String,
    /// Unix milliseconds when it is due.
    pub due: u64,
    /// What the sender needs (JSON, see `push::job`).
    pub body: String,
}

/// Keeps pending escalations for every tenant.
///
/// Contract:
/// - `schedule` adds escalations (one with a known id is moved to its new time, its body
///   replaced), but not past `max_pending` waiting in the store; returns how many it took;
/// - `take` hands out those due by `now`, earliest first, each to one taker on any node
///   sharing the store: a taken escalation is hidden until `now + lease`, then due again
///   unless `finish`ed. So each is sent once while its taker lives, and again by another
///   node when the taker died holding it;
/// - `finish` removes escalations for good.
pub(crate) trait Escalations: Send + Sync + 'static {
    fn schedule<'a>(
        &'a self,
        escalations: &'a [Escalation],
        max_pending: usize,
    ) -> BoxFuture<'a, Result<usize, BackendError>>;

    fn take<'a>(
        &'a self,
        now: u64,
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Escalation>, BackendError>>;

    fn finish<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), BackendError>>;

    /// How many wait in this node's memory (`None`: the store is elsewhere).
    fn pending(&self) -> Option<usize> {
        None
    }
}
