//! Cluster mode over a Redis Cluster (three shards): sharded pub/sub between three hosts,
//! history and resume, publishing through the cluster, presence, and failovers while
//! publishing.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use notify_tests::{DEMO, RedisCluster, Req, Resuming, TestHost, eventually, publish_to, ready_hosts};
use serde_json::json;

/// Subscribers of a sharded channel, summed over the shards (only its owner has any).
async fn shard_subscribers(cluster: &RedisCluster, channel: &str) -> anyhow::Result<i64> {
    let mut total = 0;
    for i in 0..cluster.ports.len() {
        let mut node = cluster.node(i).await?;
        let (_, n): (String, i64) = redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel).query_async(&mut node).await?;
        total += n;
    }
    Ok(total)
}

#[tokio::test]
async fn three_nodes_over_a_redis_cluster() -> anyhow::Result<()> {
    let cluster = RedisCluster::start().await?;
    let toml = format!("{DEMO}\n{}", cluster.broker_toml());
    let mut hosts = Vec::new();
    for _ in 0..3 {
        let h = TestHost::start(&toml).await?;
        h.wait_ready(200).await?;
        hosts.push(h);
    }
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);

    let mut bob = b.connect_user("bob").await?;
    a.publish_ok(&json!({ "users": ["bob"], "event": "hello" })).await?;
    let hello = bob.next_event().await?;
    assert_eq!((hello["event"].as_str(), hello["offset"].as_u64()), (Some("hello"), Some(1)));

    // History lives in the slot of each stream's channel: another user resumes on another
    // node from what was appended and published there.
    let mut cy = a.connect_user("cy").await?;
    b.publish_ok(&json!({ "users": ["cy"], "event": "first" })).await?;
    let first = cy.next_event().await?;
    let epoch = first["epoch"].as_str().context("epoch")?.to_owned();
    drop(cy);
    for i in 0..3 {
        a.publish_ok(&json!({ "users": ["cy"], "event": "missed", "data": i })).await?;
    }
    let url = c.ws_url("demo", &format!("user=cy&user_since={epoch}:1"));
    let mut cy = notify_tests::Client::connect(&url, &[]).await?;
    let welcome = cy.next_json().await?;
    assert_eq!(welcome["streams"]["user"]["recovered"], true, "{welcome}");
    for i in 0..3u64 {
        let ev = cy.next_event().await?;
        assert_eq!((ev["data"].as_u64(), ev["offset"].as_u64()), (Some(i), Some(i + 2)));
    }

    let mut readers = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let mut client = h.connect_user(&format!("reader-{i}")).await?;
        assert_eq!(client.subscribe("news").await?["type"], "subscribed");
        readers.push(client);
    }
    c.publish_ok(&json!({ "channels": ["news"], "event": "headline" })).await?;
    for client in &mut readers {
        assert_eq!(client.next_event().await?["event"], "headline");
    }

    // Sharded subscriptions, by interest only.
    assert_eq!(shard_subscribers(&cluster, "notify:demo:u:bob").await?, 1);
    assert_eq!(shard_subscribers(&cluster, "notify:demo:c:news").await?, 3);
    assert_eq!(shard_subscribers(&cluster, "notify:demo:u:nobody").await?, 0);

    // Durable and fire-and-forget publishing through the cluster.
    let mut conn = cluster.conn().await?;
    let entry: String = redis::cmd("XADD")
        .arg("notify:demo:ingest")
        .arg("*")
        .arg("event")
        .arg(r#"{"users":["bob"],"event":"from-stream"}"#)
        .query_async(&mut conn)
        .await?;
    let ev = bob.next_event().await?;
    assert_eq!((ev["event"].clone(), ev["id"].clone()), (json!("from-stream"), json!(format!("s-{entry}"))));
    eventually(|| {
        let mut conn = conn.clone();
        async move {
            let (_, n): (String, i64) =
                redis::cmd("PUBSUB").arg("NUMSUB").arg("notify:demo:publish").query_async(&mut conn).await?;
            Ok(n >= 1)
        }
    })
    .await?;
    let _: i64 = redis::cmd("PUBLISH")
        .arg("notify:demo:publish")
        .arg(r#"{"users":["bob"],"event":"fire-and-forget"}"#)
        .query_async(&mut conn)
        .await?;
    assert_eq!(bob.next_event().await?["event"], "fire-and-forget");

    // Presence across nodes.
    let _bob_again = c.connect_user("bob").await?;
    eventually(|| async {
        let (status, body) = Req::get("/v1/presence/bob").key("demo-key").reply(a.addr).await?;
        anyhow::ensure!(status == 200, "presence: {status} {body}");
        Ok(body["connections"] == 2)
    })
    .await
    .context("bob's two connections")?;
    Ok(())
}

/// The control-plane state, its version and the plugin bytes share one hash slot, so the
/// replacing script runs on a Redis Cluster; announcements reach nodes on every shard.
#[tokio::test]
async fn tenants_and_plugins_are_managed_over_a_redis_cluster() -> anyhow::Result<()> {
    let cluster = RedisCluster::start().await?;
    let toml = format!("[server]\nadmin_token = \"admin-token-123\"\n{}", cluster.broker_toml());
    let [a, b] = notify_tests::ready_hosts(&toml).await?;
    let admin = Some("admin-token-123");

    let (status, created) = Req::post("/v1/admin/tenants")
        .auth(admin)
        .body(json!({ "id": "acme" }).to_string().into())
        .reply(a.addr)
        .await?;
    assert_eq!(status, 201, "{created}");
    let key = created["publish_key"].as_str().context("publish_key")?.to_owned();
    eventually(|| async {
        Ok(Req::get("/v1/admin/tenants/acme").auth(admin).body(Vec::new().into()).reply(b.addr).await?.0 == 200)
    })
    .await?;

    let headers = [("authorization", "Bearer admin-token-123"), ("notify-plugin-config", r#"{"stamp":"edge"}"#)];
    let wasm = notify_tests::plugin_bytes("redact");
    let (status, body) =
        Req::put("/v1/admin/tenants/acme/plugins/transform").headers(&headers).body(wasm.into()).reply(b.addr).await?;
    assert_eq!(status, 201, "{body}");

    let (mut alice, _) = b.join("acme", "user=alice").await?;
    // The plugin uploaded on B transforms on A.
    notify_tests::publish_until(a.addr, &key, "alice", &mut alice, &json!({ "edge": true })).await?;

    // Deleted: its history and presence keys leave every shard.
    let acme_keys = || async {
        let mut found = Vec::new();
        for i in 0..cluster.ports.len() {
            let all: Vec<String> = redis::cmd("KEYS").arg("*acme*").query_async(&mut cluster.node(i).await?).await?;
            found.extend(all);
        }
        Ok::<_, anyhow::Error>(found)
    };
    let before = acme_keys().await?;
    assert!(before.iter().any(|k| k.ends_with(":events")), "{before:?}");
    let (status, _) = Req::delete("/v1/admin/tenants/acme").auth(admin).body(Vec::new().into()).reply(a.addr).await?;
    assert_eq!(status, 204);
    eventually(|| async { Ok(acme_keys().await?.is_empty()) }).await?;
    Ok(())
}

/// Publishes `{"users":["bob"],"data":i}` for i = 0, 1, ... until `stop` (at least `min`,
/// at most 3,000), each with an idempotency key and retried until it is acknowledged (at most
/// 100 tries); returns the acknowledged `i`s.
async fn publish_to_bob(addr: SocketAddr, stop: Arc<AtomicBool>, min: u64) -> anyhow::Result<Vec<u64>> {
    let mut acked = Vec::new();
    for i in 0..3_000u64 {
        if i >= min && stop.load(Ordering::Relaxed) {
            break;
        }
        let body = json!({ "users": ["bob"], "event": "n", "data": i, "idempotency_key": format!("k{i}") });
        for _ in 0..100 {
            if let Ok((202, _)) = publish_to(addr, "demo-key", &body).await {
                acked.push(i);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(acked)
}

/// A replica is promoted over each shard's master in turn (a manual `CLUSTER FAILOVER`, as
/// in maintenance) while one node publishes: every event it acknowledged reaches the
/// subscriber on the other node, once, in order and without a gap in its stream, live or
/// by resume.
#[tokio::test]
async fn failovers_while_publishing_lose_nothing_acknowledged() -> anyhow::Result<()> {
    let cluster = RedisCluster::start_with_replicas(1).await?;
    // Bob reads after the publishing: his history must hold all of it.
    let demo = "[tenants.demo]\npublish_key = \"demo-key\"\nauth = { mode = \"insecure\" }\nhistory = { size = 5000 }";
    let toml = format!("{demo}\n{}", cluster.broker_toml());
    let [a, b] = ready_hosts::<2>(&toml).await?;
    let mut bob = Resuming::connect(b.addr, "bob").await?;
    a.publish_ok(&json!({ "users": ["bob"], "event": "first" })).await?;
    let first = bob.next_event().await?;
    let (epoch, mut offset) = (first["epoch"].clone(), first["offset"].as_u64().context("offset")?);

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn(publish_to_bob(a.addr, stop.clone(), 200));
    let pairs = cluster.replicas().await?;
    assert_eq!(pairs.len(), 3);
    for (_, replica) in pairs {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.failover(replica).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = publisher.await??;
    assert!(acked.len() >= 200, "only {} acknowledged", acked.len());

    let mut seen = BTreeSet::new();
    while !acked.iter().all(|i| seen.contains(i)) {
        let ev = bob.next_event().await.with_context(|| format!("{} of {} seen", seen.len(), acked.len()))?;
        offset += 1;
        assert_eq!((&ev["epoch"], ev["offset"].as_u64()), (&epoch, Some(offset)), "no gap: {ev}");
        let i = ev["data"].as_u64().context("data")?;
        assert!(seen.insert(i), "delivered twice: {ev}");
    }
    Ok(())
}
