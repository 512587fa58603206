//! Pending push escalations in Redis, shared by every node: due times in a sorted set and
//! bodies in a hash beside it, taken under a lease by a script, so one node sends each and
//! another takes it over when that node dies.

use std::time::Duration;

use super::scripts::{ESCALATIONS_FINISH, ESCALATIONS_SCHEDULE, ESCALATIONS_TAKE, eval};
use super::{Link, keys};
use crate::backend::escalations::{Escalation, Escalations};
use crate::backend::{BackendError, BoxFuture};

pub(crate) struct RedisEscalations {
    link: Link,
    timeout: Duration,
}

impl RedisEscalations {
    pub(crate) fn new(link: Link, timeout: Duration) -> Self {
        Self { link, timeout }
    }
}

fn escalation_keys() -> [String; 2] {
    keys::ESCALATIONS.map(str::to_owned)
}

impl Escalations for RedisEscalations {
    fn schedule<'a>(
        &'a self,
        escalations: &'a [Escalation],
        max_pending: usize,
    ) -> BoxFuture<'a, Result<usize, BackendError>> {
        Box::pin(async move {
            if escalations.is_empty() {
                return Ok(0);
            }
            let mut cmd = eval(ESCALATIONS_SCHEDULE, &escalation_keys());
            cmd.arg(max_pending);
            for e in escalations {
                cmd.arg(&e.id).arg(e.due).arg(&e.body);
            }
            self.link.query_within(cmd, self.timeout).await
        })
    }

    fn take<'a>(
        &'a self,
        now: u64,
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Escalation>, BackendError>> {
        Box::pin(async move {
            let mut cmd = eval(ESCALATIONS_TAKE, &escalation_keys());
            cmd.arg(now).arg(limit).arg(now + lease.as_millis() as u64);
            let flat: Vec<String> = self.link.query_within(cmd, self.timeout).await?;
            flat.chunks_exact(3)
                .map(|c| {
                    let due = c[1].parse::<f64>().map_err(|_| super::malformed(format!("a due time {:?}", c[1])))?;
                    Ok(Escalation { id: c[0].clone(), due: due as u64, body: c[2].clone() })
                })
                .collect()
        })
    }

    fn finish<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(());
            }
            let mut cmd = eval(ESCALATIONS_FINISH, &escalation_keys());
            cmd.arg(ids);
            self.link.query_within::<i64>(cmd, self.timeout).await.map(drop)
        })
    }
}
