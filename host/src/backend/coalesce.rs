//! History reads of one shared stream (a channel or the broadcast) made by many connections
//! at once, as in a reconnect storm, share one read of the store.
//!
//! A read may only serve requests that arrived before it began: the [`History`] contract
//! wants each connection's snapshot taken after it joined the stream's live delivery. So the
//! reads of one stream run one at a time; requests that arrive while one runs wait for it to
//! end, and the first of them then reads for all of them, from the earliest position among
//! them in one epoch. Each gets the part after its own position, and a look (no position)
//! the stream's position; one the shared read cannot answer (another epoch, or history
//! trimmed past the earliest) reads on its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use super::BoxFuture;
use super::history::{Cursor, CursorMove, History, HistoryError, Start};
use crate::stream::{Position, Replay, Target};
use crate::tenant::Tenant;

/// A history store whose shared-stream reads are coalesced.
pub(crate) struct Coalesced<H> {
    inner: H,
    /// Streams with a read running or requests waiting. Held only to find, add or drop an entry.
    flights: Mutex<HashMap<Key, Arc<Flight>>>,
}

/// A shared stream of a tenant.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant: Arc<str>,
    /// The channel; `None` for the broadcast.
    channel: Option<Box<str>>,
}

impl Key {
    /// User streams are one user's own, and a read from the read cursor depends on it.
    fn of(tenant: &Tenant, target: Target<'_>, from: Start<'_>) -> Option<Self> {
        let channel = match target {
            Target::User(_) => return None,
            Target::Channel(c) => Some(c.into()),
            Target::Broadcast => None,
        };
        (!from.unacked).then(|| Self { tenant: tenant.id.clone(), channel })
    }
}

/// The reads of one stream.
#[derive(Default)]
struct Flight {
    /// Arrivals and the beginnings of reads, numbered in one sequence.
    seq: AtomicU64,
    /// Where each request that arrived and is not answered yet starts, by arrival number: the
    /// next read starts at the earliest of them. Held only to add, remove or scan.
    waiting: Mutex<BTreeMap<u64, Option<Position>>>,
    /// The last read. Held while a read runs, so that requests queue behind it (in arrival
    /// order).
    last: tokio::sync::Mutex<Option<Shared>>,
}

impl Flight {
    fn arrive(&self, since: Option<&Position>) -> u64 {
        let mut waiting = self.waiting.lock().expect("waiting lock");
        let arrived = self.seq.fetch_add(1, SeqCst);
        waiting.insert(arrived, since.cloned());
        arrived
    }

    fn leave(&self, arrived: u64) {
        self.waiting.lock().expect("waiting lock").remove(&arrived);
    }

    /// The earliest start among the waiting requests in the epoch of `since`, or for a look,
    /// in the epoch of the first waiting request with a position.
    fn earliest(&self, since: Option<&Position>) -> Option<Position> {
        let waiting = self.waiting.lock().expect("waiting lock");
        let epoch = match since {
            Some(p) => &p.epoch,
            None => &waiting.values().flatten().next()?.epoch,
        };
        let same_epoch = waiting.values().flatten().filter(|p| p.epoch == *epoch);
        same_epoch.min_by_key(|p| p.offset).cloned()
    }
}

/// A read of a stream, kept for the requests that arrived before it began.
struct Shared {
    /// Its number in the flight's sequence.
    began: u64,
    since: Option<Position>,
    result: Result<Replay, String>,
}

impl Shared {
    /// This read's answer to a request from `since`, when it holds one.
    fn answer(&self, since: Option<&Position>) -> Option<Result<Replay, HistoryError>> {
        let replay = match &self.result {
            Err(e) => return Some(Err(HistoryError::Shared(e.clone()))),
            Ok(replay) => replay,
        };
        if self.since.as_ref() == since {
            return Some(Ok(replay.clone()));
        }
        let Some(since) = since else {
            // A look wants the position only, and any read that began after it arrived has one.
            return Some(Ok(Replay { recovered: true, ..position_of(replay) }));
        };
        let (Some(from), Some(at)) = (&self.since, &replay.position) else { return None };
        let within =
            from.epoch == since.epoch && at.epoch == since.epoch && (from.offset..=at.offset).contains(&since.offset);
        within.then(|| {
            // The events are all those kept after `from`: the first is the oldest kept when
            // history was trimmed past `from` (as `history::plan` judges).
            let oldest = replay.events.first().map_or(at.offset + 1, |e| e.offset);
            Ok(Replay {
                recovered: oldest <= since.offset + 1 || since.offset == at.offset,
                events: replay.events.iter().filter(|e| e.offset > since.offset).cloned().collect(),
                ..position_of(replay)
            })
        })
    }
}

/// `replay`'s position and cursor, without its events.
fn position_of(replay: &Replay) -> Replay {
    Replay { recovered: replay.recovered, events: Vec::new(), position: replay.position.clone(), acked: replay.acked }
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

    /// Answers from the read that began after this request arrived, or begins one.
    async fn read_shared(
        &self,
        flight: &Flight,
        tenant: &Tenant,
        target: Target<'_>,
        since: Option<&Position>,
    ) -> Result<Replay, HistoryError> {
        let arrived = flight.arrive(since);
        let mut last = flight.last.lock().await;
        let ready = last.as_ref().filter(|s| s.began > arrived).and_then(|s| s.answer(since));
        let answer = match ready {
            Some(answer) => answer,
            None => {
                let from = flight.earliest(since);
                let began = flight.seq.fetch_add(1, SeqCst);
                let result = self.inner.read(tenant, target, Start { since: from.as_ref(), unacked: false }).await;
                let read = Shared { began, since: from, result: result.map_err(|e| e.to_string()) };
                let answer = read.answer(since);
                *last = Some(read);
                match answer {
                    Some(answer) => answer,
                    None => self.inner.read(tenant, target, Start { since, unacked: false }).await,
                }
            }
        };
        flight.leave(arrived);
        answer
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
            let result = self.read_shared(&flight, tenant, target, from.since).await;
            self.release(&key, flight);
            result
        })
    }
    fn ack<'a>(
        &'a self,
        tenant: &'a Tenant,
        user: &'a str,
        position: &'a Position,
    ) -> BoxFuture<'a, Result<CursorMove, HistoryError>> {
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

    use bytes::Bytes;

    use super::*;
    use crate::config::Config;
    use crate::stream::Stored;
    use crate::tenant::Tenants;

    /// Counts reads; each read waits until the test lets it finish. Read `n` finds the stream
    /// in epoch "e" at offset `100 + n`, holding offsets 50 and after.
    struct Gated {
        reads: AtomicUsize,
        starts: Mutex<Vec<Option<u64>>>,
        open: tokio::sync::Semaphore,
    }

    impl Default for Gated {
        fn default() -> Self {
            let open = tokio::sync::Semaphore::new(0);
            Self { reads: AtomicUsize::new(0), starts: Mutex::default(), open }
        }
    }

    impl History for Gated {
        fn read<'a>(
            &'a self,
            _: &'a Tenant,
            _: Target<'a>,
            from: Start<'a>,
        ) -> BoxFuture<'a, Result<Replay, HistoryError>> {
            Box::pin(async move {
                let n = self.reads.fetch_add(1, SeqCst) as u64;
                self.starts.lock().unwrap().push(from.since.map(|p| p.offset));
                self.open.acquire().await.expect("open").forget();
                let position = Position { epoch: "e".into(), offset: 100 + n };
                let (recovered, first) = match from.since {
                    Some(since) if since.epoch == "e" => (since.offset >= 49, since.offset.max(49) + 1),
                    Some(_) => (false, position.offset + 1),
                    None => (true, position.offset + 1),
                };
                let event = |offset| Stored { offset, frame: Bytes::new(), filter: None };
                let events = (first..=position.offset).map(event).collect();
                Ok(Replay { recovered, events, position: Some(position), acked: 0 })
            })
        }
        fn ack<'a>(
            &'a self,
            _: &'a Tenant,
            _: &'a str,
            _: &'a Position,
        ) -> BoxFuture<'a, Result<CursorMove, HistoryError>> {
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
        assert_eq!(first.await.unwrap(), 100);
        for w in waiting {
            assert_eq!(w.await.unwrap(), 102, "the five share the read after the first");
        }
        assert_eq!(other.await.unwrap(), 101);
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

    #[tokio::test]
    async fn one_read_from_the_earliest_position_answers_later_ones_in_its_epoch() {
        let (h, t) = (Arc::new(Coalesced::new(Gated::default())), tenant());
        let spawn = |since: Option<(&'static str, u64)>| {
            let (h, t) = (h.clone(), t.clone());
            tokio::spawn(async move {
                let since = since.map(|(epoch, offset)| Position { epoch: epoch.into(), offset });
                let replay = h.read(&t, Target::Broadcast, Start { since: since.as_ref(), unacked: false }).await;
                let replay = replay.unwrap();
                let offsets: Vec<u64> = replay.events.iter().map(|e| e.offset).collect();
                (replay.recovered, offsets.first().copied(), offsets.len(), replay.position.unwrap().offset)
            })
        };
        let first = spawn(Some(("e", 99)));
        settle().await;
        let later = [spawn(Some(("e", 80))), spawn(Some(("e", 60))), spawn(Some(("e", 95)))];
        let other_epoch = spawn(Some(("x", 70)));
        let trimmed = spawn(Some(("e", 10)));
        settle().await;
        h.inner.open.add_permits(100);
        assert_eq!(first.await.unwrap(), (true, Some(100), 1, 100));
        let [a, b, c] = later;
        assert_eq!(a.await.unwrap(), (true, Some(81), 21, 101), "its part of the shared read");
        assert_eq!(b.await.unwrap(), (true, Some(61), 41, 101));
        assert_eq!(c.await.unwrap(), (true, Some(96), 6, 101));
        let (recovered, first, ..) = other_epoch.await.unwrap();
        assert_eq!((recovered, first), (false, None), "another epoch is not recovered");
        let (recovered, first, ..) = trimmed.await.unwrap();
        assert_eq!((recovered, first), (false, Some(50)), "trimmed past its start: what is kept");
        let starts = h.inner.starts.lock().unwrap().clone();
        assert_eq!(starts[..3], [Some(99), Some(10), Some(70)], "shared from the earliest in epoch e");
    }

    #[tokio::test]
    async fn looks_and_resumes_waiting_together_share_one_read() {
        let (h, t) = (Arc::new(Coalesced::new(Gated::default())), tenant());
        let spawn = |since: Option<u64>| {
            let (h, t) = (h.clone(), t.clone());
            tokio::spawn(async move {
                let since = since.map(|offset| Position { epoch: "e".into(), offset });
                let replay = h.read(&t, Target::Broadcast, Start { since: since.as_ref(), unacked: false }).await;
                let replay = replay.unwrap();
                (replay.recovered, replay.events.len(), replay.position.unwrap().offset)
            })
        };
        let first = spawn(None);
        settle().await;
        let waiting = [spawn(Some(90)), spawn(None), spawn(Some(95)), spawn(None)];
        settle().await;
        h.inner.open.add_permits(100);
        assert_eq!(first.await.unwrap(), (true, 0, 100));
        let [a, look, b, look2] = waiting;
        assert_eq!(a.await.unwrap(), (true, 11, 101));
        assert_eq!(look.await.unwrap(), (true, 0, 101), "a look gets the shared read's position");
        assert_eq!(b.await.unwrap(), (true, 6, 101));
        assert_eq!(look2.await.unwrap(), (true, 0, 101));
        assert_eq!(h.inner.reads.load(SeqCst), 2);
        assert_eq!(h.inner.starts.lock().unwrap()[1], Some(90));
    }
}
