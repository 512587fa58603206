//! Reference-counted interest of local connections in streams, handed to a broker's
//! subscriber task as a queue of changes, with tickets that resolve once a change is in
//! effect.

use std::sync::Mutex;

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
