//! `soak`: a steady mixed load for a long run. `--connections` users stay connected on
//! average, each subscribed to one of 20 channels and acking every event of its own stream;
//! each connection lives a random time (exponential, so that `--churn` connections close
//! and as many open every second); events go out at `--rate` per second, half to a random
//! user, half to a random channel. Prints what happened every minute.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::Args;
use crate::connect::{Ws, connect_url, open_ws};
use crate::events::{Publisher, now_us, number};

const CHANNELS: u64 = 20;

#[derive(Default)]
struct Counts {
    connects: AtomicU64,
    failed: AtomicU64,
    events: AtomicU64,
    acks: AtomicU64,
    published: AtomicU64,
}

/// A small xorshift generator: the load needs spread, not quality.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// An exponential wait with mean `mean`.
    fn lifetime(&mut self, mean: Duration) -> Duration {
        let u = (self.next() % 1_000_000 + 1) as f64 / 1_000_001.0;
        mean.mul_f64(-u.ln())
    }
}

pub(crate) async fn soak(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.churn > 0.0, "--churn must be above 0");
    let counts = Arc::new(Counts::default());
    let end = Instant::now() + Duration::from_secs(a.hold);
    let mean_life = Duration::from_secs_f64(a.connections as f64 / a.churn);
    let slots: Vec<_> = (0..a.connections)
        .map(|slot| {
            let url = connect_url(&a, slot);
            let channel = format!("c{}", slot as u64 % CHANNELS);
            tokio::spawn(keep_connected(url, channel, mean_life, end, counts.clone(), slot as u64 + 1))
        })
        .collect();
    let to = Targets { users: a.connections as u64, prefix: a.prefix.clone() };
    let publisher = tokio::spawn(publish(a.publish.clone(), a.key.clone(), a.rate, to, end, counts.clone()));
    let started = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(60).min(end.saturating_duration_since(Instant::now()))).await;
        report(&counts, started.elapsed());
    }
    publisher.await??;
    for s in slots {
        s.abort();
    }
    Ok(())
}

fn report(c: &Counts, at: Duration) {
    println!(
        "soak at {:.0} s: connects {} (failed {}), events received {}, acks sent {}, published {}",
        at.as_secs_f64(),
        c.connects.load(Relaxed),
        c.failed.load(Relaxed),
        c.events.load(Relaxed),
        c.acks.load(Relaxed),
        c.published.load(Relaxed)
    );
}

/// One user's connection, opened again each time its random lifetime ends.
async fn keep_connected(url: String, channel: String, mean: Duration, end: Instant, c: Arc<Counts>, seed: u64) {
    let mut random = Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // Spread the first connects over a second.
    tokio::time::sleep(Duration::from_micros(random.next() % 1_000_000)).await;
    while Instant::now() < end {
        let Ok(mut ws) = open_ws(url.clone(), None).await else {
            c.failed.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        c.connects.fetch_add(1, Relaxed);
        let _ = ws.send(Message::text(json!({"type": "subscribe", "channel": channel}).to_string())).await;
        let until = (Instant::now() + random.lifetime(mean)).min(end);
        let _ = tokio::time::timeout_at(until.into(), read_and_ack(&mut ws, &c)).await;
        let _ = ws.close(None).await;
    }
}

/// Reads frames, acking every event of the user's own stream.
async fn read_and_ack(ws: &mut Ws, c: &Counts) {
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        if !text.contains("\"type\":\"event\"") {
            continue;
        }
        c.events.fetch_add(1, Relaxed);
        if text.contains("\"user\":") && !text.contains("\"channel\":") {
            let epoch = text.split("\"epoch\":\"").nth(1).and_then(|r| r.split('"').next());
            if let (Some(epoch), Some(offset)) = (epoch, number(&text, "\"offset\":")) {
                let ack = json!({"type": "ack", "epoch": epoch, "offset": offset}).to_string();
                if ws.send(Message::text(ack)).await.is_ok() {
                    c.acks.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

/// The users events go to: `prefix` and a number below `users`.
struct Targets {
    users: u64,
    prefix: String,
}

/// Publishes `rate` events per second until `end`: even ones to a random user of the
/// population, odd ones to a random channel.
async fn publish(url: String, key: String, rate: f64, to: Targets, end: Instant, c: Arc<Counts>) -> anyhow::Result<()> {
    let mut publisher = Publisher::connect(&url, &key).await?;
    let mut random = Random(now_us() | 1);
    let started = Instant::now();
    let mut n: u64 = 0;
    while Instant::now() < end {
        tokio::time::sleep_until((started + Duration::from_secs_f64(n as f64 / rate)).into()).await;
        let data = json!({"n": n, "sent_us": now_us(), "ssn": "123-45-6789", "note": "soak"});
        let body = if n.is_multiple_of(2) {
            json!({"users": [format!("{}{}", to.prefix, random.next() % to.users)], "event": "soak", "data": data})
        } else {
            json!({"channels": [format!("c{}", random.next() % CHANNELS)], "event": "soak", "data": data})
        };
        publisher.send(&body).await?;
        c.published.fetch_add(1, Relaxed);
        n += 1;
    }
    Ok(())
}
