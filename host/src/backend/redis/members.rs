//! Pusher presence channel members shared by every node through Redis: per channel, each
//! node's connection count per user and the users' `user_info`, changed by scripts that
//! decide arrivals and departures atomically; each node heartbeats, and a node silent for
//! the node timeout is swept by whichever node sees it first (the script reports each
//! departure once).
//!
//! A node's name here is its node id and a number drawn when its process started, so a
//! node restarting under the same id does not revive the memberships of its previous run:
//! those are swept as a dead node's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::{Cmd, Value};
use serde_json::value::RawValue;

use super::presence::oldest_live;
use super::scripts::{MEMBERS_JOIN, MEMBERS_LEAVE, eval};
use super::{Link, keys, malformed};
use crate::backend::BoxFuture;
use crate::backend::members::{Departed, Joined, MAX_MEMBERS, Member, Members};
use crate::backend::presence::PresenceError;
use crate::clock::now_millis;
use crate::tenant::Tenant;

/// A membership of this node: tenant, channel and connection.
type Membership = (Box<str>, Box<str>, u64);

pub(crate) struct RedisMembers {
    link: Link,
    /// `NODE_ID#RUN`.
    node: Box<str>,
    node_timeout: Duration,
    /// The user each of this node's memberships joined as, by tenant, channel and
    /// connection; locked for one change, never across an await.
    conns: Mutex<HashMap<Membership, Box<str>>>,
    /// Leaves Redis could not take, retried at each sweep so no member stays behind.
    /// Bounded by this node's memberships (one entry per membership at most).
    unsent: Mutex<Vec<Departed>>,
}

impl RedisMembers {
    pub(crate) fn new(link: Link, node_id: &str, node_timeout: Duration) -> Self {
        let mut run = [0; 8];
        // Without a draw the run is 0: a restart under the same id then waits for its
        // previous run to be swept before its members show.
        let _ = getrandom::fill(&mut run);
        let node = format!("{node_id}#{:016x}", u64::from_le_bytes(run)).into();
        Self { link, node, node_timeout, conns: Mutex::default(), unsent: Mutex::default() }
    }

    fn leave_cmd(&self, tenant: &str, channel: &str, user: &str) -> Cmd {
        let mut cmd = eval(MEMBERS_LEAVE, &[keys::members_conns(tenant, channel), keys::members_info(tenant, channel)]);
        cmd.arg(&*self.node).arg(user);
        cmd
    }

    /// Sends the leaves that failed before; keeps those that fail again.
    async fn retry_unsent(&self) -> Vec<Departed> {
        let unsent = std::mem::take(&mut *self.unsent.lock().expect("members lock"));
        let mut departed = Vec::new();
        for leave in unsent {
            match self.link.clone().run_all(vec![self.leave_cmd(&leave.tenant, &leave.channel, &leave.user)]).await {
                Ok(replies) if users(&replies[0]).next().is_some() => departed.push(leave),
                Ok(_) => {}
                Err(_) => self.unsent.lock().expect("members lock").push(leave),
            }
        }
        departed
    }

    /// Heartbeats this node for `tenant` and sweeps its dead nodes.
    async fn sweep_tenant(&self, tenant: &Tenant, departed: &mut Vec<Departed>) -> Result<(), PresenceError> {
        let mut link = self.link.clone();
        let nodes = keys::members_nodes(&tenant.id);
        ::redis::cmd("ZADD").arg(&nodes).arg(now_millis()).arg(&*self.node).exec_async(&mut link).await?;
        let oldest = format!("({}", oldest_live(self.node_timeout));
        let dead: Vec<String> =
            ::redis::cmd("ZRANGEBYSCORE").arg(&nodes).arg("-inf").arg(oldest).query_async(&mut link).await?;
        for node in dead {
            tracing::info!(node, tenant = &*tenant.id, "sweeping presence channel members of a node that stopped");
            let place = keys::members_where(&tenant.id, &node);
            let channels: Vec<String> = ::redis::cmd("SMEMBERS").arg(&place).query_async(&mut link).await?;
            for channel in channels {
                let keys = [keys::members_conns(&tenant.id, &channel), keys::members_info(&tenant.id, &channel)];
                let mut cmd = eval(MEMBERS_LEAVE, &keys);
                cmd.arg(&node).arg("");
                let gone: Vec<String> = cmd.query_async(&mut link).await?;
                departed.extend(gone.into_iter().map(|user| Departed {
                    tenant: Box::from(&*tenant.id),
                    channel: channel.as_str().into(),
                    user: user.into(),
                }));
            }
            ::redis::cmd("DEL").arg(&place).exec_async(&mut link).await?;
            ::redis::cmd("ZREM").arg(&nodes).arg(&node).exec_async(&mut link).await?;
        }
        Ok(())
    }
}

/// The strings of a script's array reply.
fn users(reply: &Value) -> impl Iterator<Item = String> + '_ {
    let items = match reply {
        Value::Array(items) => &items[..],
        _ => &[],
    };
    items.iter().filter_map(text)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// The members of a `HGETALL` reply (flat, or a map) of user -> `user_info` JSON.
fn members_of(reply: &Value) -> Result<Vec<Member>, PresenceError> {
    let flat: Vec<String> = match reply {
        Value::Map(pairs) => pairs.iter().flat_map(|(k, v)| [text(k), text(v)]).flatten().collect(),
        _ => users(reply).collect(),
    };
    flat.chunks_exact(2)
        .map(|pair| {
            let info = RawValue::from_string(pair[1].clone()).map_err(|_| malformed("a member's user_info"))?;
            Ok((pair[0].as_str().into(), info))
        })
        .collect()
}

impl Members for RedisMembers {
    fn join<'a>(
        &'a self,
        tenant: &'a Tenant,
        channel: &'a str,
        conn: u64,
        (user, info): (&'a str, &'a RawValue),
    ) -> BoxFuture<'a, Result<Joined, PresenceError>> {
        Box::pin(async move {
            let t = &tenant.id;
            let keys =
                [keys::members_conns(t, channel), keys::members_info(t, channel), keys::members_where(t, &self.node)];
            let mut cmd = eval(MEMBERS_JOIN, &keys);
            cmd.arg(&*self.node).arg(user).arg(info.get()).arg(MAX_MEMBERS).arg(channel);
            let reply: Value = cmd.query_async(&mut self.link.clone()).await?;
            let Value::Array(parts) = reply else { return Err(malformed("members_join's reply").into()) };
            let first = match parts.first() {
                Some(Value::Int(-1)) => return Ok(Joined::Full),
                Some(Value::Int(n)) => *n == 1,
                _ => return Err(malformed("members_join's reply").into()),
            };
            let members = members_of(parts.get(1).unwrap_or(&Value::Nil))?;
            let key = (Box::from(&**t), Box::from(channel), conn);
            self.conns.lock().expect("members lock").insert(key, user.into());
            Ok(Joined::In { first, members })
        })
    }

    fn leave<'a>(
        &'a self,
        tenant: &'a Tenant,
        channel: &'a str,
        conn: u64,
    ) -> BoxFuture<'a, Result<Option<Box<str>>, PresenceError>> {
        Box::pin(async move {
            let key = (Box::from(&*tenant.id), Box::from(channel), conn);
            let Some(user) = self.conns.lock().expect("members lock").remove(&key) else { return Ok(None) };
            match self.link.clone().run_all(vec![self.leave_cmd(&tenant.id, channel, &user)]).await {
                Ok(replies) => Ok(users(&replies[0]).next().is_some().then_some(user)),
                Err(e) => {
                    let leave = Departed { tenant: key.0, channel: key.1, user };
                    self.unsent.lock().expect("members lock").push(leave);
                    Err(e.into())
                }
            }
        })
    }

    fn member_of(&self, tenant: &Tenant, channel: &str, conn: u64) -> Option<Box<str>> {
        let key = (Box::from(&*tenant.id), Box::from(channel), conn);
        self.conns.lock().expect("members lock").get(&key).cloned()
    }

    fn list<'a>(&'a self, tenant: &'a Tenant, channel: &'a str) -> BoxFuture<'a, Result<Vec<Member>, PresenceError>> {
        Box::pin(async move {
            let reply: Value = ::redis::cmd("HGETALL")
                .arg(keys::members_info(&tenant.id, channel))
                .query_async(&mut self.link.clone())
                .await?;
            members_of(&reply)
        })
    }

    fn sweep<'a>(&'a self, tenants: &'a [Arc<Tenant>]) -> BoxFuture<'a, Result<Vec<Departed>, PresenceError>> {
        Box::pin(async move {
            let mut departed = self.retry_unsent().await;
            for tenant in tenants {
                // What was swept before a failure is reported; the rest at the next sweep.
                if let Err(e) = self.sweep_tenant(tenant, &mut departed).await {
                    tracing::warn!(tenant = &*tenant.id, error = %e, "presence channel members sweep failed");
                    break;
                }
            }
            Ok(departed)
        })
    }
}
