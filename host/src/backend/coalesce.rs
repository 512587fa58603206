//! Identical history reads of one shared stream (a channel or the broadcast) made by many
//! connections at once, as in a reconnect storm, share one read of the store.
//!
//! A read may only serve requests that arrived before it began: the [`History`] contract
//! wants each connection's snapshot taken after it joined the stream's live delivery. So the
//! reads of one key run one at a time; requests that arrive while one runs wait for it to
//! end, and the first of them then reads for all of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use super::BoxFuture;
use super::history::{Cursor, History, HistoryError, Start};
use crate::stream::{Position, Replay, Target};
use crate::tenant::Tenant;

/// A history store whose identical shared-stream reads are coalesced.
pub(crate) struct Coalesced<H> {
    inner: H,
    /// Keys with a read running or requests waiting. Held only to find, add or drop an entry.
    flights: Mutex<HashMap<Key, Arc<Flight>>>,
}

/// A shared stream of a tenant and where a read of it starts.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant: Arc<str>,
    /// The channel; `None` for the broadcast.
    channel: Option<Box<str>>,
    since: Option<Position>,
}

impl Key {
    /// User streams are one user's own, and a read from the read cursor depends on it.
    fn of(tenant: &Tenant, target: Target<'_>, from: Start<'_>) -> Option<Self> {
        let channel = match target {
            Target::User(_) => return None,
            Target::Channel(c) => Some(c.into()),
            Target::Broadcast => None,
        };
        (!from.unacked).then(|| Self { tenant: tenant.id.clone(), channel, since: from.since.cloned() })
    }
}

/// The reads of one key.
#[derive(Default)]
struct Flight {
    /// Arrivals and the beginnings of reads, numbered in one sequence.
    seq: AtomicU64,
    /// The number the last read began at, and its result. Held while a read runs, so that
    /// requests queue behind it (in arrival order).
    last: tokio::sync::Mutex<Option<(u64, Result<Replay, String>)>>,
}

impl Flight {
    async fn read(&self, read: BoxFuture<'_, Result<Replay, HistoryError>>) -> Result<Replay, HistoryError> {
        let arrived = self.seq.fetch_add(1, SeqCst);
        let mut last = self.last.lock().await;
        if let Some((began, result)) = &*last
            && *began > arrived
        {
            return result.clone().map_err(HistoryError::Shared);
        }
        let began = self.seq.fetch_add(1, SeqCst);
        let result = read.await;
        *last = Some((began, result.as_ref().map(Replay::clone).map_err(ToString::to_string)));
        result
    }
}

impl<H: History> Coalesced<H> {
    pub(crate) fn new(inner: H) -> Self {
        Self { inner, flights: Mutex::default() }
    }

    fn flight(&self, key: &Key) -> Arc<Flight> {
        self.flights.lock().expect("flights lock").entry(key.clone()).or_default().clone()
    }

    /// Forgets the key once no request holds its flight.
    fn release(&self, key: &Key, flight: Arc<Flight>) {
        let mut flights = self.flights.lock().expect("flights lock");
        // Clones are only made under this lock: the map's and ours mean no one else.
        if Arc::strong_count(&flight) == 2 {
            flights.remove(key);
        }
    }
}

impl<H: History> History for Coalesced<H> {
    fn read<'a>(
        &'a self,
        tenant: &'a Tenant,
        target: Target<'a>,
        from: Start<'a>,
    ) -> BoxFuture<'a, Result<Replay, HistoryError>> {
        let Some(key) = Key::of(tenant, target, from) else { return self.inner.read(tenant, target, from) };
        Box::pin(async move {
            let flight = self.flight(&key);
            let result = flight.read(self.inner.read(tenant, target, from)).await;
            self.release(&key, flight);
            result
        })
    }

    fn ack<'a>(
        &'a self,
        tenant: &'a Tenant,
        user: &'a str,
        position: &'a Position,
    ) -> BoxFuture<'a, Result<Cursor, HistoryError>> {
        self.inner.ack(tenant, user, position)
    }

    fn forget<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<usize, HistoryError>> {
        self.inner.forget(tenant)
    }

    fn streams_kept(&self) -> Option<usize> {
        self.inner.streams_kept()
    }

    fn cursor<'a>(&'a self, tenant: &'a Tenant, user: &'a str) -> BoxFuture<'a, Result<Cursor, HistoryError>> {
        self.inner.cursor(tenant, user)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::config::Config;
    use crate::tenant::Tenants;

    /// Counts reads; each read waits until the test lets it finish.
    struct Gated {
        reads: AtomicUsize,
        open: tokio::sync::Semaphore,
    }

    impl Default for Gated {
        fn default() -> Self {
            Self { reads: AtomicUsize::new(0), open: tokio::sync::Semaphore::new(0) }
        }
    }

    impl History for Gated {
        fn read<'a>(
            &'a self,
            _: &'a Tenant,
            _: Target<'a>,
            _: Start<'a>,
        ) -> BoxFuture<'a, Result<Replay, HistoryError>> {
            Box::pin(async move {
                let n = self.reads.fetch_add(1, SeqCst) as u64;
                self.open.acquire().await.expect("open").forget();
                let position = Position { epoch: "e".into(), offset: n };
                Ok(Replay { recovered: true, events: Vec::new(), position: Some(position), acked: 0 })
            })
        }
        fn ack<'a>(
            &'a self,
            _: &'a Tenant,
            _: &'a str,
            _: &'a Position,
        ) -> BoxFuture<'a, Result<Cursor, HistoryError>> {
            unreachable!()
        }
        fn forget<'a>(&'a self, _: &'a Tenant) -> BoxFuture<'a, Result<usize, HistoryError>> {
            unreachable!()
        }
    }

    fn tenant() -> Arc<Tenant> {
        let config = Config::from_toml("[tenants.t]\npublish_key = \"key-1234\"\n", "test", []).unwrap();
        Tenants::from_config(&config).get("t").unwrap().clone()
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn requests_that_wait_behind_a_read_share_the_next_one() {
        let (h, t) = (Arc::new(Coalesced::new(Gated::default())), tenant());
        let from = Start { since: None, unacked: false };
        let spawn = |target: &'static str| {
            let (h, t) = (h.clone(), t.clone());
            tokio::spawn(async move {
                let target = if target.is_empty() { Target::Broadcast } else { Target::Channel(target) };
                h.read(&t, target, from).await.unwrap().position.unwrap().offset
            })
        };
        let first = spawn("");
        settle().await;
        // These arrive while the first read runs: it began before them, so it is not theirs.
        let waiting: Vec<_> = (0..5).map(|_| spawn("")).collect();
        let other = spawn("news");
        settle().await;
        assert_eq!(h.inner.reads.load(SeqCst), 2, "one read of the broadcast, one of the channel");
        h.inner.open.add_permits(100);
        assert_eq!(first.await.unwrap(), 0);
        for w in waiting {
            assert_eq!(w.await.unwrap(), 2, "the five share the read after the first");
        }
        assert_eq!(other.await.unwrap(), 1);
        assert_eq!(h.inner.reads.load(SeqCst), 3);
        assert!(h.flights.lock().unwrap().is_empty(), "idle keys are forgotten");
    }

    #[tokio::test]
    async fn user_streams_are_never_shared() {
        let (h, t) = (Arc::new(Coalesced::new(Gated::default())), tenant());
        h.inner.open.add_permits(100);
        let from = Start { since: None, unacked: false };
        for _ in 0..3 {
            h.read(&t, Target::User("u"), from).await.unwrap();
        }
        assert_eq!(h.inner.reads.load(SeqCst), 3);
    }
}
