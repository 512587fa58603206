//! Upgrading a node in place (`server.handoff_socket`): a second process takes the
//! listening socket over from the first, which then drains. Through the whole upgrade a
//! client connecting in a loop is never refused, every publish is accepted (a draining node's
//! 503 retried with the same idempotency key), and a resuming client's stream has no gap.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context as _, bail};
use notify_tests::{DEMO, HostProcess, RedisServer, Req, Resuming, TempDir, host_bin, publish_to};
use serde_json::json;

/// Bounds every loop of the test: the upgrade takes seconds.
const DEADLINE: Duration = Duration::from_secs(60);

/// Connects, asks `/healthz` and closes, over and over until `stop`; returns how many
/// connects were answered. Any refused or unanswered connect is an error.
async fn connect_loop(addr: SocketAddr, stop: Arc<AtomicBool>) -> anyhow::Result<u64> {
    let mut answered = 0;
    while !stop.load(Relaxed) && answered < 1_000_000 {
        let (status, body) = Req::get("/healthz")
            .reply(addr)
            .await
            .with_context(|| format!("connect {} refused or unanswered", answered + 1))?;
        anyhow::ensure!(status == 200, "connect {} answered {status}: {body}", answered + 1);
        answered += 1;
    }
    Ok(answered)
}

/// Publishes event `seq` number 0, 1, ... to user `u` until `stop`, then an `end` event;
/// returns how many `seq` events were published. A 503 (a draining node) is retried with
/// the same idempotency key; a refused connect is an error.
async fn publish_loop(addr: SocketAddr, stop: Arc<AtomicBool>) -> anyhow::Result<u64> {
    let mut published = 0;
    while published < 100_000 {
        let ending = stop.load(Relaxed);
        let (event, key) = if ending { ("end", "end".to_owned()) } else { ("seq", format!("seq-{published}")) };
        let body = json!({ "users": ["u"], "event": event, "data": published, "idempotency_key": key });
        match publish_to(addr, "demo-key", &body).await {
            Ok((202, _)) if ending => return Ok(published),
            Ok((202, _)) => published += 1,
            Ok((503, _)) => {}
            Ok((status, body)) => bail!("publish {published} answered {status}: {body}"),
            Err(e) => return Err(e.context(format!("publish {published}: connect refused"))),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("the publisher never stopped")
}

/// Reads `u`'s events until `end`, checking they are 0, 1, 2, ... without a gap.
async fn read_all(mut client: Resuming) -> anyhow::Result<(u64, Resuming)> {
    let mut next = 0;
    loop {
        let ev = client.next_event().await?;
        if ev["event"] == "end" {
            return Ok((next, client));
        }
        let seq = ev["data"].as_u64().context("data")?;
        anyhow::ensure!(seq == next, "event {seq} after {}: a gap or a repeat", next as i64 - 1);
        next += 1;
    }
}

#[tokio::test]
async fn a_successor_takes_the_listener_over_without_a_refused_connect() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let dir = TempDir::new("handoff")?;
    let socket = dir.path.join("handoff.sock");
    // A stale socket file, as a node killed with SIGKILL leaves: nobody answers on it.
    drop(std::os::unix::net::UnixListener::bind(&socket)?);
    let toml = format!(
        "[server]\nhandoff_socket = \"{}\"\n[connections]\nreconnect_spread = \"300ms\"\n{}\n{DEMO}",
        socket.display(),
        redis.broker_toml()
    );
    let mut old = HostProcess::start(host_bin!(), &toml).await?;
    let addr = old.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_all(Resuming::connect(addr, "u").await?));
    let connects = tokio::spawn(connect_loop(addr, stop.clone()));
    let publisher = tokio::spawn(publish_loop(addr, stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let new = HostProcess::start(host_bin!(), &toml).await?;
    assert_eq!(new.addr, addr, "the successor serves the same socket");
    let exited = tokio::time::timeout(DEADLINE, old.child.wait()).await.context("the old node never exited")??;
    assert!(exited.success(), "the old node exited with {exited}");
    assert!(old.log.lock().unwrap().contains("a successor accepts on the listener"));
    assert!(new.log.lock().unwrap().contains("took over the listener"));
    // Keep going on the new node alone for a while, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Relaxed);

    let answered = tokio::time::timeout(DEADLINE, connects).await???;
    let published = tokio::time::timeout(DEADLINE, publisher).await???;
    let (received, client) = tokio::time::timeout(DEADLINE, reader).await???;
    println!("{answered} connects answered, {published} events published, {} reconnects", client.reconnects);
    assert!(answered > 10 && published > 10, "{answered} connects, {published} publishes");
    assert_eq!(received, published, "every published event arrived once, in order");
    assert!(client.reconnects >= 1, "the client moved to the new node");
    assert!(client.recovered.iter().all(|r| *r), "every resume recovered: {:?}", client.recovered);
    Ok(())
}
