//! Reference-counted interest of local connections in streams, handed to a broker's
//! subscriber task as a queue of changes, with tickets that resolve once a change is in
//! effect; and the counts the subscriber task keeps (`Counts`), which decide what to
//! subscribe and when to unsubscribe.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

/// One connection started (`delta > 0`) or stopped being interested in a pub/sub channel.
#[derive(Debug)]
pub(crate) struct Change {
    pub channel: String,
    pub delta: i32,
}

/// Identifies one queued change; see [`Interest::synced`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ticket(u64);

/// The sending side, shared by every connection task.
pub(crate) struct Interest {
    /// Numbering and sending happen under one lock, so tickets are in queue order and
    /// "everything up to ticket N is processed" is meaningful. Held only for the send.
    queue: Mutex<(u64, mpsc::UnboundedSender<Change>)>,
    /// The last ticket the subscriber task has put into effect.
    synced: watch::Receiver<u64>,
}

/// The subscriber task's side.
pub(crate) struct Changes {
    pub rx: mpsc::UnboundedReceiver<Change>,
    /// Changes received so far; published through `synced` once they are in effect.
    pub received: u64,
    synced: watch::Sender<u64>,
}

impl Changes {
    /// Reports every change received so far as in effect.
    pub(crate) fn mark_synced(&self) {
        self.synced.send_replace(self.received);
    }
}

impl Interest {
    pub(crate) fn new() -> (Self, Changes) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (synced_tx, synced) = watch::channel(0);
        (Self { queue: Mutex::new((0, tx)), synced }, Changes { rx, received: 0, synced: synced_tx })
    }

    pub(crate) fn change(&self, channel: String, delta: i32) -> Ticket {
        let mut q = self.queue.lock().expect("interest lock");
        q.0 += 1;
        // A closed receiver means the broker is shutting down; nothing is left to subscribe.
        let _ = q.1.send(Change { channel, delta });
        Ticket(q.0)
    }

    /// Waits until the change behind `ticket` (and every earlier one) is in effect.
    pub(crate) async fn synced(&self, ticket: Ticket) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|n| *n >= ticket.0).await;
    }
}

/// Local connections per channel, the channels subscribed on the current pub/sub connection,
/// and those subscribed without local interest (kept for a delay, so connection churn does
/// not become subscription churn).
#[derive(Debug, Default)]
pub(crate) struct Counts {
    counts: HashMap<String, u32>,
    subscribed: HashSet<String>,
    /// Subscribed channels without local interest, since when.
    lingering: HashMap<String, Instant>,
}

impl Counts {
    /// Applies interest changes at `now`; returns the channels that now need subscribing.
    pub(crate) fn apply(&mut self, changes: Vec<Change>, now: Instant) -> Vec<String> {
        let mut touched = HashSet::new();
        for Change { channel, delta } in changes {
            let count = self.counts.entry(channel.clone()).or_insert(0);
            *count = count.saturating_add_signed(delta);
            if *count == 0 {
                self.counts.remove(&channel);
            }
            touched.insert(channel);
        }
        let mut new = Vec::new();
        for channel in touched {
            if self.counts.contains_key(&channel) {
                self.lingering.remove(&channel);
                if !self.subscribed.contains(&channel) {
                    new.push(channel);
                }
            } else if self.subscribed.contains(&channel) {
                self.lingering.entry(channel).or_insert(now);
            }
        }
        new
    }

    /// Every channel with local interest (what a new connection subscribes).
    pub(crate) fn wanted(&self) -> Vec<String> {
        self.counts.keys().cloned().collect()
    }

    pub(crate) fn subscribed(&mut self, channels: Vec<String>) {
        self.subscribed.extend(channels);
    }

    /// Channels without local interest for at least `delay`: to unsubscribe.
    pub(crate) fn expired(&self, now: Instant, delay: Duration) -> Vec<String> {
        self.lingering
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= delay)
            .map(|(c, _)| c.clone())
            .collect()
    }

    pub(crate) fn unsubscribed(&mut self, channels: &[String]) {
        for c in channels {
            self.lingering.remove(c);
            self.subscribed.remove(c);
        }
    }

    /// The server dropped `channel`'s subscription (a Redis Cluster moved its slot to
    /// another node): forgets it; true if it has local interest, to subscribe again.
    pub(crate) fn lost(&mut self, channel: &str) -> bool {
        self.lingering.remove(channel);
        self.subscribed.remove(channel) && self.counts.contains_key(channel)
    }

    /// The pub/sub connection was lost: nothing is subscribed any more.
    pub(crate) fn disconnected(&mut self) {
        self.subscribed.clear();
        self.lingering.clear();
    }

    pub(crate) fn subscriptions(&self) -> usize {
        self.subscribed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(channel: &str, delta: i32) -> Change {
        Change { channel: channel.into(), delta }
    }

    #[test]
    fn the_first_connection_subscribes_and_the_last_one_lingers() {
        let mut counts = Counts::default();
        let t0 = Instant::now();
        let new = counts.apply(vec![change("a", 1), change("a", 1), change("b", 1)], t0);
        let mut sorted = new.clone();
        sorted.sort();
        assert_eq!(sorted, ["a", "b"]);
        counts.subscribed(new);
        assert!(counts.apply(vec![change("a", 1)], t0).is_empty(), "already subscribed");
        assert!(counts.apply(vec![change("a", -1), change("a", -1)], t0).is_empty());
        assert!(counts.expired(t0 + Duration::from_secs(60), Duration::from_secs(1)).is_empty(), "a still counted");
        counts.apply(vec![change("a", -1)], t0);
        let delay = Duration::from_secs(5);
        assert!(counts.expired(t0 + Duration::from_secs(4), delay).is_empty(), "lingers for the delay");
        assert_eq!(counts.expired(t0 + delay, delay), ["a"]);
    }

    #[test]
    fn interest_coming_back_cancels_the_linger() {
        let mut counts = Counts::default();
        let t0 = Instant::now();
        let new = counts.apply(vec![change("a", 1)], t0);
        counts.subscribed(new);
        counts.apply(vec![change("a", -1)], t0);
        assert!(counts.apply(vec![change("a", 1)], t0).is_empty(), "still subscribed: nothing to send");
        assert!(counts.expired(t0 + Duration::from_secs(3600), Duration::from_secs(1)).is_empty());
        counts.apply(vec![change("a", -1)], t0);
        let expired = counts.expired(t0, Duration::ZERO);
        counts.unsubscribed(&expired);
        assert_eq!(counts.subscriptions(), 0);
        assert_eq!(counts.apply(vec![change("a", 1)], t0), ["a"], "subscribed again after the unsubscribe");
    }

    #[test]
    fn a_lost_connection_resubscribes_everything_wanted() {
        let mut counts = Counts::default();
        let t0 = Instant::now();
        let new = counts.apply(vec![change("a", 1), change("b", 1), change("b", -1)], t0);
        assert_eq!(new, ["a"], "b came and went in one batch");
        counts.subscribed(new);
        counts.disconnected();
        assert_eq!(counts.subscriptions(), 0);
        assert_eq!(counts.wanted(), ["a"]);
        assert!(counts.apply(vec![change("zero", -1)], t0).is_empty(), "counts never go below zero");
        assert_eq!(counts.wanted(), ["a"]);
    }

    #[test]
    fn a_channel_the_server_dropped_is_wanted_again_only_with_interest() {
        let mut counts = Counts::default();
        let t0 = Instant::now();
        let new = counts.apply(vec![change("kept", 1), change("left", 1)], t0);
        counts.subscribed(new);
        counts.apply(vec![change("left", -1)], t0);
        assert!(counts.lost("kept"), "still wanted: subscribe it again");
        assert_eq!(counts.subscriptions(), 1, "forgotten until then");
        assert!(!counts.lost("left"), "lingering without interest: let it go");
        assert!(counts.expired(t0 + Duration::from_secs(3600), Duration::ZERO).is_empty());
        assert!(!counts.lost("never"), "our own unsubscribe of a channel already forgotten");
        counts.subscribed(vec!["kept".into()]);
        assert_eq!(counts.subscriptions(), 1);
    }
}
