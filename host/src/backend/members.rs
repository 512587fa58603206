//! The members of Pusher presence channels: per channel, each user id with the `user_info`
//! it joined with and how many connections hold it, over every live node.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::BoxFuture;
use super::presence::PresenceError;
use crate::tenant::Tenant;

/// Most users one presence channel holds (Pusher's limit).
pub(crate) const MAX_MEMBERS: usize = 100;

/// A member: its user id and the `user_info` it joined with (JSON, `null` without).
pub(crate) type Member = (Box<str>, Box<RawValue>);

/// What joining a channel did.
#[derive(Debug)]
pub(crate) enum Joined {
    /// The connection is a member. `first`: no other connection of the user is (on any live
    /// node), so the others are told it came; `members`: the channel's members now.
    In { first: bool, members: Vec<Member> },
    /// The channel holds [`MAX_MEMBERS`] other users; nothing changed.
    Full,
}

/// A user gone from a channel with a node that stopped: the others are told.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Departed {
    pub tenant: Box<str>,
    pub channel: Box<str>,
    pub user: Box<str>,
}

/// Members of presence channels.
///
/// Contract:
/// - `join` and `leave` are called once each per presence subscription of a connection
///   (`conn`, its number on this node), in that order; a subscription's `leave` waits for
///   its `join`;
/// - a user's arrival (`Joined::In { first: true }`) and departure (`leave` giving the user)
///   are each told once across nodes, also when two nodes see them at once;
/// - a user's `user_info` is the one its latest join gave;
/// - `sweep`, called periodically by every node with the tenants that have presence
///   channels, marks this node live, and removes the members of nodes silent for the
///   store's node timeout: each user left with no connection is told once, to one node.
pub(crate) trait Members: Send + Sync + 'static {
    fn join<'a>(
        &'a self,
        tenant: &'a Tenant,
        channel: &'a str,
        conn: u64,
        member: (&'a str, &'a RawValue),
    ) -> BoxFuture<'a, Result<Joined, PresenceError>>;

    /// Ends `conn`'s membership; the user when it was its last connection in the channel.
    fn leave<'a>(
        &'a self,
        tenant: &'a Tenant,
        channel: &'a str,
        conn: u64,
    ) -> BoxFuture<'a, Result<Option<Box<str>>, PresenceError>>;

    /// The user `conn` joined `channel` as, if it is a member (this node's memberships).
    fn member_of(&self, tenant: &Tenant, channel: &str, conn: u64) -> Option<Box<str>>;

    /// The channel's members (at most [`MAX_MEMBERS`]).
    fn list<'a>(&'a self, tenant: &'a Tenant, channel: &'a str) -> BoxFuture<'a, Result<Vec<Member>, PresenceError>>;

    fn sweep<'a>(&'a self, tenants: &'a [Arc<Tenant>]) -> BoxFuture<'a, Result<Vec<Departed>, PresenceError>> {
        let _ = tenants;
        Box::pin(async { Ok(Vec::new()) })
    }
}
