//! A private `redis-server` per test, on a free loopback port, with an append-only file
//! fsynced on every write so a killed and restarted server keeps every acknowledged write.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::{STEP, TempDir};

/// A `redis-server` process this test owns.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = Self { port, child: None, dir: TempDir::new("redis")? };
        server.spawn().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A `[broker]` table for hosts sharing this server, with short test timings.
    pub fn broker_toml(&self) -> String {
        format!(
            "[broker]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"1s\"\nmax_backoff = \"200ms\"\nclaim_idle = \"1s\"\nunsubscribe_delay = \"1s\"\npresence_debounce = \"300ms\"\nnode_timeout = \"2s\"\n",
            self.url()
        )
    }

    pub async fn conn(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url())?;
        Ok(client.get_multiplexed_async_connection().await?)
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
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            if let Ok(mut conn) = self.conn().await
                && redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("redis-server on port {} did not answer", self.port);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.signal("CONT");
        let _ = self.kill();
    }
}
