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
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
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
    /// Creates consumer group `group` on stream `key` (and the stream), starting at `start`
    /// (`0`: every entry; `$`: new ones); a group that exists already is left as it is.
    pub(crate) async fn create_group(&mut self, key: &str, group: &str, start: &str) -> RedisResult<()> {
        let mut create = ::redis::cmd("XGROUP");
        create.arg("CREATE").arg(key).arg(group).arg(start).arg("MKSTREAM");
        match create.query_async::<()>(self).await {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
            _ => Ok(()),
        }
    }

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
                .map_err(|_| BrokerError::from(super::timeout(timeout * 3)))??;
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

    /// Runs `cmd`, giving up after `timeout`.
    pub(crate) async fn query_within<T: ::redis::FromRedisValue>(
        &self,
        cmd: Cmd,
        timeout: Duration,
    ) -> Result<T, crate::backend::BackendError> {
        match tokio::time::timeout(timeout, cmd.query_async::<T>(&mut self.clone())).await {
            Ok(reply) => Ok(reply?),
            Err(_) => Err(super::timeout(timeout)),
        }
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

impl Link {
    /// Deletes every key matching `pattern` (SCAN, then UNLINK key by key) on one Redis or on
    /// every master of a cluster; returns how many it deleted. Keys created meanwhile may
    /// be missed.
    pub(crate) async fn unlink_matching(&mut self, pattern: &str) -> RedisResult<usize> {
        let nodes = match self {
            Self::Single(_) => vec![None],
            Self::Cluster(conn) => masters(conn).await?.into_iter().map(Some).collect(),
        };
        let mut deleted = 0;
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let mut scan = ::redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(500);
                let reply = match (&mut *self, &node) {
                    (Self::Cluster(conn), Some((host, port))) => {
                        let at = SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port };
                        conn.route_command(scan, RoutingInfo::SingleNode(at)).await?
                    }
                    (link, _) => scan.query_async::<Value>(link).await?,
                };
                let (next, keys): (u64, Vec<String>) = ::redis::from_redis_value(reply)?;
                deleted += keys.len();
                self.run_all(keys.iter().map(|k| ::redis::cmd("UNLINK").arg(k).clone()).collect()).await?;
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}

/// The masters of a cluster (`CLUSTER NODES`), as host and port.
async fn masters(conn: &mut ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
    let reply = conn
        .route_command(
            ::redis::cmd("CLUSTER").arg("NODES").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    let text: String = ::redis::from_redis_value(reply)?;
    let masters = text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(2)?;
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            return None;
        }
        let address = fields.get(1)?.split('@').next()?;
        let (host, port) = address.rsplit_once(':')?;
        Some((host.to_owned(), port.parse().ok()?))
    });
    Ok(masters.collect())
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
