//! Dead letters: webhook batches given up on, kept per tenant (the newest
//! `webhooks.dead_letters`) for the admin API to list and send again. [`DeadLetterStore`] is
//! where: this node's memory ([`MemoryDeadLetters`]), or Redis, where every node lists and
//! replays every node's (`backend::redis`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::notice::Notice;

/// One batch given up on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeadLetter {
    /// The `webhook-id` it was last sent with.
    pub id: String,
    /// Its endpoint's id, and URL.
    pub endpoint: String,
    pub url: String,
    pub reason: String,
    pub failed_at_ms: u64,
    pub notices: Vec<Notice>,
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why dead letters could not be read or taken.
#[derive(Debug, thiserror::Error)]
#[error("webhook dead letters unavailable: {0}")]
pub(crate) struct DeadLetterError(#[source] pub(crate) Box<dyn std::error::Error + Send + Sync>);

/// Where dead letters are kept.
///
/// Contract: `add` never waits (endpoints call it from their tasks and as they queue); a
/// letter added is listed once stored (at once in memory); `take` hands a letter out once,
/// however many nodes take it at the same moment; each tenant keeps its newest `capacity`
/// letters, oldest first.
pub(crate) trait DeadLetterStore: Send + Sync + 'static {
    fn add(&self, tenant: &str, letter: DeadLetter);
    fn list<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<Vec<DeadLetter>, DeadLetterError>>;
    fn take<'a>(&'a self, tenant: &'a str, id: &'a str) -> BoxFuture<'a, Result<Option<DeadLetter>, DeadLetterError>>;
}

/// The store in use: memory until the backends put Redis in.
pub(crate) type DeadSlot = Arc<RwLock<Arc<dyn DeadLetterStore>>>;

/// Dead letters in this node's memory.
pub(crate) struct MemoryDeadLetters {
    /// Locked to add, list or take; never across an await.
    tenants: Mutex<HashMap<String, VecDeque<DeadLetter>>>,
    capacity: usize,
}

impl MemoryDeadLetters {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { tenants: Mutex::default(), capacity }
    }
}

impl DeadLetterStore for MemoryDeadLetters {
    fn add(&self, tenant: &str, letter: DeadLetter) {
        let mut tenants = self.tenants.lock().expect("dead letters lock");
        let letters = tenants.entry(tenant.to_owned()).or_default();
        if letters.len() >= self.capacity {
            letters.pop_front();
        }
        letters.push_back(letter);
    }

    fn list<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<Vec<DeadLetter>, DeadLetterError>> {
        let tenants = self.tenants.lock().expect("dead letters lock");
        let letters = tenants.get(tenant).map(|l| l.iter().cloned().collect()).unwrap_or_default();
        Box::pin(async { Ok(letters) })
    }

    fn take<'a>(&'a self, tenant: &'a str, id: &'a str) -> BoxFuture<'a, Result<Option<DeadLetter>, DeadLetterError>> {
        let mut tenants = self.tenants.lock().expect("dead letters lock");
        let letters = tenants.get_mut(tenant);
        let letter = letters.and_then(|l| l.iter().position(|d| d.id == id).and_then(|at| l.remove(at)));
        Box::pin(async { Ok(letter) })
    }
}
