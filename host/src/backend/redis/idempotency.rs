//! Idempotency keys in Redis, shared by every node: one string per key,
//! `notify:{tenant}:idem:{key}` holding the owner's event id, claimed with `SET NX GET PX`
//! (atomic: the reply is the owner's id when the key was already claimed).

use std::time::Duration;

use ::redis::{Cmd, Value};

use super::scripts::{DELETE_IF_EQUAL, eval};
use super::{Link, keys};
use crate::backend::BoxFuture;
use crate::backend::BrokerError;
use crate::backend::idempotency::{Claim, Idempotency};

pub(crate) struct RedisIdempotency {
    link: Link,
}

impl RedisIdempotency {
    pub(crate) fn new(link: Link) -> Self {
        Self { link }
    }
}

impl Idempotency for RedisIdempotency {
    fn claim<'a>(
        &'a self,
        tenant: &'a str,
        claims: &'a [Claim<'a>],
        window: Duration,
    ) -> BoxFuture<'a, Result<Vec<Option<String>>, BrokerError>> {
        let window = window.as_millis().max(1) as u64;
        let cmds: Vec<Cmd> = claims
            .iter()
            .map(|c| {
                let mut cmd = ::redis::cmd("SET");
                cmd.arg(keys::idempotency(tenant, c.key)).arg(c.id).arg("NX").arg("GET").arg("PX").arg(window);
                cmd
            })
            .collect();
        let mut link = self.link.clone();
        Box::pin(async move {
            let replies = link.run_all(cmds).await?;
            Ok(replies
                .into_iter()
                .map(|v| match v {
                    Value::BulkString(id) => Some(String::from_utf8_lossy(&id).into_owned()),
                    Value::SimpleString(id) => Some(id),
                    _ => None,
                })
                .collect())
        })
    }

    fn release<'a>(&'a self, tenant: &'a str, claims: &'a [Claim<'a>]) -> BoxFuture<'a, ()> {
        let cmds: Vec<Cmd> = claims
            .iter()
            .map(|c| {
                let mut cmd = eval(DELETE_IF_EQUAL, &[keys::idempotency(tenant, c.key)]);
                cmd.arg(c.id);
                cmd
            })
            .collect();
        let mut link = self.link.clone();
        Box::pin(async move {
            if let Err(e) = link.run_all(cmds).await {
                // The keys expire after their window: a retry until then is taken for a
                // duplicate of an event that was not delivered.
                tracing::warn!(error = %e, "could not release idempotency keys of a failed publish");
            }
        })
    }
}
