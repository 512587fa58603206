//! Redis broker: every node publishes each event once per target stream to that stream's
//! pub/sub channel, and subscribes only to the channels of streams it has local connections
//! for. Events travel through Redis even to the publishing node, so every node sees one
//! order per publisher. For a tenant with history, each event goes out through the history
//! script (`history::append_cmd`), which appends it to the stream's Redis history and
//! publishes it in one step, with its position in the frame and the envelope.
//!
//! Subscriptions are reference-counted per channel, sent in batches, and kept for
//! `unsubscribe_delay` after the last local subscriber leaves, so connection churn does not
//! become SUBSCRIBE/UNSUBSCRIBE churn. The subscriber task reconnects with backoff and
//! resubscribes everything after Redis restarts.
//!
//! On a Redis Cluster the same happens with sharded pub/sub (SPUBLISH/SSUBSCRIBE): each
//! stream's channel lives on the shard its name hashes to, so fan-out traffic spreads over
//! the cluster instead of being broadcast to every shard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ::redis::Value;

use super::keys::{parse_stream_channel, stream_channel};
use super::link::{Link, MIN_BACKOFF};
use super::pubsub::{Incoming, Transport};
use super::{envelope, history, keys};
use crate::backend::interest::{Change, Changes, Counts, Interest, Ticket};
use crate::backend::{BoxFuture, Broker, BrokerError, LocalDelivery};
use crate::clock::now_micros;
use crate::config::RedisConfig;
use crate::event::Event;
use crate::hub::Routing;
use crate::metrics::BrokerMetrics;
use crate::stream::Target;
use crate::tenant::{Tenant, Tenants};

/// Channels per SUBSCRIBE/UNSUBSCRIBE command (per batch of concurrent SSUBSCRIBEs).
const BATCH: usize = 1000;
/// How often lingering subscriptions are swept and both connections are pinged.
const TICK: Duration = Duration::from_secs(1);
/// An open pub/sub connection is given up only when Redis leaves a command on it unanswered
/// for this many `timeout`s. Giving up tells every local client to reconnect and resume; a
/// Redis or node that is merely slow (a saturated machine) loses nothing on an open
/// connection, and sending everyone away would only add load.
const PATIENCE: u32 = 5;

/// Node-to-node fan-out over Redis pub/sub.
pub(crate) struct RedisBroker {
    /// Multiplexed and pipelined; reconnects by itself after failures.
    publisher: Link,
    interest: Interest,
    health: Arc<Health>,
    metrics: Arc<BrokerMetrics>,
    timeout: Duration,
}

#[derive(Default)]
struct Health {
    subscriber: AtomicBool,
    publisher: AtomicBool,
}

impl RedisBroker {
    /// One Redis is connected lazily (the host starts while it is down and reports not
    /// ready until it answers); a cluster must answer at start.
    pub(crate) async fn start(
        config: &RedisConfig,
        local: Arc<dyn LocalDelivery>,
        tenants: Arc<Tenants>,
        metrics: Arc<BrokerMetrics>,
        reconnect_spread: Duration,
    ) -> Result<(Self, BoxFuture<'static, ()>), BrokerError> {
        let publisher = Link::connect(config, config.timeout).await?;
        let (interest, changes) = Interest::new();
        let health = Arc::new(Health::default());
        let subscriber = Subscriber {
            config: config.clone(),
            publisher: publisher.clone(),
            local,
            tenants,
            changes,
            health: health.clone(),
            metrics: metrics.clone(),
            counts: Counts::default(),
            reconnect_spread,
            resync: false,
        };
        Ok((Self { publisher, interest, health, metrics, timeout: config.timeout }, Box::pin(subscriber.run())))
    }
}

impl Broker for RedisBroker {
    fn forget<'a>(&'a self, tenant: &'a Tenant) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let streams = [keys::ingest_stream(&tenant.id), keys::dead_letter_stream(&tenant.id)];
            let unlink = streams.iter().map(|k| ::redis::cmd("UNLINK").arg(k).clone()).collect();
            self.publisher.clone().run_all(unlink).await?;
            Ok(())
        })
    }

    fn publish<'a>(&'a self, tenant: &'a Arc<Tenant>, events: &'a [Event]) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let publish = if self.publisher.is_cluster() { "SPUBLISH" } else { "PUBLISH" };
            let history = tenant.config.history.enabled();
            let mut cmds = Vec::new();
            for event in events {
                // The same for every target stream of the event.
                let head = envelope::head(now_micros(), (event.delta, event.except), event.filter.as_deref());
                for target in event.targets() {
                    if history {
                        let (before, after) = event.json_parts(target);
                        cmds.push(history::append_cmd(tenant, target, publish, &head, &before, &after));
                        continue;
                    }
                    let frame = event.encode_for(target, None);
                    let mut cmd = ::redis::cmd(publish);
                    cmd.arg(stream_channel(&tenant.id, target)).arg(envelope::encode(&head, &frame));
                    cmds.push(cmd);
                }
            }
            let messages = cmds.len() as u64;
            if messages == 0 {
                return Ok(());
            }
            let mut conn = self.publisher.clone();
            let sent = tokio::time::timeout(self.timeout, conn.run_all(cmds)).await;
            match sent {
                Ok(Ok(_)) => {
                    self.health.publisher.store(true, Relaxed);
                    self.metrics.published.fetch_add(messages, Relaxed);
                    Ok(())
                }
                failed => {
                    self.health.publisher.store(false, Relaxed);
                    self.metrics.publish_failures.fetch_add(1, Relaxed);
                    Err(match failed {
                        Ok(Err(e)) => BrokerError::from(e),
                        _ => super::timeout(self.timeout).into(),
                    })
                }
            }
        })
    }

    fn interest(&self, tenant: &Tenant, streams: &[Target<'_>], delta: i32) -> Option<Ticket> {
        streams.iter().map(|s| self.interest.change(stream_channel(&tenant.id, *s), delta)).last()
    }

    fn synced(&self, ticket: Ticket) -> BoxFuture<'_, ()> {
        Box::pin(self.interest.synced(ticket))
    }

    fn healthy(&self) -> bool {
        self.health.subscriber.load(Relaxed) && self.health.publisher.load(Relaxed)
    }
}

/// Owns the pub/sub connection: applies interest changes and delivers incoming messages.
struct Subscriber {
    config: RedisConfig,
    /// Pinged every tick, so publisher health recovers without waiting for a publish.
    publisher: Link,
    local: Arc<dyn LocalDelivery>,
    /// The live registry: tenants created or deleted at runtime are followed.
    tenants: Arc<Tenants>,
    changes: Changes,
    health: Arc<Health>,
    metrics: Arc<BrokerMetrics>,
    /// Local interest per channel and what the current connection subscribed.
    counts: Counts,
    /// Clients told to resync wait a random delay up to this (`connections.reconnect_spread`).
    reconnect_spread: Duration,
    /// The pub/sub connection was lost after it had served: once it is back, local clients
    /// must resume, since events published meanwhile passed this node by.
    resync: bool,
}

/// Why a pub/sub session ended.
enum Ended {
    /// The broker was dropped (host stopped).
    Stopped,
    /// The connection failed.
    Lost(String),
}

impl Subscriber {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut connected_once = false;
        loop {
            let connected = tokio::time::timeout(self.config.timeout * 3, Transport::connect(&self.config)).await;
            let why = match connected {
                Ok(Ok(pubsub)) => {
                    backoff = MIN_BACKOFF;
                    if connected_once {
                        self.metrics.reconnects.fetch_add(1, Relaxed);
                    }
                    connected_once = true;
                    match self.serve(pubsub).await {
                        Ended::Stopped => return,
                        Ended::Lost(why) => {
                            self.resync = true;
                            why
                        }
                    }
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "connect timed out".into(),
            };
            self.health.subscriber.store(false, Relaxed);
            self.metrics.up.store(0, Relaxed);
            self.counts.disconnected();
            self.metrics.subscriptions.store(0, Relaxed);
            tracing::warn!(error = %why, retry_in = ?backoff, "Redis pub/sub connection down; local connections keep being served");
            // Interest keeps changing while Redis is away; it takes effect on reconnect.
            let until = tokio::time::Instant::now() + backoff;
            loop {
                let mut buf = Vec::new();
                tokio::select! {
                    () = tokio::time::sleep_until(until) => break,
                    n = self.changes.rx.recv_many(&mut buf, 1024) => {
                        if n == 0 {
                            return;
                        }
                        self.apply(buf);
                        self.changes.mark_synced();
                    }
                }
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    async fn serve(&mut self, mut transport: Transport) -> Ended {
        let mut buf = Vec::new();
        while let Ok(change) = self.changes.rx.try_recv() {
            buf.push(change);
        }
        self.apply(std::mem::take(&mut buf));
        let wanted = self.counts.wanted();
        if let Err(e) = self.subscribe(&mut transport, wanted).await {
            return e;
        }
        self.health.subscriber.store(true, Relaxed);
        self.metrics.up.store(1, Relaxed);
        self.ping_publisher().await;
        self.changes.mark_synced();
        tracing::info!(channels = self.counts.subscriptions(), "Redis pub/sub connected");
        if std::mem::take(&mut self.resync) {
            let told = self.local.resync(self.reconnect_spread);
            self.metrics.resyncs.fetch_add(1, Relaxed);
            tracing::info!(connections = told, "pub/sub was down: connections told to reconnect and resume");
        }
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                msg = transport.next() => match msg {
                    Some(Incoming::Message(channel, payload)) => self.on_message(&channel, payload),
                    Some(Incoming::Unsubscribed(channel)) => {
                        if let Err(e) = self.moved(&mut transport, channel).await {
                            return e;
                        }
                    }
                    Some(Incoming::NodeLost) => return Ended::Lost("a cluster node's connection dropped".into()),
                    Some(Incoming::Other) => {}
                    None => return Ended::Lost("connection closed".into()),
                },
                n = self.changes.rx.recv_many(&mut buf, 1024) => {
                    if n == 0 {
                        return Ended::Stopped;
                    }
                    let new = self.apply(std::mem::take(&mut buf));
                    if let Err(e) = self.subscribe(&mut transport, new).await {
                        return e;
                    }
                    self.changes.mark_synced();
                }
                _ = tick.tick() => {
                    // First, so that readiness follows the publisher even while this
                    // connection waits patiently below.
                    self.ping_publisher().await;
                    if let Err(e) = self.sweep(&mut transport).await {
                        return e;
                    }
                    let ping = tokio::time::timeout(self.patience(), transport.ping()).await;
                    if !matches!(ping, Ok(Ok(()))) {
                        return Ended::Lost("ping unanswered".into());
                    }
                }
            }
        }
    }

    /// Applies interest changes; returns channels that now need subscribing.
    fn apply(&mut self, changes: Vec<Change>) -> Vec<String> {
        self.changes.received += changes.len() as u64;
        self.counts.apply(changes, Instant::now())
    }

    async fn subscribe(&mut self, transport: &mut Transport, channels: Vec<String>) -> Result<(), Ended> {
        for chunk in channels.chunks(BATCH) {
            let done = tokio::time::timeout(self.patience(), transport.subscribe(chunk, true, true)).await;
            if !matches!(done, Ok(Ok(()))) {
                return Err(Ended::Lost("SUBSCRIBE failed".into()));
            }
        }
        self.counts.subscribed(channels);
        self.metrics.subscriptions.store(self.counts.subscriptions() as i64, Relaxed);
        Ok(())
    }

    /// After the server ended `channel`'s subscription: a channel still wanted is subscribed
    /// again (on the node that now owns its slot), then its local connections are told to
    /// resume, since events published in between passed this node by. Our own SUNSUBSCRIBEs
    /// end here too; they name channels no longer subscribed.
    async fn moved(&mut self, transport: &mut Transport, channel: String) -> Result<(), Ended> {
        if !self.counts.lost(&channel) {
            return Ok(());
        }
        self.subscribe(transport, vec![channel.clone()]).await?;
        let stream = parse_stream_channel(&channel).and_then(|(t, target)| Some((self.tenants.get(t)?, target)));
        if let Some((tenant, target)) = stream {
            let told = self.local.resync_stream(&tenant, target, self.reconnect_spread);
            self.metrics.resyncs.fetch_add(1, Relaxed);
            tracing::info!(channel, connections = told, "sharded subscription moved: its connections resume");
        }
        Ok(())
    }

    /// Unsubscribes channels that have lingered without local interest for the delay.
    async fn sweep(&mut self, transport: &mut Transport) -> Result<(), Ended> {
        let expired = self.counts.expired(Instant::now(), self.config.unsubscribe_delay);
        for chunk in expired.chunks(BATCH) {
            let done = tokio::time::timeout(self.patience(), transport.subscribe(chunk, false, true)).await;
            if !matches!(done, Ok(Ok(()))) {
                return Err(Ended::Lost("UNSUBSCRIBE failed".into()));
            }
        }
        self.counts.unsubscribed(&expired);
        self.metrics.subscriptions.store(self.counts.subscriptions() as i64, Relaxed);
        Ok(())
    }

    /// How long a command on the open pub/sub connection may go unanswered.
    fn patience(&self) -> Duration {
        self.config.timeout.saturating_mul(PATIENCE)
    }

    async fn ping_publisher(&self) {
        let mut conn = self.publisher.clone();
        let ping =
            tokio::time::timeout(self.config.timeout, ::redis::cmd("PING").query_async::<Value>(&mut conn)).await;
        self.health.publisher.store(matches!(ping, Ok(Ok(_))), Relaxed);
    }

    fn on_message(&self, channel: &str, payload: Vec<u8>) {
        self.metrics.received.fetch_add(1, Relaxed);
        let Some((tenant, target)) = parse_stream_channel(channel) else {
            self.metrics.undecodable.fetch_add(1, Relaxed);
            return;
        };
        let Some(tenant) = self.tenants.get(tenant) else {
            self.metrics.undecodable.fetch_add(1, Relaxed);
            return;
        };
        match envelope::decode(payload.into()) {
            Ok(e) => {
                let latency = Duration::from_micros(now_micros().saturating_sub(e.published_micros));
                let routing = Routing {
                    filter: e.filter.as_ref(),
                    position: e.position.as_ref(),
                    delta: e.delta,
                    except: e.except,
                };
                self.local.deliver_frame(&tenant, target, &e.frame, routing, latency);
            }
            Err(e) => {
                self.metrics.undecodable.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, channel, "undecodable broker message");
            }
        }
    }
}
