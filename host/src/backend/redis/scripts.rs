//! The Lua scripts the Redis backends run, kept as files in `scripts/` (each documents its
//! KEYS and ARGV). Every key a script touches is passed in KEYS and shares one hash slot, so
//! they run on a Redis Cluster as on one Redis.

use ::redis::Cmd;

/// Appends an event to a stream's history and publishes it (see `history`).
pub(crate) const HISTORY_APPEND: &str = include_str!("scripts/history_append.lua");
/// Reads a consistent snapshot of a stream's history.
pub(crate) const HISTORY_READ: &str =
    concat!(include_str!("scripts/history_look.lua"), include_str!("scripts/history_read.lua"));
/// Moves a user's read cursor forward.
pub(crate) const HISTORY_ACK: &str =
    concat!(include_str!("scripts/history_look.lua"), include_str!("scripts/history_ack.lua"));
/// A connection opened: counts it, reports whether the user came online.
pub(crate) const PRESENCE_CONNECT: &str = include_str!("scripts/presence_connect.lua");
/// A connection closed.
pub(crate) const PRESENCE_DISCONNECT: &str = include_str!("scripts/presence_disconnect.lua");
/// Whether a user is now offline on every live node.
pub(crate) const PRESENCE_OFFLINE_CHECK: &str = include_str!("scripts/presence_offline_check.lua");
/// Replaces the control-plane state if its version is the expected one.
pub(crate) const CONTROL_REPLACE: &str = include_str!("scripts/control_replace.lua");
/// Puts back a control-plane state the store lost (`ControlStore::restore`).
pub(crate) const CONTROL_RESTORE: &str = include_str!("scripts/control_restore.lua");
/// Renews the pub/sub ingestion lease for its holder.
pub(crate) const LEASE_RENEW: &str = include_str!("scripts/lease_renew.lua");
/// Releases the pub/sub ingestion lease for its holder.
pub(crate) const LEASE_RELEASE: &str = include_str!("scripts/lease_release.lua");

/// `EVAL script numkeys keys...`; the caller adds the ARGV.
pub(crate) fn eval(script: &str, keys: &[String]) -> Cmd {
    let mut cmd = ::redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys);
    cmd
}

/// `EVAL script numkeys keys... args...`.
pub(crate) fn eval_args(script: &str, keys: &[String], args: &[&str]) -> Cmd {
    let mut cmd = eval(script, keys);
    cmd.arg(args);
    cmd
}
