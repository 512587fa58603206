//! The Lua scripts the Redis backends run, kept as files in `scripts/` (each documents its
//! KEYS and ARGV). Every key a script touches is passed in KEYS and shares one hash slot, so
//! they run on a Redis Cluster as on one Redis. Scripts sent in pipelines go as EVAL with
//! their body: a `NOSCRIPT` retry could reorder what a pipeline sends.

use std::sync::LazyLock;

use ::redis::{Cmd, Script};

/// Appends an event to a stream's history and publishes it (see `history`).
pub(crate) const HISTORY_APPEND: &str = include_str!("scripts/history_append.lua");
/// Reads a consistent snapshot of a stream's history. Sent by hash (EVALSHA, loading it on
/// `NOSCRIPT`): it runs once per connection and stream, and its body is 3 KB.
pub(crate) static HISTORY_READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(include_str!("scripts/history_look.lua"), include_str!("scripts/history_read.lua")))
});
/// Moves a user's read cursor forward; sent by hash as the read is.
pub(crate) static HISTORY_ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(include_str!("scripts/history_look.lua"), include_str!("scripts/history_ack.lua")))
});
/// Connections opened and closed: counts them, reports who came online.
pub(crate) const PRESENCE_APPLY: &str = include_str!("scripts/presence_apply.lua");
/// Which users are now offline on every live node.
pub(crate) const PRESENCE_OFFLINE_CHECK: &str = include_str!("scripts/presence_offline_check.lua");
/// A connection joins a Pusher presence channel.
pub(crate) const MEMBERS_JOIN: &str = include_str!("scripts/members_join.lua");
/// A connection, or a dead node's every connection, leaves a Pusher presence channel.
pub(crate) const MEMBERS_LEAVE: &str = include_str!("scripts/members_leave.lua");
/// Takes one webhook dead letter out of a tenant's list.
pub(crate) const DEAD_LETTER_TAKE: &str = include_str!("scripts/dead_letter_take.lua");
/// Replaces the control-plane state if its version is the expected one.
pub(crate) const CONTROL_REPLACE: &str = include_str!("scripts/control_replace.lua");
/// Puts back a control-plane state the store lost (`ControlStore::restore`).
pub(crate) const CONTROL_RESTORE: &str = include_str!("scripts/control_restore.lua");
/// Merges a token revocation into the user's stored one.
pub(crate) const REVOKE_MERGE: &str = include_str!("scripts/revoke_merge.lua");
/// Registers a push device within the user's and tenant's limits.
pub(crate) const DEVICES_REGISTER: &str = include_str!("scripts/devices_register.lua");
/// Removes a push device, counting it out.
pub(crate) const DEVICES_REMOVE: &str = include_str!("scripts/devices_remove.lua");
/// Counts a push against a user's hourly cap.
pub(crate) const DEVICES_COUNT_PUSH: &str = include_str!("scripts/devices_count_push.lua");
/// Keeps a sent push until its user reads it.
pub(crate) const DEVICES_SENT_RECORD: &str = include_str!("scripts/devices_sent_record.lua");
/// Takes the sent pushes a user has read.
pub(crate) const DEVICES_SENT_TAKE: &str = include_str!("scripts/devices_sent_take.lua");
/// Adds or moves pending push escalations, within the most that may wait.
pub(crate) const ESCALATIONS_SCHEDULE: &str = include_str!("scripts/escalations_schedule.lua");
/// Takes due push escalations under a lease.
pub(crate) const ESCALATIONS_TAKE: &str = include_str!("scripts/escalations_take.lua");
/// Removes push escalations that were sent or dropped.
pub(crate) const ESCALATIONS_FINISH: &str = include_str!("scripts/escalations_finish.lua");
/// Renews the pub/sub ingestion lease for its holder.
pub(crate) const LEASE_RENEW: &str = include_str!("scripts/lease_renew.lua");
/// Deletes a key while it holds a value: the pub/sub ingestion lease for its holder, an
/// idempotency key for its owner.
pub(crate) const DELETE_IF_EQUAL: &str = include_str!("scripts/delete_if_equal.lua");

/// `EVAL script numkeys keys...`; the caller adds the ARGV.
pub(crate) fn eval(script: &str, keys: &[String]) -> Cmd {
    let mut cmd = ::redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys);
    cmd
}
