//! Rolling restart without loss: three host processes over one Redis; 5,000 sequenced events
//! go to 200 users while each node in turn is stopped (SIGTERM: drain, close with 1001) and
//! started again. Clients reconnect to another node with their last position; every user
//! ends with every event addressed to it exactly once, in order, after de-duplication by
//! offset.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use notify_tests::{Client, DEMO, HostProcess, RedisServer, Req, host_bin};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const USERS: u64 = 200;
const EVENTS: u64 = 5_000;
const BATCH: u64 = 25;
/// Bounds the whole run (it takes seconds; this only guards against a hang).
const DEADLINE: Duration = Duration::from_secs(180);

type Nodes = Arc<Mutex<Vec<SocketAddr>>>;

/// Event `i` goes to three users, so each user gets 75 events from all over the sequence.
fn addressed(i: u64) -> [u64; 3] {
    [i % USERS, (i + 67) % USERS, (i + 134) % USERS]
}

fn node(nodes: &Nodes, i: usize) -> SocketAddr {
    let nodes = nodes.lock().unwrap();
    nodes[i % nodes.len()]
}

/// What one user's client saw.
#[derive(Default)]
struct Seen {
    /// `data` (the sequence number) of each event, in arrival order, duplicates removed.
    seqs: Vec<u64>,
    duplicates: u64,
    reconnects: u64,
}

/// Follows `user` across nodes until it has `want` events, resuming after every close.
async fn follow(user: u64, nodes: Nodes, want: usize, ready: tokio::sync::mpsc::Sender<()>) -> anyhow::Result<Seen> {
    let mut seen = Seen::default();
    let mut last: Option<(String, u64)> = None;
    // Users start spread over the nodes; after a close, the next node is tried first.
    let mut at = user as usize;
    let mut ready = Some(ready);
    while seen.seqs.len() < want {
        let mut query = format!("user=u{user}");
        if let Some((epoch, offset)) = &last {
            query.push_str(&format!("&user_since={epoch}:{offset}"));
        }
        let url = format!("ws://{}/v1/ws/demo?{query}", node(&nodes, at));
        let mut client = match Client::try_connect(&url, &[]).await {
            Ok(Ok(c)) => c,
            // Stopped, draining or still starting: try the next node.
            _ => {
                at += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let welcome = client.next_json().await?;
        let stream = &welcome["streams"]["user"];
        if last.is_some() {
            anyhow::ensure!(stream["recovered"] == true, "u{user} could not resume: {welcome}");
            seen.reconnects += 1;
        } else {
            last = Some((stream["epoch"].as_str().context("epoch")?.to_owned(), 0));
        }
        if let Some(ready) = ready.take() {
            ready.send(()).await?;
        }
        let mut wait = Duration::ZERO;
        while let Some(msg) = client.ws.next().await {
            let Ok(Message::Text(text)) = msg else { break };
            let ev: Value = serde_json::from_str(&text)?;
            if ev["type"] == "reconnect" {
                // A draining node spreads its clients' reconnects, as a client should honour.
                wait = Duration::from_millis(ev["retry_after_ms"].as_u64().context("retry_after_ms")?);
            }
            if ev["type"] != "event" {
                continue;
            }
            let (epoch, offset) = (ev["epoch"].as_str().context("epoch")?, ev["offset"].as_u64().context("offset")?);
            let (last_epoch, last_offset) = last.as_mut().context("position")?;
            // A stream that never held an event was welcomed with offset 0 of a look epoch;
            // its own epoch starts with its first event.
            if *last_offset == 0 && offset == 1 {
                epoch.clone_into(last_epoch);
            }
            anyhow::ensure!(epoch == last_epoch, "u{user}: epoch changed from {last_epoch} to {epoch}");
            if offset <= *last_offset {
                seen.duplicates += 1;
                continue;
            }
            anyhow::ensure!(offset == *last_offset + 1, "u{user}: offset {offset} after {last_offset}: a gap");
            *last_offset = offset;
            seen.seqs.push(ev["data"].as_u64().context("data")?);
            if seen.seqs.len() == want {
                break;
            }
        }
        tokio::time::sleep(wait).await;
        at += 1;
    }
    Ok(seen)
}

/// Publishes one batch through any node that takes it.
async fn publish(nodes: &Nodes, batch: &Value, start: &mut usize) -> anyhow::Result<()> {
    for _ in 0..2_000 {
        let addr = node(nodes, *start);
        match Req::post("/v1/publish/batch").key("demo-key").body(batch.to_string().into()).reply(addr).await {
            Ok((202, _)) => return Ok(()),
            // Draining (503) or stopped (no connection): nothing was accepted; next node.
            Ok((503, _)) | Err(_) => {
                *start += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok((status, body)) => bail!("publish refused with {status}: {body}"),
        }
    }
    bail!("no node accepted a publish")
}

/// Stops node `i` gracefully and starts a new process in its place.
async fn restart(
    nodes: Nodes,
    mut hosts: Vec<HostProcess>,
    i: usize,
    toml: String,
) -> anyhow::Result<Vec<HostProcess>> {
    hosts[i].signal("TERM")?;
    let status = tokio::time::timeout(Duration::from_secs(30), hosts[i].child.wait()).await??;
    anyhow::ensure!(status.success(), "node {i} exited with {status}");
    let fresh = HostProcess::start(host_bin!(), &toml).await?;
    notify_tests::eventually(|| async { Ok(Req::get("/readyz").reply(fresh.addr).await?.0 == 200) }).await?;
    nodes.lock().unwrap()[i] = fresh.addr;
    hosts[i] = fresh;
    Ok(hosts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_gets_every_event_exactly_once_across_a_rolling_restart() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = format!("{DEMO}\n{}", redis.broker_toml());
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(HostProcess::start(host_bin!(), &toml).await?);
    }
    let nodes: Nodes = Arc::new(Mutex::new(hosts.iter().map(|h| h.addr).collect()));
    for addr in hosts.iter().map(|h| h.addr) {
        notify_tests::eventually(|| async { Ok(Req::get("/readyz").reply(addr).await?.0 == 200) }).await?;
    }

    let mut expected = vec![Vec::new(); USERS as usize];
    for i in 0..EVENTS {
        for u in addressed(i) {
            expected[u as usize].push(i);
        }
    }
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(USERS as usize);
    let followers: Vec<_> = (0..USERS)
        .map(|u| tokio::spawn(follow(u, nodes.clone(), expected[u as usize].len(), ready_tx.clone())))
        .collect();
    for _ in 0..USERS {
        ready_rx.recv().await.context("a follower failed to connect")?;
    }

    let run = async {
        let mut start = 0;
        let mut restarting = None;
        let mut hosts = Some(hosts);
        for b in 0..EVENTS / BATCH {
            let batch: Vec<Value> = (b * BATCH..(b + 1) * BATCH)
                .map(|i| json!({ "users": addressed(i).map(|u| format!("u{u}")), "event": "seq", "data": i }))
                .collect();
            publish(&nodes, &json!(batch), &mut start).await?;
            // Restart node 0, 1 and 2 in turn, a quarter of the way apart, while publishing goes on.
            let quarter = EVENTS / BATCH / 4;
            if b > 0 && b % quarter == 0 && b / quarter <= 3 {
                if let Some(task) = restarting.take() {
                    hosts = Some(task.await??);
                }
                let i = (b / quarter - 1) as usize;
                let task = tokio::spawn(restart(nodes.clone(), hosts.take().context("hosts")?, i, toml.clone()));
                restarting = Some(task);
            }
        }
        if let Some(task) = restarting.take() {
            hosts = Some(task.await??);
        }
        let mut totals = (0, 0);
        for (u, f) in followers.into_iter().enumerate() {
            let seen = f.await??;
            assert_eq!(seen.seqs, expected[u], "user u{u} did not get exactly its events in order");
            totals.0 += seen.duplicates;
            totals.1 += seen.reconnects;
        }
        // Every node was restarted under its clients, so clients did reconnect and resume.
        assert!(totals.1 >= USERS, "only {} reconnects", totals.1);
        eprintln!("rolling restart: {} reconnects, {} duplicates dropped by offset", totals.1, totals.0);
        drop(hosts);
        anyhow::Ok(())
    };
    tokio::time::timeout(DEADLINE, run).await.context("rolling restart did not finish")?
}

/// A node killed outright (SIGKILL: no drain, no close frames) while events keep coming
/// through another node: its clients reconnect there with their positions and miss nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_node_resume_elsewhere_without_loss() -> anyhow::Result<()> {
    const KILL_USERS: u64 = 50;
    const KILL_EVENTS: u64 = 1_000;
    let redis = RedisServer::start().await?;
    let toml = format!("{DEMO}\n{}", redis.broker_toml());
    let doomed = HostProcess::start(host_bin!(), &toml).await?;
    let survivor = HostProcess::start(host_bin!(), &toml).await?;
    for addr in [doomed.addr, survivor.addr] {
        notify_tests::eventually(|| async { Ok(Req::get("/readyz").reply(addr).await?.0 == 200) }).await?;
    }
    // Every client starts on the doomed node (index 0); the next one it tries is the survivor.
    let nodes: Nodes = Arc::new(Mutex::new(vec![doomed.addr, survivor.addr]));
    let publish_to: Nodes = Arc::new(Mutex::new(vec![survivor.addr]));
    let expected: Vec<u64> = (0..KILL_EVENTS).collect();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(KILL_USERS as usize);
    let followers: Vec<_> = (0..KILL_USERS)
        .map(|u| {
            let nodes = nodes.clone();
            let ready = ready_tx.clone();
            tokio::spawn(async move { follow(u * 2, nodes, KILL_EVENTS as usize, ready).await })
        })
        .collect();
    for _ in 0..KILL_USERS {
        ready_rx.recv().await.context("a follower failed to connect")?;
    }
    let run = async {
        let mut start = 0;
        let users: Vec<String> = (0..KILL_USERS).map(|u| format!("u{}", u * 2)).collect();
        for b in 0..KILL_EVENTS / BATCH {
            let batch: Vec<Value> =
                (b * BATCH..(b + 1) * BATCH).map(|i| json!({ "users": users, "event": "seq", "data": i })).collect();
            publish(&publish_to, &json!(batch), &mut start).await?;
            if b == KILL_EVENTS / BATCH / 3 {
                doomed.signal("KILL")?;
            }
        }
        let mut reconnects = 0;
        for (u, f) in followers.into_iter().enumerate() {
            let seen = f.await??;
            assert_eq!(seen.seqs, expected, "user u{} did not get exactly its events in order", u * 2);
            reconnects += seen.reconnects;
        }
        assert_eq!(reconnects, KILL_USERS, "each client moves once, to the survivor");
        anyhow::Ok(())
    };
    tokio::time::timeout(DEADLINE, run).await.context("the run did not finish")?
}
