//! Pending escalations in this node's memory, ordered by due time.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use crate::backend::escalations::{Escalation, Escalations};
use crate::backend::{BackendError, BoxFuture};

#[derive(Default)]
pub(crate) struct MemoryEscalations {
    /// Held for one call's changes, never across an await.
    inner: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// `(due, id)`, earliest first.
    by_due: BTreeSet<(u64, String)>,
    /// id -> (due, body).
    bodies: HashMap<String, (u64, String)>,
}

impl Pending {
    fn set(&mut self, id: &str, due: u64, body: String) {
        if let Some((old, _)) = self.bodies.insert(id.to_owned(), (due, body)) {
            self.by_due.remove(&(old, id.to_owned()));
        }
        self.by_due.insert((due, id.to_owned()));
    }
}

impl Escalations for MemoryEscalations {
    fn schedule<'a>(
        &'a self,
        escalations: &'a [Escalation],
        max_pending: usize,
    ) -> BoxFuture<'a, Result<usize, BackendError>> {
        let mut p = self.inner.lock().expect("escalations lock");
        let mut taken = 0;
        for e in escalations {
            if p.bodies.len() >= max_pending && !p.bodies.contains_key(&e.id) {
                continue;
            }
            p.set(&e.id, e.due, e.body.clone());
            taken += 1;
        }
        Box::pin(async move { Ok(taken) })
    }

    fn take<'a>(
        &'a self,
        now: u64,
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Escalation>, BackendError>> {
        let mut p = self.inner.lock().expect("escalations lock");
        let due: Vec<(u64, String)> = p.by_due.iter().take_while(|(at, _)| *at <= now).take(limit).cloned().collect();
        let until = now + lease.as_millis() as u64;
        let mut taken = Vec::with_capacity(due.len());
        for (at, id) in due {
            let body = p.bodies.get(&id).map(|(_, body)| body.clone()).expect("indexed by due time");
            p.set(&id, until, body.clone());
            taken.push(Escalation { id, due: at, body });
        }
        Box::pin(async move { Ok(taken) })
    }

    fn finish<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), BackendError>> {
        let mut p = self.inner.lock().expect("escalations lock");
        for id in ids {
            if let Some((due, _)) = p.bodies.remove(id) {
                p.by_due.remove(&(due, id.clone()));
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn pending(&self) -> Option<usize> {
        Some(self.inner.lock().expect("escalations lock").bodies.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: &str, due: u64) -> Escalation {
        Escalation { id: id.into(), due, body: format!("body of {id}") }
    }

    #[tokio::test]
    async fn due_escalations_go_to_one_taker_until_their_lease_ends() {
        let store = MemoryEscalations::default();
        assert_eq!(store.schedule(&[at("b", 20), at("a", 10), at("later", 100)], 10).await.unwrap(), 3);
        let lease = Duration::from_millis(50);
        let first = store.take(30, 10, lease).await.unwrap();
        assert_eq!(first.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(store.take(30, 10, lease).await.unwrap().is_empty(), "leased");
        store.finish(&["a".into()]).await.unwrap();
        let again = store.take(80, 10, lease).await.unwrap();
        assert_eq!(again.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["b"], "b's taker never finished");
        assert_eq!(again[0].body, "body of b");
        assert_eq!(store.pending(), Some(2));
    }

    #[tokio::test]
    async fn schedule_stops_at_the_pending_limit_but_moves_known_ones() {
        let store = MemoryEscalations::default();
        assert_eq!(store.schedule(&[at("a", 10), at("b", 10)], 1).await.unwrap(), 1);
        assert_eq!(store.schedule(&[at("a", 5)], 1).await.unwrap(), 1);
        assert_eq!(store.take(5, 10, Duration::ZERO).await.unwrap().len(), 1);
    }
}
