//! Presence and occupancy transitions handed to webhooks across nodes. The scripts that decide
//! a transition write it to `notify:presence:{tenant}:transitions`; every node reads the
//! streams of the tenants whose webhooks want them through the consumer group
//! `notify-webhooks`, so each entry goes to one node, which acknowledges it once every
//! endpoint is done with it (delivered or dead-lettered). What a node leaves pending when it
//! dies (it is no longer in the tenant's live node set) another node claims and sends. A
//! transition's event id is made from its entry id, so the same transition sent by another
//! node carries the same id.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::streams::{
    StreamClaimReply, StreamId, StreamInfoConsumersReply, StreamPendingCountReply, StreamReadReply,
};
use ::redis::{RedisError, Value};
use serde_json::json;
use tokio::sync::mpsc;

use super::presence::oldest_live;
use super::{Link, keys};
use crate::backend::BoxFuture;
use crate::backend::presence::Member;
use crate::webhook::{Kind, Notice, Webhooks};

/// How often each tenant's stream is read (the shared connection takes no blocking reads).
const POLL: Duration = Duration::from_millis(100);
/// How often consumers of dead nodes are looked for.
const CLAIM_EVERY: Duration = Duration::from_secs(2);
/// Entries read or claimed per command.
const READ_COUNT: usize = 256;
/// Entries claimed from a dead node must have waited this long, so that two nodes claiming
/// at once do not both send them.
const CLAIM_IDLE: Duration = Duration::from_secs(1);

/// A tenant's transitions stream and an entry in it, to acknowledge.
type Entry = (Arc<str>, String);

/// Reads the transitions of the tenants whose webhooks want them.
struct Reader {
    conn: Link,
    node: Arc<str>,
    node_timeout: Duration,
    webhooks: Arc<Webhooks>,
    /// Tenant ids and their transitions streams.
    tenants: Vec<(Arc<str>, String)>,
    /// Streams whose consumer group this node has made sure of.
    grouped: HashSet<String>,
    /// Entries whose webhooks settled; unbounded because each stands for a transition the
    /// endpoints already hold (their queues are the bound).
    settled_tx: mpsc::UnboundedSender<Entry>,
    settled: mpsc::UnboundedReceiver<Entry>,
}

/// The task handing transitions to the webhooks that want them (endpoints come and go at
/// runtime: the tenants read are looked up every round).
pub(super) fn task(
    conn: Link,
    node: Arc<str>,
    node_timeout: Duration,
    webhooks: Arc<Webhooks>,
) -> BoxFuture<'static, ()> {
    let (settled_tx, settled) = mpsc::unbounded_channel();
    let grouped = HashSet::new();
    let reader = Reader { conn, node, node_timeout, webhooks, tenants: Vec::new(), grouped, settled_tx, settled };
    Box::pin(reader.run())
}

impl Reader {
    async fn run(mut self) {
        let mut next_claim = Instant::now();
        loop {
            match self.round(&mut next_claim).await {
                Ok(()) => {}
                Err(e) => {
                    if e.code() == Some("NOGROUP") {
                        self.grouped.clear();
                    }
                    tracing::warn!(error = %e, "reading presence transitions for webhooks failed; retrying");
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Acknowledges what settled, reads every stream once, and now and then claims what dead
    /// nodes left.
    async fn round(&mut self, next_claim: &mut Instant) -> Result<(), RedisError> {
        let wanting = self.webhooks.tenants_wanting(Member::User.bits() | Member::Channel.bits());
        // A tenant no longer read keeps its key here until what it had in flight settled.
        for tenant in wanting {
            if !self.tenants.iter().any(|(t, _)| *t == tenant) {
                let key = keys::presence_transitions(&tenant);
                self.tenants.push((tenant, key));
            }
        }
        self.acknowledge().await?;
        for (tenant, key) in self.tenants.clone() {
            if !self.grouped.contains(&key) {
                self.create_group(&key).await?;
                self.backlog(&tenant, &key).await?;
            }
            self.read(&tenant, &key, ">").await?;
        }
        if Instant::now() >= *next_claim {
            for (tenant, key) in self.tenants.clone() {
                self.claim(&tenant, &key).await?;
            }
            *next_claim = Instant::now() + CLAIM_EVERY;
        }
        Ok(())
    }

    /// Sends again what this node left pending under the same name before it restarted
    /// (from the start of the stream's pending entries, page by page).
    async fn backlog(&mut self, tenant: &Arc<str>, key: &str) -> Result<(), RedisError> {
        let mut after = "0".to_owned();
        while let Some(last) = self.read(tenant, key, &after).await? {
            after = last;
        }
        Ok(())
    }

    /// Starts the group at the stream's end: transitions from before any node wanted them
    /// are not sent.
    async fn create_group(&mut self, key: &str) -> Result<(), RedisError> {
        self.conn.create_group(key, keys::TRANSITIONS_GROUP, "$").await?;
        self.grouped.insert(key.to_owned());
        Ok(())
    }

    /// Reads from `start` (`>`: new entries; an id: this consumer's pending ones after it)
    /// and hands on what came; the last id read, if any.
    async fn read(&mut self, tenant: &Arc<str>, key: &str, start: &str) -> Result<Option<String>, RedisError> {
        let reply: Option<StreamReadReply> = ::redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(keys::TRANSITIONS_GROUP)
            .arg(&*self.node)
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("STREAMS")
            .arg(key)
            .arg(start)
            .query_async(&mut self.conn)
            .await?;
        let entries: Vec<StreamId> = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
        let last = entries.last().map(|e| e.id.clone());
        self.hand_on(tenant, key, entries);
        Ok(last)
    }

    /// Claims the entries of consumers whose nodes are no longer live, and forgets those
    /// consumers once nothing of theirs is pending.
    async fn claim(&mut self, tenant: &Arc<str>, key: &str) -> Result<(), RedisError> {
        let live: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
            .arg(keys::presence_nodes(tenant))
            .arg(oldest_live(self.node_timeout))
            .arg("+inf")
            .query_async(&mut self.conn)
            .await?;
        let info: StreamInfoConsumersReply = ::redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(key)
            .arg(keys::TRANSITIONS_GROUP)
            .query_async(&mut self.conn)
            .await?;
        let dead = info.consumers.into_iter().filter(|c| *c.name != *self.node && !live.contains(&c.name));
        for consumer in dead {
            if consumer.pending == 0 {
                let mut forget = ::redis::cmd("XGROUP");
                forget.arg("DELCONSUMER").arg(key).arg(keys::TRANSITIONS_GROUP).arg(&consumer.name);
                forget.exec_async(&mut self.conn).await?;
                continue;
            }
            let pending: StreamPendingCountReply = ::redis::cmd("XPENDING")
                .arg(key)
                .arg(keys::TRANSITIONS_GROUP)
                .arg("-")
                .arg("+")
                .arg(READ_COUNT)
                .arg(&consumer.name)
                .query_async(&mut self.conn)
                .await?;
            let ids: Vec<String> = pending.ids.into_iter().map(|p| p.id).collect();
            let mut take = ::redis::cmd("XCLAIM");
            take.arg(key).arg(keys::TRANSITIONS_GROUP).arg(&*self.node).arg(CLAIM_IDLE.as_millis() as u64).arg(&ids);
            let claimed: StreamClaimReply = take.query_async(&mut self.conn).await?;
            tracing::info!(
                stream = key,
                from = consumer.name,
                entries = claimed.ids.len(),
                "claimed webhook transitions a dead node left"
            );
            self.hand_on(tenant, key, claimed.ids);
        }
        Ok(())
    }

    /// Emits a notice per entry; an entry that is not a transition is acknowledged as is.
    fn hand_on(&self, tenant: &Arc<str>, key: &str, entries: Vec<StreamId>) {
        let key: Arc<str> = Arc::from(key);
        for entry in entries {
            let done = self.settled_tx.clone();
            let id = entry.id.clone();
            let settled: Box<dyn FnOnce() + Send> = {
                let key = key.clone();
                Box::new(move || {
                    let _ = done.send((key, id));
                })
            };
            match notice(&entry) {
                Some(notice) => self.webhooks.emit_then(tenant, notice, settled),
                None => settled(),
            }
        }
    }

    /// Acknowledges the entries whose webhooks settled.
    async fn acknowledge(&mut self) -> Result<(), RedisError> {
        let mut done = Vec::new();
        while let Ok(entry) = self.settled.try_recv() {
            done.push(entry);
        }
        for (_, key) in self.tenants.clone() {
            let ids: Vec<&str> = done.iter().filter(|(k, _)| **k == *key).map(|(_, id)| id.as_str()).collect();
            if !ids.is_empty() {
                ::redis::cmd("XACK")
                    .arg(&key)
                    .arg(keys::TRANSITIONS_GROUP)
                    .arg(&ids)
                    .exec_async(&mut self.conn)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The webhook notice of a transition entry (`type`, and `user` or `channel`).
fn notice(entry: &StreamId) -> Option<Notice> {
    let text = |field: &str| match entry.map.get(field)? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let (member, kind) = match text("type")?.as_str() {
        "online" => (Member::User, Kind::UserOnline),
        "offline" => (Member::User, Kind::UserOffline),
        "occupied" => (Member::Channel, Kind::ChannelOccupied),
        "vacated" => (Member::Channel, Kind::ChannelVacated),
        _ => return None,
    };
    let name = text(member.field())?;
    let at_ms = entry.id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or_else(crate::clock::now_millis);
    let id = format!("evt_{}", entry.id.replace('-', "_"));
    Some(Notice::recorded(id, kind, at_ms, json!({ member.field(): name })))
}
