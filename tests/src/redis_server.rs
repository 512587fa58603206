//! A private `redis-server` (or a three-shard Redis Cluster, with replicas if asked) per test, on a free loopback port, with an append-only file
//! fsynced on every write so a killed and restarted server keeps every acknowledged write.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::{STEP, TempDir};

/// Redis gives up a manual failover after 5 s; a little more, then it is asked again.
const MANUAL_FAILOVER_TIMEOUT: Duration = Duration::from_secs(6);
/// Manual failovers asked of one replica before a test gives up.
const FAILOVER_ATTEMPTS: u32 = 3;
/// How long a new cluster's roles may take to reach every node by gossip.
const GOSSIP: Duration = Duration::from_secs(60);

/// Whether the node behind `conn` is a master now.
async fn is_master(mut conn: redis::aio::MultiplexedConnection) -> anyhow::Result<bool> {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
    Ok(matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master"))
}

/// A `redis-server` process this test owns.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    pub async fn start() -> anyhow::Result<Self> {
        let mut server = Self { port: 0, child: None, dir: TempDir::new("redis")? };
        // A free port can be taken by another test between our probe and the server's bind;
        // then the server exits and we try another port.
        for _ in 0..5 {
            server.port = free_port()?;
            if server.spawn().await.is_ok() {
                return Ok(server);
            }
            server.kill()?;
        }
        anyhow::bail!("could not start redis-server on a free port")
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A `[broker]` table for hosts sharing this server, with short test timings.
    pub fn broker_toml(&self) -> String {
        format!(
            "[broker]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"2s\"\nmax_backoff = \"200ms\"\nclaim_idle = \"1s\"\nunsubscribe_delay = \"1s\"\npresence_debounce = \"300ms\"\nnode_timeout = \"3s\"\n",
            self.url()
        )
    }

    pub async fn conn(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        node_conn(self.port).await
    }

    /// Kills the server with SIGKILL (no shutdown save) and waits for it to exit.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Sends `signal` ("STOP", "CONT") to the server: a stopped server keeps its sockets open
    /// and answers nothing, like an unreachable one.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.as_ref().context("server not running")?.id();
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// Starts the server again on the same port and data directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.spawn().await
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&self.dir.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (is it installed?)")?;
        let pid = child.id();
        self.child = Some(child);
        wait_own_server(self.port, pid).await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.signal("CONT");
        let _ = self.kill();
    }
}

/// A private three-shard Redis Cluster (three primaries, no replicas) on free ports.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    _dir: TempDir,
}

impl RedisCluster {
    /// Three shards, no replicas.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_replicas(0).await
    }

    /// Three shards with `replicas` replicas each, all in sync before this returns.
    pub async fn start_with_replicas(replicas: usize) -> anyhow::Result<Self> {
        let dir = TempDir::new("redis-cluster")?;
        let mut cluster = Self { ports: Vec::new(), children: Vec::new(), _dir: dir };
        for i in 0..3 * (1 + replicas) {
            let node_dir = cluster._dir.path.join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let mut started = false;
            for _ in 0..5 {
                let port = free_cluster_port()?;
                let mut child = Command::new("redis-server")
                    .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
                    .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--dir"])
                    .arg(&node_dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting redis-server")?;
                if wait_own_server(port, child.id()).await.is_ok() {
                    cluster.ports.push(port);
                    cluster.children.push(child);
                    started = true;
                    break;
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            anyhow::ensure!(started, "could not start a cluster node on a free port");
        }
        let nodes: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running redis-cli --cluster create")?;
        anyhow::ensure!(status.success(), "redis-cli --cluster create failed");
        let deadline = tokio::time::Instant::now() + STEP;
        for &port in &cluster.ports {
            loop {
                let mut conn = node_conn(port).await?;
                let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await?;
                if info.contains("cluster_state:ok") {
                    break;
                }
                anyhow::ensure!(tokio::time::Instant::now() < deadline, "cluster never became ok");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Roles reach every node by gossip, after the slots: on a loaded machine that can
        // take longer than a test step (a set-up wait, not a figure under test).
        let joined = || async { Ok(cluster.replicas().await?.len() == 3 * replicas) };
        crate::eventually_within(GOSSIP, joined).await.context("the replicas never joined")?;
        for (_, replica) in cluster.replicas().await? {
            cluster.wait_synced(replica).await?;
        }
        Ok(cluster)
    }

    /// `(master, replica)` ports, one pair per replica, as the cluster now sees its roles.
    pub async fn replicas(&self) -> anyhow::Result<Vec<(u16, u16)>> {
        let mut conn = node_conn(self.ports[0]).await?;
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await?;
        // Each line: id host:port@bus flags master-id ...
        let rows: Vec<Vec<&str>> = nodes.lines().map(|l| l.split(' ').collect()).collect();
        let port = |row: &[&str]| -> anyhow::Result<u16> {
            let addr = row[1].split('@').next().context("address")?;
            Ok(addr.rsplit(':').next().context("port")?.parse()?)
        };
        let mut pairs = Vec::new();
        for replica in rows.iter().filter(|r| r.len() > 3 && r[2].contains("slave")) {
            let master = rows.iter().find(|r| r[0] == replica[3]).context("a replica's master")?;
            pairs.push((port(master)?, port(replica)?));
        }
        Ok(pairs)
    }

    /// Promotes `replica` over its master with a manual `CLUSTER FAILOVER` (the replica
    /// catches up with its master first, as in a maintenance switchover), and waits until
    /// every node agrees. Redis abandons a manual failover that has not finished within
    /// 5 s (its masters' votes can come late on a loaded machine); it is then asked again,
    /// up to [`FAILOVER_ATTEMPTS`] times.
    pub async fn failover(&self, replica: u16) -> anyhow::Result<()> {
        self.wait_synced(replica).await?;
        let mut conn = node_conn(replica).await?;
        for _ in 0..FAILOVER_ATTEMPTS {
            let _: () = redis::cmd("CLUSTER").arg("FAILOVER").query_async(&mut conn).await?;
            if crate::eventually_within(MANUAL_FAILOVER_TIMEOUT, || is_master(conn.clone())).await.is_ok() {
                let agreed = || async { Ok(self.replicas().await?.iter().all(|(_, r)| *r != replica)) };
                return crate::eventually(agreed)
                    .await
                    .with_context(|| format!("not every node sees {replica} promoted"));
            }
        }
        anyhow::bail!("replica {replica} was not promoted by {FAILOVER_ATTEMPTS} manual failovers")
    }

    async fn wait_synced(&self, replica: u16) -> anyhow::Result<()> {
        let conn = node_conn(replica).await?;
        let synced = || {
            let mut conn = conn.clone();
            async move {
                let info: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await?;
                Ok(info.lines().any(|l| l.trim() == "master_link_status:up"))
            }
        };
        crate::eventually(synced).await.with_context(|| format!("replica {replica} never synced"))
    }

    /// A `[broker]` table for hosts sharing this cluster, with short test timings.
    pub fn broker_toml(&self) -> String {
        let urls: Vec<String> = self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect();
        format!(
            "[broker]\nkind = \"redis\"\ncluster = true\nurl = \"{}\"\ntimeout = \"2s\"\nmax_backoff = \"200ms\"\nclaim_idle = \"1s\"\nunsubscribe_delay = \"1s\"\npresence_debounce = \"300ms\"\nnode_timeout = \"3s\"\n",
            urls.join(",")
        )
    }

    /// A cluster-aware connection (commands routed by slot).
    pub async fn conn(&self) -> anyhow::Result<redis::cluster_async::ClusterConnection> {
        let urls: Vec<String> = self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect();
        let client = redis::cluster::ClusterClient::builder(urls).response_timeout(STEP).build()?;
        Ok(client.get_async_connection().await?)
    }

    /// A plain connection to one node of the cluster.
    pub async fn node(&self, i: usize) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        node_conn(self.ports[i]).await
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn node_conn(port: u16) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    // The default response timeout (500 ms) is too short for a machine busy with tests.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(STEP));
    Ok(client.get_multiplexed_async_connection_with_config(&config).await?)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free port for a cluster node, which also listens on its port + 10000 (so at most 55535).
fn free_cluster_port() -> anyhow::Result<u16> {
    for _ in 0..1000 {
        let port = free_port()?;
        if port <= 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port pair for a cluster node")
}

/// Waits until the server with process id `pid` answers on `port` (not another test's).
async fn wait_own_server(port: u16, pid: u32) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STEP;
    let own = format!("process_id:{pid}");
    loop {
        if let Ok(mut conn) = node_conn(port).await
            && let Ok(info) = redis::cmd("INFO").arg("server").query_async::<String>(&mut conn).await
        {
            anyhow::ensure!(info.lines().any(|l| l.trim() == own), "port {port} is another redis-server's");
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "redis-server on port {port} did not answer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
