//! The connection a node uses for Redis commands: one Redis (a reconnecting, multiplexed
//! connection) or a Redis Cluster (each command routed by its key's slot).
//!
//! Pipelines only work within one slot on a cluster, so batches of commands on different
//! keys go through [`Link::run_all`], which pipelines on one Redis and sends the commands
//! concurrently on a cluster.

use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};
use futures_util::future::try_join_all;

use super::BrokerError;
use crate::config::RedisConfig;

/// First reconnect delay of the single-Redis connection; it doubles up to `max_backoff`.
pub(super) const MIN_BACKOFF: Duration = Duration::from_millis(50);

/// A command connection to one Redis or a Redis Cluster; cheap to clone.
#[derive(Clone)]
pub(crate) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Link {
    /// Connects with `timeout` as the connect and response timeout. One Redis is connected
    /// lazily (the host starts while it is down); a cluster must answer now, to learn its
    /// slots.
    pub(crate) async fn connect(config: &RedisConfig, timeout: Duration) -> Result<Self, BrokerError> {
        if config.cluster {
            let client = ClusterClientBuilder::new(config.urls().collect::<Vec<_>>())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(2)
                .build()?;
            let conn = tokio::time::timeout(timeout * 3, client.get_async_connection())
                .await
                .map_err(|_| BrokerError::Timeout(timeout * 3))??;
            return Ok(Self::Cluster(conn));
        }
        let client = single_client(config)?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(MIN_BACKOFF)
            .set_max_delay(config.max_backoff);
        Ok(Self::Single(ConnectionManager::new_lazy_with_config(client, cfg)?))
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Runs every command, in order on one Redis; their replies in order.
    pub(crate) async fn run_all(&mut self, cmds: Vec<Cmd>) -> RedisResult<Vec<Value>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Self::Single(conn) => {
                let mut pipe = Pipeline::with_capacity(cmds.len());
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                pipe.query_async(conn).await
            }
            Self::Cluster(conn) => {
                let calls = cmds.into_iter().map(|cmd| {
                    let mut conn = conn.clone();
                    async move { cmd.query_async::<Value>(&mut conn).await }
                });
                try_join_all(calls).await
            }
        }
    }
}

/// A client for the first configured URL (one Redis).
fn single_client(config: &RedisConfig) -> Result<Client, BrokerError> {
    let url = config.urls().next().unwrap_or_default();
    Ok(Client::open(url)?)
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
