//! Pub/sub connections: a dedicated connection to one Redis, or a RESP3 connection to a Redis
//! Cluster whose pushes arrive on a channel. Sharded subscriptions (SSUBSCRIBE) are used on
//! a cluster for stream channels; classic ones for channels publishers PUBLISH to.

use ::redis::aio::{PubSubSink, PubSubStream};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Client, Cmd, ProtocolVersion, PushInfo, PushKind, RedisResult, Value};
use futures_util::StreamExt;
use futures_util::future::try_join_all;
use tokio::sync::mpsc;

use crate::config::RedisConfig;

/// What the pub/sub connection delivered.
pub(crate) enum Incoming {
    Message(String, Vec<u8>),
    /// The server ended a sharded subscription: ours (an SUNSUBSCRIBE), or its slot moved to
    /// another node (a failover or a resharding).
    Unsubscribed(String),
    /// The connection to one node of a cluster dropped, with its subscriptions.
    NodeLost,
    /// A confirmation or notice; nothing to deliver.
    Other,
}

/// The pub/sub connection: a dedicated connection to one Redis, or a RESP3 cluster
/// connection whose pushes (sharded messages) arrive on a channel.
pub(crate) enum Transport {
    Single { sink: PubSubSink, stream: PubSubStream },
    Cluster { conn: ClusterConnection, pushes: mpsc::UnboundedReceiver<PushInfo> },
}

impl Transport {
    pub(crate) async fn connect(config: &RedisConfig) -> RedisResult<Self> {
        if config.cluster {
            let (tx, pushes) = mpsc::unbounded_channel();
            let client = ClusterClientBuilder::new(config.urls().collect::<Vec<_>>())
                .use_protocol(ProtocolVersion::RESP3)
                .push_sender(tx)
                .connection_timeout(config.timeout)
                .response_timeout(config.timeout)
                .build()?;
            let conn = client.get_async_connection().await?;
            return Ok(Self::Cluster { conn, pushes });
        }
        let client = Client::open(config.urls().next().unwrap_or_default())?;
        let (sink, stream) = client.get_async_pubsub().await?.split();
        Ok(Self::Single { sink, stream })
    }

    /// Subscribes (`on`) or unsubscribes `channels`: one command on one Redis; one per
    /// channel, concurrently, on a cluster (a sharded subscription names one slot).
    /// `sharded` selects SSUBSCRIBE on a cluster; one Redis always uses SUBSCRIBE.
    pub(crate) async fn subscribe(&mut self, channels: &[String], on: bool, sharded: bool) -> RedisResult<()> {
        match self {
            Self::Single { sink, .. } if on => sink.subscribe(channels).await,
            Self::Single { sink, .. } => sink.unsubscribe(channels).await,
            Self::Cluster { conn, .. } => {
                let calls = channels.iter().map(|c| {
                    let mut conn = conn.clone();
                    async move {
                        match (on, sharded) {
                            (true, true) => conn.ssubscribe(c).await,
                            (false, true) => conn.sunsubscribe(c).await,
                            (true, false) => conn.subscribe(c).await,
                            (false, false) => conn.unsubscribe(c).await,
                        }
                    }
                });
                try_join_all(calls).await.map(drop)
            }
        }
    }

    pub(crate) async fn ping(&mut self) -> RedisResult<()> {
        match self {
            Self::Single { sink, .. } => sink.ping::<Value>().await.map(drop),
            Self::Cluster { conn, .. } => Cmd::new().arg("PING").query_async::<Value>(conn).await.map(drop),
        }
    }

    /// The next push; `None` once the connection is gone.
    pub(crate) async fn next(&mut self) -> Option<Incoming> {
        match self {
            Self::Single { stream, .. } => {
                let msg = stream.next().await?;
                Some(Incoming::Message(msg.get_channel_name().to_owned(), msg.get_payload_bytes().to_vec()))
            }
            Self::Cluster { pushes, .. } => {
                let push = pushes.recv().await?;
                Some(match (push.kind, push.data.as_slice()) {
                    (PushKind::SMessage | PushKind::Message, [channel, Value::BulkString(payload)]) => {
                        let channel = match channel {
                            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                            _ => return Some(Incoming::Other),
                        };
                        Incoming::Message(channel, payload.clone())
                    }
                    (PushKind::SUnsubscribe, [Value::BulkString(channel), ..]) => {
                        Incoming::Unsubscribed(String::from_utf8_lossy(channel).into_owned())
                    }
                    (PushKind::Disconnection, _) => Incoming::NodeLost,
                    _ => Incoming::Other,
                })
            }
        }
    }
}
