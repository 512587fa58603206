//! A tenant's dead letters: webhook batches given up on, kept (the newest
//! `webhooks.dead_letters`) for the admin API to list and send again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::notice::Notice;

/// One batch given up on.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    /// The `webhook-id` it was last sent with.
    pub id: String,
    /// Its endpoint's id, and URL.
    pub endpoint: Arc<str>,
    pub url: String,
    pub reason: String,
    pub failed_at_ms: u64,
    pub notices: Vec<Notice>,
}

/// A tenant's dead letters, oldest first.
pub(crate) struct DeadLetters {
    /// Locked to add, list or take; never across an await.
    letters: Mutex<VecDeque<DeadLetter>>,
    capacity: usize,
}

impl DeadLetters {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { letters: Mutex::new(VecDeque::new()), capacity }
    }

    /// Keeps `letter`, dropping the oldest when full.
    pub(crate) fn add(&self, letter: DeadLetter) {
        let mut letters = self.letters.lock().expect("dead letters lock");
        if letters.len() >= self.capacity {
            letters.pop_front();
        }
        letters.push_back(letter);
    }

    pub(crate) fn list(&self) -> Vec<DeadLetter> {
        self.letters.lock().expect("dead letters lock").iter().cloned().collect()
    }

    /// Takes the letter `id` out, to be sent again.
    pub(crate) fn take(&self, id: &str) -> Option<DeadLetter> {
        let mut letters = self.letters.lock().expect("dead letters lock");
        let at = letters.iter().position(|l| l.id == id)?;
        letters.remove(at)
    }
}
