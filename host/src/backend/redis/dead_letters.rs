//! Webhook dead letters in Redis, so that any node lists and replays every node's:
//! `notify:webhooks:{tenant}:dead`, a list of `<id>\n<json>` entries, oldest first, trimmed to
//! the newest `webhooks.dead_letters`. Each node writes its letters from a bounded queue in
//! one task (endpoints never wait on Redis); taking one is a script, so two nodes replaying
//! it at once hand it out once.

use std::time::Duration;

use ::redis::RedisError;
use tokio::sync::mpsc;

use super::scripts::{self, eval};
use super::{Link, keys};
use crate::backend::BoxFuture;
use crate::webhook::{DeadLetter, DeadLetterError, DeadLetterStore};

/// Letters waiting to be written; more are dropped (and logged) while Redis is away.
const QUEUE: usize = 1024;
/// Letters written per round trip.
const BATCH: usize = 64;
/// Tries to write a batch before it is dropped (and logged), a second apart.
const TRIES: u32 = 5;

pub(crate) struct RedisDeadLetters {
    conn: Link,
    /// Bounded: a node whose endpoints give up faster than Redis takes letters drops them.
    tx: mpsc::Sender<(String, DeadLetter)>,
}

/// The task writing letters.
struct Writer {
    conn: Link,
    rx: mpsc::Receiver<(String, DeadLetter)>,
    capacity: usize,
}

impl RedisDeadLetters {
    /// The store, and the task that writes its letters (for the caller to run).
    pub(crate) fn start(conn: Link, capacity: usize) -> (Self, BoxFuture<'static, ()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer { conn: conn.clone(), rx, capacity };
        (Self { conn, tx }, Box::pin(writer.run()))
    }
}

impl Writer {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        while self.rx.recv_many(&mut batch, BATCH).await > 0 {
            let mut tries = 0;
            while let Err(e) = self.write(&batch).await {
                tries += 1;
                if tries == TRIES {
                    tracing::error!(error = %e, letters = batch.len(), "webhook dead letters not written to Redis; dropped");
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            batch.clear();
        }
    }

    async fn write(&mut self, batch: &[(String, DeadLetter)]) -> Result<(), RedisError> {
        let mut cmds = Vec::with_capacity(batch.len() * 2);
        for (tenant, letter) in batch {
            let key = keys::webhook_dead_letters(tenant);
            let json = serde_json::to_string(letter).expect("letters serialise");
            cmds.push(::redis::cmd("RPUSH").arg(&key).arg(format!("{}\n{json}", letter.id)).clone());
            cmds.push(::redis::cmd("LTRIM").arg(&key).arg(-(self.capacity as i64)).arg(-1).clone());
        }
        self.conn.run_all(cmds).await.map(drop)
    }
}

/// A letter from its list entry.
fn parse(entry: &str) -> Option<DeadLetter> {
    let (_, json) = entry.split_once('\n')?;
    serde_json::from_str(json).ok()
}

fn unavailable(e: RedisError) -> DeadLetterError {
    DeadLetterError(Box::new(e))
}

impl DeadLetterStore for RedisDeadLetters {
    fn add(&self, tenant: &str, letter: DeadLetter) {
        if self.tx.try_send((tenant.to_owned(), letter)).is_err() {
            tracing::error!(tenant, "webhook dead letter dropped: the queue to Redis is full");
        }
    }

    fn list<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<Vec<DeadLetter>, DeadLetterError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let entries: Vec<String> = ::redis::cmd("LRANGE")
                .arg(keys::webhook_dead_letters(tenant))
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(entries.iter().filter_map(|e| parse(e)).collect())
        })
    }

    fn take<'a>(&'a self, tenant: &'a str, id: &'a str) -> BoxFuture<'a, Result<Option<DeadLetter>, DeadLetterError>> {
        Box::pin(async move {
            let mut take = eval(scripts::DEAD_LETTER_TAKE, &[keys::webhook_dead_letters(tenant)]);
            take.arg(id);
            let entry: Option<String> = take.query_async(&mut self.conn.clone()).await.map_err(unavailable)?;
            Ok(entry.as_deref().and_then(parse))
        })
    }
}
