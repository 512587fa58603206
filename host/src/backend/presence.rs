//! Presence: how many connections a user has and how many subscribers a channel has, over
//! every live node, and the transitions between none and some (online and offline, occupied
//! and vacated).

use std::sync::Arc;
use std::time::Duration;

use super::{BackendError, BoxFuture};
use crate::tenant::Tenant;
use crate::webhook::Kind;

/// What presence counts: a user's connections or a channel's subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Member {
    User,
    Channel,
}

impl Member {
    /// The webhook kinds of its transitions: from none to some, and back.
    pub(crate) fn kinds(self) -> (Kind, Kind) {
        match self {
            Self::User => (Kind::UserOnline, Kind::UserOffline),
            Self::Channel => (Kind::ChannelOccupied, Kind::ChannelVacated),
        }
    }

    /// Both kinds as [`Kind::bit`]s.
    pub(crate) fn bits(self) -> u32 {
        let (came, left) = self.kinds();
        came.bit() | left.bit()
    }

    /// The field naming it in a webhook's data and a transition stream entry.
    pub(crate) fn field(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Channel => "channel",
        }
    }
}

/// How presence waits: `debounce` before reporting a user offline, `node_timeout` before a
/// silent node counts as dead.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub debounce: Duration,
    pub node_timeout: Duration,
}

/// A user's presence as `GET /v1/presence/{user}` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub connections: u64,
}

/// Why presence could not be read.
#[derive(Debug, thiserror::Error)]
#[error("presence unavailable: {0}")]
pub(crate) struct PresenceError(#[from] pub(crate) BackendError);

/// Counts users' connections and channels' subscriptions.
///
/// Contract:
/// - `connected` and `disconnected` are called once each per connection, in that order, and
///   never wait (they run on connection tasks); so are `subscribed` and `unsubscribed` per
///   subscription;
/// - channels are counted only for tenants whose webhooks want their transitions;
/// - each transition (none to some, or some to none for the debounce) is told once, to the
///   tenant's webhooks, also when several nodes see it at once or a node dies;
/// - `status` counts the connections of every live node: those of this node at once, those of
///   other nodes once their changes have propagated;
/// - a node that dies stops counting after the store's node timeout.
pub(crate) trait Presence: Send + Sync + 'static {
    fn connected(&self, tenant: &Arc<Tenant>, user: &str);
    fn disconnected(&self, tenant: &Arc<Tenant>, user: &str);
    fn subscribed(&self, tenant: &Arc<Tenant>, channel: &str);
    fn unsubscribed(&self, tenant: &Arc<Tenant>, channel: &str);

    /// `tenant`'s webhooks now want `member` transitions: follows its members from
    /// `counts` (this node's now), telling nothing for them; a member already present is
    /// told when it goes, not that it came.
    fn follow(&self, tenant: &Arc<Tenant>, member: Member, counts: Vec<(Box<str>, u32)>);

    /// `tenant`'s webhooks no longer want `member` transitions: stops following them.
    fn unfollow(&self, tenant: &Arc<Tenant>, member: Member);
    fn status<'a>(&'a self, tenant: &'a Tenant, user: &'a str) -> BoxFuture<'a, Result<Status, PresenceError>>;

    /// Drops what is kept of a deleted tenant's presence (nothing on one node: it counts
    /// live connections).
    fn forget<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<(), PresenceError>> {
        let _ = tenant;
        Box::pin(async { Ok(()) })
    }
}
