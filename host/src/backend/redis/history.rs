//! History in Redis for nodes that share a Redis (cluster mode). Each stream has two keys in
//! the hash slot of its pub/sub channel, so one Lua script can touch both and publish on the
//! channel, on one Redis and on a Redis Cluster alike:
//!
//! - `{notify:TENANT:u:USER}:pos` (a hash: `epoch`, `offset`, `acked`, and `created`, the
//!   Unix second by Redis's clock), kept for the events' ttl plus [`POSITION_GRACE`] after the
//!   last append, read or ack;
//! - `{notify:TENANT:u:USER}:events` (a stream with ids `OFFSET-0`; fields `t`, the append
//!   time in ms, and `e`, the broker envelope as published), trimmed to the tenant's size and
//!   expired after its ttl.
//!
//! Only an append creates them. A stream without a position hash (it never held an event,
//! or was flushed or expired) is read as offset 0 of a look epoch, and nothing is written:
//! see `scripts/history_look.lua`, and the in-memory store, which does the same. The look
//! epochs of a hash slot start with its store id (`keys::slot_store`), read by the same
//! script.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::{Cmd, ScriptInvocation, Value};
use bytes::Bytes;

use super::keys::stream_channel;
use super::scripts::{self, eval};
use super::{Link, envelope, keys};
use crate::backend::BoxFuture;
use crate::backend::history::{Cursor, CursorMove, History, HistoryError, Limits, POSITION_GRACE, Start, plan};
use crate::clock::now_millis;
use crate::stream::{Position, Replay, Stored, Target, new_epoch};
use crate::tenant::Tenant;

/// Reads history and read cursors from Redis; appends are built here and sent by the broker.
pub(crate) struct RedisHistory {
    link: Link,
    timeout: Duration,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn position_ttl(limits: Limits) -> u64 {
    millis(limits.ttl + POSITION_GRACE)
}

/// The command that appends one event to `target`'s history and publishes its envelope
/// (`head`, then the position and frame the script fills in) with `publish`; the event's
/// JSON is `before` + `,"epoch":..,"offset":..` + `after`.
pub(crate) fn append_cmd(
    tenant: &Tenant,
    target: Target<'_>,
    publish: &str,
    head: &[u8],
    before: &str,
    after: &str,
) -> Cmd {
    let limits = Limits::from(tenant.config.history);
    let channel = stream_channel(&tenant.id, target);
    let mut cmd = eval(scripts::HISTORY_APPEND, &keys::history(&channel));
    cmd.arg(channel)
        .arg(publish)
        .arg(limits.size)
        .arg(millis(limits.ttl).max(1))
        .arg(position_ttl(limits))
        .arg(now_millis())
        .arg(new_epoch())
        .arg(head)
        .arg(before)
        .arg(after);
    cmd
}

fn malformed(e: impl std::fmt::Display) -> HistoryError {
    super::malformed(e.to_string()).into()
}

fn int(v: &Value) -> Result<u64, HistoryError> {
    match v {
        Value::Int(n) => u64::try_from(*n).map_err(malformed),
        other => Err(malformed(format!("unexpected reply {other:?}"))),
    }
}

fn text(v: &Value) -> Result<String, HistoryError> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(malformed),
        Value::SimpleString(s) => Ok(s.clone()),
        other => Err(malformed(format!("unexpected reply {other:?}"))),
    }
}

/// One `XRANGE` entry: `[id, [field, value, ...]]` with the id `OFFSET-0`.
fn entry(v: Value, limits: Limits, now_ms: u64) -> Result<Option<Stored>, HistoryError> {
    let Value::Array(mut parts) = v else { return Err(malformed("malformed history entry")) };
    let fields = match parts.pop() {
        Some(Value::Array(f)) => f,
        _ => return Err(malformed("malformed history entry")),
    };
    let id = parts.pop().map(|id| text(&id)).transpose()?.unwrap_or_default();
    let offset = id.split_once('-').and_then(|(o, _)| o.parse().ok()).ok_or_else(|| malformed("bad entry id"))?;
    let (mut at, mut body) = (0, None);
    let mut fields = fields.into_iter();
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        match (text(&k)?.as_str(), v) {
            ("t", v) => at = text(&v)?.parse().unwrap_or(0),
            ("e", Value::BulkString(b)) => body = Some(b),
            _ => {}
        }
    }
    if now_ms.saturating_sub(at) > millis(limits.ttl) {
        return Ok(None);
    }
    let body = body.ok_or_else(|| malformed("history entry without envelope"))?;
    let e = envelope::decode(Bytes::from(body)).map_err(malformed)?;
    Ok(Some(Stored { offset, frame: e.frame, filter: e.filter.map(Arc::new) }))
}

impl RedisHistory {
    pub(crate) fn new(link: Link, timeout: Duration) -> Self {
        // Found now rather than on a connection's first read.
        keys::slot_tags();
        Self { link, timeout }
    }

    async fn call(&self, script: ScriptInvocation<'_>) -> Result<Value, HistoryError> {
        let mut conn = self.link.clone();
        match tokio::time::timeout(self.timeout, script.invoke_async::<Value>(&mut conn)).await {
            Ok(reply) => Ok(reply?),
            Err(_) => Err(super::timeout(self.timeout).into()),
        }
    }

    async fn snapshot(&self, tenant: &Tenant, target: Target<'_>, from: Start<'_>) -> Result<Replay, HistoryError> {
        let limits = Limits::from(tenant.config.history);
        let [pos, events] = keys::history(&stream_channel(&tenant.id, target));
        let store = keys::slot_store(&pos);
        let (epoch, offset) = from.since.map_or(("", 0), |p| (p.epoch.as_str(), p.offset));
        let mut cmd = scripts::HISTORY_READ.key(pos);
        cmd.key(events).key(store).arg(new_epoch()).arg(position_ttl(limits)).arg(epoch).arg(offset);
        cmd.arg(if from.unacked { "1" } else { "0" });
        let started = Instant::now();
        let Value::Array(reply) = self.call(cmd).await? else { return Err(malformed("malformed history reply")) };
        let [epoch, last, acked, events, covered]: [Value; 5] =
            reply.try_into().map_err(|_| malformed("malformed history reply"))?;
        let (epoch, last, acked) = (text(&epoch)?, int(&last)?, int(&acked)?);
        let origin = (int(&covered)? == 1).then(|| Position { epoch: epoch.clone(), offset: 0 });
        let from = from.starting_at_origin(origin.as_ref());
        let Value::Array(events) = events else { return Err(malformed("malformed history reply")) };
        let now = now_millis();
        let mut kept = Vec::with_capacity(events.len());
        for e in events {
            kept.extend(entry(e, limits, now)?);
        }
        let oldest = kept.first().map_or(last + 1, |e| e.offset);
        let (start, recovered) = plan(from, &epoch, last, acked, oldest);
        kept.retain(|e| start.is_some_and(|s| e.offset > s));
        tracing::trace!(elapsed = ?started.elapsed(), events = kept.len(), "history read");
        Ok(Replay { recovered, events: kept, position: Some(Position { epoch, offset: last }), acked })
    }

    async fn ack_at(&self, tenant: &Tenant, user: &str, position: &Position) -> Result<CursorMove, HistoryError> {
        let limits = Limits::from(tenant.config.history);
        let [pos, _] = keys::history(&stream_channel(&tenant.id, Target::User(user)));
        let store = keys::slot_store(&pos);
        let mut cmd = scripts::HISTORY_ACK.key(pos);
        cmd.key(store).arg(&position.epoch).arg(position.offset).arg(position_ttl(limits)).arg(new_epoch());
        let Value::Array(reply) = self.call(cmd).await? else { return Err(malformed("malformed ack reply")) };
        let [epoch, last, acked, taken, moved]: [Value; 5] =
            reply.try_into().map_err(|_| malformed("malformed ack reply"))?;
        let (epoch, offset, acked) = (text(&epoch)?, int(&last)?, int(&acked)?);
        if int(&taken)? == 0 {
            return Err(HistoryError::StalePosition(position.epoch.clone(), position.offset, epoch, offset));
        }
        Ok(CursorMove { cursor: Cursor { epoch, offset, acked }, moved: int(&moved)? == 1 })
    }
}

impl History for RedisHistory {
    fn forget<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<usize, HistoryError>> {
        Box::pin(async move { Ok(self.link.clone().unlink_matching(&keys::history_pattern(&tenant.id)).await?) })
    }

    fn read<'a>(
        &'a self,
        tenant: &'a Tenant,
        target: Target<'a>,
        from: Start<'a>,
    ) -> BoxFuture<'a, Result<Replay, HistoryError>> {
        Box::pin(self.snapshot(tenant, target, from))
    }

    fn ack<'a>(
        &'a self,
        tenant: &'a Tenant,
        user: &'a str,
        position: &'a Position,
    ) -> BoxFuture<'a, Result<CursorMove, HistoryError>> {
        Box::pin(self.ack_at(tenant, user, position))
    }
}
